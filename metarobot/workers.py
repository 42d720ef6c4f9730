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
several shards in turn); `metarobot.cluster.RayWorkers` is one Ray actor per shard.

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

from . import meta
from . import device as device_module
from .batch import BatchSim
from .families import Task, TaskFamily, make_family
from .policy import GaussianMLPPolicy

Chunk = Tuple[int, int]  # tasks [lo, hi) of the meta-batch
CLUSTERS = ("local", "ray")


def chunk_bounds(config: Any, family: TaskFamily) -> List[Chunk]:
    """The meta-batch's task chunks: ranges of whole tasks of about config.chunk_samples
    samples each on the CPU (see meta.task_chunks), all tasks at once on a GPU."""
    ntask = config.meta_batch_size
    if device_module.resolve(config.device).type != "cpu":
        return [(0, ntask)]
    return meta.chunk_ranges(ntask, family.horizon * config.trajectories, config.chunk_samples)


def shard_chunks(chunks: Sequence[Chunk], shards: int) -> List[List[Chunk]]:
    """Contiguous runs of whole chunks, one per shard, as even in tasks as the chunks allow.
    ValueError when there are fewer chunks than shards."""
    if shards > len(chunks):
        raise ValueError(f"{shards} workers need at least {shards} task chunks; the meta-batch "
                         f"has {len(chunks)} (chunk_samples sets their size: lower it, or use "
                         f"fewer workers)")
    ntask = chunks[-1][1] - chunks[0][0]
    out: List[List[Chunk]] = []
    start = 0
    for s in range(shards):
        # end this shard at the chunk boundary closest to its even share of the tasks,
        # leaving at least one chunk for each shard after it
        target = chunks[0][0] + ntask * (s + 1) / shards
        last = len(chunks) - (shards - s - 1)
        end = start + 1
        while end < last and abs(chunks[end][1] - target) <= abs(chunks[end - 1][1] - target):
            end += 1
        out.append(list(chunks[start:end]))
        start = end
    return out


