"""Task workers: the per-task work of a meta-iteration, behind one seam.

A meta-iteration's tasks are independent until the outer step combines them: each task's
sampling, advantages, baseline fits and inner steps, and its share of the surrogate gradient,
of every Fisher-vector product and of the line search's losses and KLs, depend on that task's
data alone. A `TaskWorker` does that work for a shard of the meta-batch (whole task chunks,
see `shard_chunks`); a worker set answers the same few calls for all shards at once:

    workers.sample(theta, iteration, carry)    -> Round (per-task returns, times, carry)
    workers.gradient(p)                        -> (gradient, loss) of the surrogate at p
    workers.fisher_product(v)                  -> H v, the meta-KL's Hessian at theta
    workers.loss_kl(p)                         -> (surrogate, mean KL) at a candidate p
    workers.kl_gradient(p)                     -> the mean KL's gradient at p
    workers.adapted()                          -> every task's adapted parameters (Reptile)
    workers.curves(theta, tasks, ...)          -> returns after 0..K adaptation steps

The driver (train.meta_iteration) holds the parameters and runs the conjugate gradient and
the line search on these sums. `InProcessWorkers` is one process (one shard: the local run, or
several shards in turn); `metarobot.cluster.RayWorkers` is one Ray actor per shard, and
`metarobot.cluster.make_workers` picks the set a configuration asks for.

Exactness: every call returns one value per task chunk, and the driver sums them in the
meta-batch's chunk order with the same weights whatever the sharding; a shard's simulations
draw from the random streams they have in the whole batch (BatchSim's first_stream); each
task's advantages, baseline and inner steps are computed on its own data. A run with any
number of workers therefore gives the local run's results bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import device as device_module
from . import meta, ppo, trpo
from .adaptation import Curve, adaptation_curve, sample_and_adapt
from .batch import BatchSim
from .config import PPO_STREAM, TRAIN_STREAM, TrainConfig, make_policy, stream_seed
from .executors import ChunkExecutors, cpu_count
from .families import Task, TaskFamily, make_family
from .policy import GaussianMLPPolicy
from .samples import subsample, task_slice
from .sharding import Chunk, chunk_bounds, shard_chunks


@dataclasses.dataclass
class Round:
    """What a sampling round of the meta-batch (or a shard of it) measured.

    pre_returns, post_returns: (M,) float64 mean undiscounted return per task before and after
    adaptation (the same values for trpo, which does not adapt in training); times: seconds
    per phase (sampling, returns, inner, and outer: the outer step's set-up; the slowest
    shard's for several); carry: the baseline coefficients carried to the next iteration
    ('previous')."""

    pre_returns: torch.Tensor
    post_returns: torch.Tensor
    times: Dict[str, float]
    carry: Optional[np.ndarray] = None


class TaskWorker:
    """The per-task work of chunks of the meta-batch (a shard), for one iteration at a time.

    config: the run's TrainConfig; chunks: the shard's task chunks, contiguous, in meta-batch
    order (None: a worker that only evaluates, see curves); family, policy: built from config
    when not given. Calls after sample() refer to the iteration sampled last; each returns a
    list with one value per chunk, unweighted."""

    def __init__(self, config: TrainConfig, chunks: Optional[Sequence[Chunk]],
                 family: Optional[TaskFamily] = None,
                 policy: Optional[GaussianMLPPolicy] = None, threads: Optional[int] = None):
        self.config = config
        self.chunks = [tuple(c) for c in chunks or ()]
        self.lo, self.hi = (self.chunks[0][0], self.chunks[-1][1]) if self.chunks else (0, 0)
        self.family = family or make_family(config.family, **config.family_overrides)
        self.policy = policy or make_policy(config, self.family)
        self.spec = meta.PolicySpec(self.policy.nlayers, self.policy.activation)
        self.threads = config.threads if threads is None else threads
        self.device = device_module.resolve(config.device)
        # the chunks of the outer step's calls, side by side (one per CPU unless set)
        self.executors = ChunkExecutors(self.threads or cpu_count())
        # the learner's chunks: side by side on the CPU; on a GPU one after the other in the
        # caller, so that their kernels queue on the caller's stream (which a CUDA graph
        # captures; an executor thread would launch on its own default stream) and the GPU,
        # not the host threads, runs them in parallel
        self.learner_map = (self.executors.map if self.device.type == "cpu"
                            else lambda fn, items: [fn(x) for x in items])
        self._round: Optional[Dict[str, Any]] = None

    # -------------------------------------------------------------------- the sampling round

    def sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
               report: Optional[Callable[[str], None]] = None) -> Round:
        """Samples the shard's tasks of `iteration` with theta (the policy's parameters and
        Meta-SGD's step sizes if learned, on the config's device), adapts, samples the
        adapted policies, and keeps what the outer step's calls need (trpo: samples once,
        with theta, and keeps that batch). carry: the baseline carry into the shard's first
        task ('previous')."""
        # whoever calls (the driver, a Ray actor on whichever thread Ray runs the call): the
        # same bits
        with device_module.single_threaded():
            return self._sample(theta, iteration, carry, report)

    def _sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray],
                report: Optional[Callable[[str], None]]) -> Round:
        """TaskWorker.sample's work, on one thread per chunk."""
        say = report or (lambda text: None)
        if not self.chunks:
            raise RuntimeError("this worker holds no tasks of the meta-batch")
        config = self.config
        policy_theta, learned = meta.split_step_sizes(theta)
        lr: Any = config.inner_lr if learned is None else {k: v.detach()
                                                           for k, v in learned.items()}
        tasks = self.family.sample_tasks(config.meta_batch_size,
                                         stream_seed(config.seed, TRAIN_STREAM, iteration, 0))
        tasks = tasks[self.lo:self.hi]
        k = config.trajectories
        say(f"building {len(tasks) * k} simulations")
        sim = BatchSim(self.family, tasks, k,
                       seed=stream_seed(config.seed, TRAIN_STREAM, iteration, 1),
                       num_threads=self.threads, first_stream=self.lo * k)
        # the adapted policies' own samples (the last batch) are the outer step's data (for
        # Reptile, the log's); trpo takes no steps, so its one batch, sampled with theta, is
        # both the pre-update batch and the outer step's data
        steps = config.train_inner_steps
        value_fn = None
        if config.algo == "ppo":  # advantages from its value function, not the baseline
            def value_fn(traj: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
                inputs, final = ppo.critic_features(traj, self.family)
                device = next(iter(theta.values())).device
                with torch.no_grad():
                    values, finals = (ppo.value(theta, torch.from_numpy(x).to(device),
                                                self.spec).cpu().numpy()
                                      for x in (inputs, final))
                return values, finals, inputs
        result = sample_and_adapt(
            sim, self.policy, policy_theta, len(tasks), steps,
            [lr] * steps, update=config.inner_rule, gamma=config.gamma,
            gae_lambda=config.gae_lambda, baseline_fit=config.baseline_fit,
            device=self.device, carry=carry, objective=config.inner_objective,
            keep_batches=True, chunks=[(lo - self.lo, hi - self.lo) for lo, hi in self.chunks],
            run=self.executors.map, report=say, value_fn=value_fn)
        batches, post = result.batches[:-1], result.batches[-1]
        times = dict(result.times)
        self._round = {"theta": theta, "batches": batches, "post": post,
                       "adapted": result.adapted, "iteration": iteration}
        t0 = time.perf_counter()
        if config.algo == "ppo":
            self._ppo_parts()
        elif config.algo != "reptile":
            self._outer_parts(theta)
        times["outer"] = time.perf_counter() - t0  # the outer step's set-up on this shard
        return Round(result.batches[0].returns, post.returns, times, result.carry)

    def _outer_parts(self, theta: meta.Params) -> None:
        """The per-chunk functions of the outer step (the same for every call), each chunk's
        built on an executor."""
        config, spec = self.config, self.spec
        r = self._round
        # trpo is the first-order case with no adaptation: every task's "adapted" policy is
        # theta, the surrogate and KL are the batch's own, and the Fisher product the plain
        # one (J = I)
        first_order = config.algo != "maml-trpo"
        batches, post, adapted = r["batches"], r["post"], r["adapted"]
        theta_sorted = {n: theta[n] for n in sorted(theta)}

        def step_size(p: meta.Params) -> Any:
            learned = meta.split_step_sizes(p)[1]
            return config.inner_lr if learned is None else learned

        def build(chunk: Chunk) -> Dict[str, Any]:
            a, b = chunk[0] - self.lo, chunk[1] - self.lo  # the chunk's tasks in the shard
            part_batches = [task_slice(x, a, b) for x in batches]
            part_phi = {k: v[a:b] for k, v in adapted.items()}
            # the sampling (adapted) policies' log-probabilities and means: the surrogate's
            # and the KL's constants
            part_post = meta.record_old(spec, part_phi, task_slice(post, a, b))

            def adapted_at(p: meta.Params) -> meta.Params:  # the chunk's phi(p)
                return meta.adapt(spec, meta.split_step_sizes(p)[0], part_batches,
                                  step_size(p), first_order, config.inner_objective,
                                  ntask=b - a)

            def loss(p: meta.Params) -> torch.Tensor:
                return meta.surrogate(spec, adapted_at(p), part_post)

            def loss_kl(p: meta.Params) -> Tuple[torch.Tensor, torch.Tensor]:
                phi = adapted_at(p)
                return meta.surrogate(spec, phi, part_post), meta.mean_kl(spec, phi, part_post)

            product = None
            if config.hessian != "finite-difference":
                fraction = config.fisher_fraction
                product = trpo.maml_fisher_product(
                    spec, theta_sorted, [subsample(x, fraction) for x in part_batches],
                    config.inner_lr, subsample(part_post, fraction), phi=part_phi,
                    first_order=first_order, objective=config.inner_objective)
            return {"gradient": torch.func.grad_and_value(loss),
                    "kl_gradient": torch.func.grad(lambda p: loss_kl(p)[1]),
                    "loss_kl": loss_kl, "fisher_product": product}

        r["parts"] = self.learner_map(build, self.chunks)

    def _ppo_parts(self) -> None:
        """The per-chunk minibatch gradients of PPO's update (metarobot.ppo): each task's
        minibatch is drawn from (seed, iteration, epoch, the task's place in the
        meta-batch)."""
        config, spec, r = self.config, self.spec, self._round
        settings = config.ppo_settings
        post = r["post"]

        def build(chunk: Chunk) -> Dict[str, Any]:
            a, b = chunk[0] - self.lo, chunk[1] - self.lo
            part = meta.record_old(spec, {k: v[a:b] for k, v in r["adapted"].items()},
                                   task_slice(post, a, b))
            samples = part.mask.shape[1]
            old_log_std = part.old_log_std

            def task(p, o, c, act, adv, m, lp, mu, ls, v, tgt):
                return ppo.task_loss(spec, p, o, c, act, adv, m, lp, mu, ls, v, tgt, settings)

            def loss(p: meta.Params, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
                rows = torch.arange(index.shape[0])[:, None]
                losses, kls = torch.vmap(task, in_dims=(None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))(
                    p, part.obs[rows, index], part.critic_obs[rows, index],
                    part.actions[rows, index],
                    part.advantages[rows, index], part.mask[rows, index],
                    part.old_log_prob[rows, index], part.old_mean[rows, index], old_log_std,
                    part.old_values[rows, index], part.value_targets[rows, index])
                return losses.mean(), kls.mean()

            grad_fn = torch.func.grad_and_value(loss, has_aux=True)

            def gradient(p: meta.Params, epoch: int, minibatch: int
                         ) -> Tuple[meta.Params, torch.Tensor]:
                index = torch.stack([ppo.minibatch_indices(
                    samples, settings.minibatches, minibatch,
                    stream_seed(config.seed, PPO_STREAM, r["iteration"], epoch, task))
                    for task in range(chunk[0], chunk[1])])
                trained = {n: p[n] for n in ppo.trained_names(p)}
                grads, (value, kl) = grad_fn(trained, index)
                full = {n: grads[n] if n in grads else torch.zeros_like(v)
                        for n, v in p.items()}
                return full, torch.stack([value.detach(), kl]).to(torch.float32)
            return {"ppo_gradient": gradient}

        r["parts"] = self.learner_map(build, self.chunks)

    def _each(self, name: str, *args: Any) -> List[Any]:
        if self._round is None or "parts" not in self._round:
            raise RuntimeError(f"{name} before a sampling round of a TRPO or PPO outer step")
        with device_module.single_threaded():
            return self.learner_map(lambda part: part[name](*args), self._round["parts"])

    def close(self) -> None:
        """Ends the chunk executors' threads."""
        self.executors.close()

    # ----------------------------------------------------- the outer step's per-chunk values

    def gradient(self, p: meta.Params) -> List[Tuple[meta.Params, torch.Tensor]]:
        """Per chunk: (gradient, value) of the chunk's mean surrogate loss at p."""
        return self._each("gradient", p)

    def fisher_product(self, v: meta.Params) -> List[meta.Params]:
        """Per chunk: the Hessian of the chunk's mean KL at the round's theta, times v."""
        return self._each("fisher_product", v)

    def ppo_gradient(self, p: meta.Params, epoch: int, minibatch: int
                     ) -> List[Tuple[meta.Params, torch.Tensor]]:
        """Per chunk (ppo): the gradient of the chunk's mean PPO loss on minibatch
        `minibatch` of pass `epoch` at p (zero for the learner's non-trained entries), and
        [loss, mean KL from the sampling policy]."""
        return self._each("ppo_gradient", p, epoch, minibatch)

    def loss_kl(self, p: meta.Params) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per chunk: (mean surrogate loss, mean KL) at candidate parameters p."""
        return self._each("loss_kl", p)

    def kl_gradient(self, p: meta.Params) -> List[meta.Params]:
        """Per chunk: the gradient of the chunk's mean KL at p."""
        return self._each("kl_gradient", p)

    def adapted(self) -> meta.Params:
        """The shard's adapted parameters of the last round, (tasks, ...) per entry (theta
        for every task with no adaptation, trpo)."""
        if self._round is None:
            raise RuntimeError("adapted before a sampling round")
        return self._round["adapted"]

    def curves(self, theta: meta.Params, tasks: Sequence[Task], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str, first_stream: int) -> Curve:
        """adaptation_curve of the policy with parameters theta on tasks (this shard's),
        whose simulations start at random stream first_stream."""
        with torch.no_grad():
            for n, p in self.policy.named_parameters():
                p.copy_(theta[n])
        return adaptation_curve(self.policy, self.family, tasks, steps, trajectories, lr, seed,
                                gamma=self.config.gamma, gae_lambda=self.config.gae_lambda,
                                threads=self.threads, baseline_fit=baseline_fit,
                                device=self.config.device, first_stream=first_stream,
                                update=self.config.inner_rule)


def _weights(chunks: Sequence[Chunk], ntask: int) -> List[float]:
    return [(hi - lo) / ntask for lo, hi in chunks]


class WorkerSet:
    """The calls the meta-iteration makes, summed over every chunk of every shard in the
    meta-batch's chunk order. Subclasses give sample, adapted, curves and _map(method, p)
    -> the per-chunk lists of all shards, concatenated in shard order."""

    chunks: List[Chunk]
    shards: List[Optional[List[Chunk]]]
    config: TrainConfig
    local = True  # the shards live in this process (a CUDA graph may capture their calls)

    def sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
               report: Optional[Callable[[str], None]] = None) -> Round:
        """Every shard's sampling round of `iteration` with theta (see TaskWorker.sample),
        the carry passed from shard to shard in order."""
        raise NotImplementedError

    def adapted(self) -> meta.Params:
        """Every task's adapted parameters of the last round, (tasks, ...) per entry."""
        raise NotImplementedError

    def curves(self, theta: meta.Params, tasks: Sequence[Task], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str) -> Curve:
        """adaptation_curve of the policy with parameters theta on tasks, split over the
        workers with the same results: a Curve of the tasks in order."""
        raise NotImplementedError

    @property
    def weights(self) -> List[float]:
        return _weights(self.chunks, self.config.meta_batch_size)

    def gradient(self, p: meta.Params) -> Tuple[meta.Params, torch.Tensor]:
        return trpo.combine(self._map("gradient", p), self.weights)

    def ppo_gradient(self, p: meta.Params, epoch: int, minibatch: int
                     ) -> Tuple[meta.Params, torch.Tensor]:
        return trpo.combine(self._map("ppo_gradient", p, epoch, minibatch), self.weights)

    def fisher_product(self, v: meta.Params) -> meta.Params:
        return trpo.combine(self._map("fisher_product", v), self.weights)

    def loss_kl(self, p: meta.Params) -> Tuple[torch.Tensor, torch.Tensor]:
        return trpo.combine(self._map("loss_kl", p), self.weights)

    def kl_gradient(self, p: meta.Params) -> meta.Params:
        return trpo.combine(self._map("kl_gradient", p), self.weights)

    def close(self) -> None:
        """Releases what the set holds (processes, a cluster connection)."""

    def __enter__(self) -> "WorkerSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _map(self, method: str, p: meta.Params, *args: Any) -> List[Any]:
        raise NotImplementedError


class InProcessWorkers(WorkerSet):
    """Task workers in this process, run one after the other: one shard (the local run), or
    several (which give the same results; the cluster's sharding, without a cluster)."""

    def __init__(self, config: TrainConfig, family: Optional[TaskFamily] = None,
                 policy: Optional[GaussianMLPPolicy] = None, shards: int = 1):
        self.config = config
        family = family or make_family(config.family, **config.family_overrides)
        self.chunks = chunk_bounds(config, family)
        self.shards = shard_chunks(self.chunks, shards)
        self.workers = [TaskWorker(config, s, family, policy) for s in self.shards]

    def sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
               report: Optional[Callable[[str], None]] = None) -> Round:
        rounds = []
        for worker in self.workers:
            rounds.append(worker.sample(theta, iteration, carry, report))
            carry = rounds[-1].carry
        return merge_rounds(rounds)

    def _map(self, method: str, p: meta.Params, *args: Any) -> List[Any]:
        return [v for w in self.workers for v in getattr(w, method)(p, *args)]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def adapted(self) -> meta.Params:
        parts = [w.adapted() for w in self.workers]
        return parts[0] if len(parts) == 1 else {
            k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def curves(self, theta: meta.Params, tasks: Sequence[Task], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str) -> Curve:
        return self.workers[0].curves(theta, tasks, steps, trajectories, lr, seed,
                                      baseline_fit, 0)


def merge_rounds(rounds: Sequence[Round]) -> Round:
    """The rounds of consecutive shards as one: returns concatenated, each phase's time the
    slowest shard's (they run side by side on a cluster), the last shard's carry."""
    if len(rounds) == 1:
        return rounds[0]
    times = {k: max(r.times[k] for r in rounds) for k in rounds[0].times}
    return Round(torch.cat([r.pre_returns for r in rounds]),
                 torch.cat([r.post_returns for r in rounds]), times, rounds[-1].carry)