@dataclasses.dataclass
class Round:
    """What a sampling round of the meta-batch (or a shard of it) measured.

    pre_returns, post_returns: (M,) float64 mean undiscounted return per task before and after
    adaptation; times: seconds per phase (sampling, returns, inner, and outer: the outer
    step's set-up; the slowest shard's for several); carry: the baseline coefficients carried to the next iteration ('previous')."""

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

    def __init__(self, config: Any, chunks: Optional[Sequence[Chunk]],
                 family: Optional[TaskFamily] = None,
                 policy: Optional[GaussianMLPPolicy] = None, threads: Optional[int] = None):
        from .train import make_policy  # train imports this module
        self.config = config
        self.chunks = [tuple(c) for c in chunks or ()]
        self.lo, self.hi = (self.chunks[0][0], self.chunks[-1][1]) if self.chunks else (0, 0)
        self.family = family or make_family(config.family, **config.family_overrides)
        self.policy = policy or make_policy(config, self.family)
        self.spec = meta.PolicySpec(self.policy.nlayers, self.policy.activation)
        self.threads = config.threads if threads is None else threads
        self.device = device_module.resolve(config.device)
        self._round: Optional[Dict[str, Any]] = None

    # -------------------------------------------------------------------- the sampling round

    def sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
               report: Optional[Callable[[str], None]] = None) -> Round:
        """Samples the shard's tasks of `iteration` with theta (the policy's parameters and
        Meta-SGD's step sizes if learned, on the config's device), adapts, samples the
        adapted policies, and keeps what the outer step's calls need. carry: the baseline
        carry into the shard's first task ('previous')."""
        from .train import TRAIN_STREAM, _baseline_next, _baseline_start, _per_task_params, _seed
        say = report or (lambda text: None)
        if not self.chunks:
            raise RuntimeError("this worker holds no tasks of the meta-batch")
        config, device, spec = self.config, self.device, self.spec
        policy_theta, learned = meta.split_step_sizes(theta)
        lr: Any = config.inner_lr if learned is None else {k: v.detach()
                                                           for k, v in learned.items()}
        times = {"sampling": 0.0, "returns": 0.0, "inner": 0.0}
        tasks = self.family.sample_tasks(config.meta_batch_size,
                                         _seed(config.seed, TRAIN_STREAM, iteration, 0))
        tasks = tasks[self.lo:self.hi]
        k = config.trajectories
        say(f"building {len(tasks) * k} simulations")
        sim = BatchSim(self.family, tasks, k, seed=_seed(config.seed, TRAIN_STREAM, iteration, 1),
                       num_threads=self.threads, first_stream=self.lo * k)
        ntask = len(tasks)
        batches: List[meta.TaskBatch] = []
        sampling_params: Any = (policy_theta if device.type == "cpu"
                                else device_module.params_to_cpu(policy_theta))
        adapted: Optional[meta.Params] = None
        carry, prior = _baseline_start(config.baseline_fit, ntask, sim.observation_dim, carry)
        for step in range(config.inner_steps):
            say(f"sampling (adaptation step {step + 1}/{config.inner_steps})")
            t0 = time.perf_counter()
            traj = sim.rollout(self.policy, params=sampling_params)
            t1 = time.perf_counter()
            say("advantages")
            batches.append(device_module.to_device(
                meta.process(traj, ntask, config.gamma, config.gae_lambda, carry=carry,
                             prior=prior), device))
            if config.inner_objective == "lvc":
                # the sampling policy's log-probabilities: constants of the 'lvc' loss
                meta.record_sampling(spec, policy_theta if adapted is None else adapted,
                                     batches[-1], batched=adapted is not None)
            carry, prior = _baseline_next(config.baseline_fit, batches[-1])
            t2 = time.perf_counter()
            say("inner step")
            # the values of the adapted parameters, for sampling; the outer step
            # differentiates through the adaptation itself
            source = policy_theta if adapted is None else adapted
            adapted = config.inner_rule.step(spec, source, batches[-1], lr, adapted is not None,
                                             config.inner_objective)
            sampling_params = _per_task_params(
                adapted if device.type == "cpu" else device_module.params_to_cpu(adapted),
                ntask)
            t3 = time.perf_counter()
            times["sampling"] += t1 - t0
            times["returns"] += t2 - t1
            times["inner"] += t3 - t2
        # the adapted policies' own samples: the outer step's data (for Reptile, the log's)
        say("sampling the adapted policies")
        t0 = time.perf_counter()
        post_traj = sim.rollout(self.policy, params=sampling_params)
        t1 = time.perf_counter()
        say("advantages")
        post = device_module.to_device(
            meta.process(post_traj, ntask, config.gamma, config.gae_lambda, carry=carry,
                         prior=prior), device)
        carry, _ = _baseline_next(config.baseline_fit, post)
        times["sampling"] += t1 - t0
        times["returns"] += time.perf_counter() - t1
        self._round = {"theta": theta, "batches": batches, "post": post, "adapted": adapted}
        t0 = time.perf_counter()
        if config.algo != "reptile":
            self._outer_parts(theta)
        times["outer"] = time.perf_counter() - t0  # the outer step's set-up on this shard
        return Round(batches[0].returns, post.returns, times, carry)

    def _outer_parts(self, theta: meta.Params) -> None:
        """The per-chunk functions of the outer step (the same for every call)."""
        config, spec = self.config, self.spec
        r = self._round
        first_order = config.algo != "maml-trpo"
        batches, post, adapted = r["batches"], r["post"], r["adapted"]
        post = meta.record_old(spec, adapted, post)
        theta_sorted = {n: theta[n] for n in sorted(theta)}

        def step_size(p: meta.Params) -> Any:
            learned = meta.split_step_sizes(p)[1]
            return config.inner_lr if learned is None else learned

        parts = []
        for lo, hi in self.chunks:
            a, b = lo - self.lo, hi - self.lo  # the chunk's tasks within the shard
            part_batches = [meta.task_slice(x, a, b) for x in batches]
            part_post = meta.task_slice(post, a, b)

            def loss(p: meta.Params, bs=part_batches, ps=part_post) -> torch.Tensor:
                phi = meta.adapt(spec, meta.split_step_sizes(p)[0], bs, step_size(p),
                                 first_order, config.inner_objective)
                return meta.surrogate(spec, phi, ps)

            def loss_kl(p: meta.Params, bs=part_batches, ps=part_post
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
                phi = meta.adapt(spec, meta.split_step_sizes(p)[0], bs, step_size(p),
                                 first_order, config.inner_objective)  # once for both
                return meta.surrogate(spec, phi, ps), meta.mean_kl(spec, phi, ps)

            product = None
            if config.hessian != "finite-difference":
                fraction = config.fisher_fraction
                product = meta.maml_fisher_product(
                    spec, theta_sorted, [meta.subsample(x, fraction) for x in part_batches],
                    config.inner_lr, meta.subsample(part_post, fraction),
                    phi={k: v[a:b] for k, v in adapted.items()}, first_order=first_order,
                    objective=config.inner_objective)
            parts.append({"gradient": torch.func.grad_and_value(loss),
                          "kl_gradient": torch.func.grad(lambda p, f=loss_kl: f(p)[1]),
                          "loss_kl": loss_kl, "fisher_product": product})
        r["parts"] = parts

    def _each(self, name: str, *args: Any) -> List[Any]:
        if self._round is None or "parts" not in self._round:
            raise RuntimeError(f"{name} before a MAML sampling round")
        return [part[name](*args) for part in self._round["parts"]]

    # ----------------------------------------------------- the outer step's per-chunk values

    def gradient(self, p: meta.Params) -> List[Tuple[meta.Params, torch.Tensor]]:
        """Per chunk: (gradient, value) of the chunk's mean surrogate loss at p."""
        return self._each("gradient", p)

    def fisher_product(self, v: meta.Params) -> List[meta.Params]:
        """Per chunk: the Hessian of the chunk's mean KL at the round's theta, times v."""
        return self._each("fisher_product", v)

    def loss_kl(self, p: meta.Params) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per chunk: (mean surrogate loss, mean KL) at candidate parameters p."""
        return self._each("loss_kl", p)

    def kl_gradient(self, p: meta.Params) -> List[meta.Params]:
        """Per chunk: the gradient of the chunk's mean KL at p."""
        return self._each("kl_gradient", p)

    def adapted(self) -> meta.Params:
        """The shard's adapted parameters of the last round, (tasks, ...) per entry."""
        if self._round is None:
            raise RuntimeError("adapted before a sampling round")
        return self._round["adapted"]

    def curves(self, theta: meta.Params, tasks: Sequence[Task], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str, first_stream: int
               ) -> Tuple[np.ndarray, List[Dict[str, torch.Tensor]]]:
        """train.adaptation_curve of the policy with parameters theta on tasks (this shard's),
        whose simulations start at random stream first_stream."""
        from .train import adaptation_curve
        with torch.no_grad():
            for n, p in self.policy.named_parameters():
                p.copy_(theta[n])
        return adaptation_curve(self.policy, self.family, tasks, steps, trajectories, lr, seed,
                                self.config.gamma, self.config.gae_lambda, self.threads,
                                baseline_fit, self.config.device, first_stream=first_stream,
                                update=self.config.inner_rule)


def _weights(chunks: Sequence[Chunk], ntask: int) -> List[float]:
    return [(hi - lo) / ntask for lo, hi in chunks]


def combine(values: Sequence[Any], weights: Sequence[float]) -> Any:
    """sum_c weights[c] * values[c] in chunk order (meta.weighted_sum's arithmetic)."""
    acc: Any = None
    for w, v in zip(weights, values):
        acc = meta._axpy(acc, w, v)
    return acc


class WorkerSet:
    """The calls the meta-iteration makes, summed over every chunk of every shard in the
    meta-batch's chunk order. Subclasses give _map(method, *args) -> the per-chunk lists of
    all shards, concatenated in shard order, and _sample."""

    chunks: List[Chunk]
    shards: List[List[Chunk]]
    config: Any
    local = True  # the shards live in this process (a CUDA graph may capture their calls)

    @property
    def weights(self) -> List[float]:
        return _weights(self.chunks, self.config.meta_batch_size)

    def gradient(self, p: meta.Params) -> Tuple[meta.Params, torch.Tensor]:
        return combine(self._map("gradient", p), self.weights)

    def fisher_product(self, v: meta.Params) -> meta.Params:
        return combine(self._map("fisher_product", v), self.weights)

    def loss_kl(self, p: meta.Params) -> Tuple[torch.Tensor, torch.Tensor]:
        return combine(self._map("loss_kl", p), self.weights)

    def kl_gradient(self, p: meta.Params) -> meta.Params:
        return combine(self._map("kl_gradient", p), self.weights)

    def close(self) -> None:
        """Releases what the set holds (processes, a cluster connection)."""

    def __enter__(self) -> "WorkerSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _map(self, method: str, *args: Any) -> List[Any]:
        raise NotImplementedError


class InProcessWorkers(WorkerSet):
    """Task workers in this process, run one after the other: one shard (the local run), or
    several (which give the same results; the cluster's sharding, without a cluster)."""

    def __init__(self, config: Any, family: Optional[TaskFamily] = None,
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

    def _map(self, method: str, *args: Any) -> List[Any]:
        return [v for w in self.workers for v in getattr(w, method)(*args)]

    def adapted(self) -> meta.Params:
        parts = [w.adapted() for w in self.workers]
        return parts[0] if len(parts) == 1 else {
            k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def curves(self, theta: meta.Params, tasks: Sequence[Task], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str
               ) -> Tuple[np.ndarray, List[Dict[str, torch.Tensor]]]:
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


def check_cluster_settings(config: Any, family: TaskFamily) -> None:
    """ValueError, naming the setting, for cluster settings that do not hold together."""
    if config.cluster not in CLUSTERS:
        raise ValueError(f"cluster should be one of {CLUSTERS}, got {config.cluster!r}")
    if config.cluster == "local":
        if config.workers != 1:
            raise ValueError(f"workers {config.workers} needs cluster 'ray' (--cluster ray): "
                             f"in one process the shards would only run one after the other")
        if config.ray_address is not None:
            raise ValueError("ray_address (--ray-address) needs cluster 'ray' (--cluster ray)")
        return
    from .cluster import check_address
    if config.ray_address is not None:
        check_address(config.ray_address)
    if device_module.resolve(config.device).type != "cpu":
        raise ValueError(f"cluster 'ray' runs the learner on its workers' CPUs; device "
                         f"{config.device!r} is for one machine (--device cpu)")
    if config.baseline_fit == "previous" and config.workers > 1:
        raise ValueError("baseline_fit 'previous' predicts each task's values with the fit of "
                         "the task before it, across shards: it needs one worker (or "
                         "baseline_fit 'current' or 'fresh')")
    shard_chunks(chunk_bounds(config, family), config.workers)  # enough chunks


def make_workers(config: Any, family: Optional[TaskFamily] = None,
                 policy: Optional[GaussianMLPPolicy] = None) -> WorkerSet:
    """The worker set config asks for: in this process (cluster 'local'), or Ray actors
    (cluster 'ray', see metarobot.cluster). Connects and starts the workers now, so that a
    bad address or an unreachable cluster fails here, before any work."""
    if config.cluster == "ray":
        from .cluster import RayWorkers
        return RayWorkers(config)
    return InProcessWorkers(config, family, policy)
