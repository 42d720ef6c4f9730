"""Meta-training, evaluation and adaptation: the main job of metarobot.

    config = TrainConfig(family="HalfCheetahDir", algo="maml-trpo")
    train(config, "runs/cheetah-dir")                 # checkpoints, progress.csv, TensorBoard
    evaluate("runs/cheetah-dir", tasks=40, steps=3)   # returns after 0..3 adaptation steps

Every iteration draws its tasks and simulation seeds from (seed, iteration) alone, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have, given the same
number of torch threads for the learner (see torch_threads_note).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import checkpoint, checks, meta
from . import device as device_module
from .batch import BatchSim
from .families import Task, TaskFamily, make_family
from .policy import ACTIVATIONS, GaussianMLPPolicy
from .workers import CLUSTERS, InProcessWorkers, WorkerSet, make_workers

ALGORITHMS = ("maml-trpo", "fomaml-trpo", "reptile")
BASELINE_FITS = ("current", "previous", "fresh")
HESSIANS = ("exact", "finite-difference")

# Trajectories per task of the MAML paper's training runs (its fast batch size).
PAPER_TRAJECTORIES = {"HalfCheetahDir": 20, "HalfCheetahVel": 10, "AntVel": 20, "AntDir": 40}
# TRPO's KL bound of the runs behind the MAML paper's results, where not 0.01: the released
# evaluation of HalfCheetahDir loads a run of meta step size 0.02 ("..._mlr0.02/itr_100.pkl")
PAPER_MAX_KL = {"HalfCheetahDir": 0.02}


# What each numeric setting of TrainConfig may hold (the command line's flags check the same).
FIELD_RANGES: Dict[str, checks.Range] = {
    "iterations": checks.COUNT, "meta_batch_size": checks.COUNT,
    "trajectories_per_task": checks.COUNT, "inner_steps": checks.COUNT,
    "cg_iters": checks.COUNT, "checkpoint_every": checks.COUNT,
    "max_backtracks": checks.COUNT, "chunk_samples": checks.COUNT,
    "inner_lr": checks.STEP_SIZE, "gamma": checks.Range(float, 0.0, 1.0),
    "gae_lambda": checks.Range(float, 0.0, 1.0), "max_kl": checks.POSITIVE,
    "cg_damping": checks.Range(float, low=0.0),
    "fisher_fraction": checks.Range(float, 0.0, 1.0, open_low=True),
    "reptile_epsilon": checks.POSITIVE, "reptile_epsilon_final": checks.Range(float, low=0.0),
    "reptile_anneal_iterations": checks.COUNT, "init_log_std": checks.Range(float),
    "inner_epochs": checks.COUNT, "inner_clip": checks.Range(float, 0.0, 1.0, open_low=True),
    "seed": checks.SEED, "threads": checks.NONNEGATIVE_INT, "time_budget": checks.POSITIVE,
    "workers": checks.COUNT, "threads_per_worker": checks.COUNT,
}
OPTIONAL_FIELDS = ("trajectories_per_task", "max_kl", "time_budget",  # None: a default
                   "reptile_epsilon_final", "reptile_anneal_iterations")
# What --resume may change of a run's saved settings: none of them changes its results
# (beyond float32 rounding between devices).
RESUME_MAY_CHANGE = ("iterations", "time_budget", "device", "cuda_graphs", "cluster",
                     "ray_address", "workers", "threads_per_worker")
FIELD_CHOICES: Dict[str, Tuple[str, ...]] = {
    "algo": ALGORITHMS, "inner_objective": meta.INNER_OBJECTIVES,
    "inner_update": meta.INNER_UPDATES,
    "baseline_fit": BASELINE_FITS, "hessian": HESSIANS, "activation": ACTIVATIONS,
    "cluster": CLUSTERS,
}


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a meta-training run; defaults are the MAML paper's."""

    family: str = "HalfCheetahDir"
    """Task family name."""
    family_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    """Fields of the family to change (see metarobot.make_family)."""
    algo: str = "maml-trpo"
    """maml-trpo (second order), fomaml-trpo (first order) or reptile."""
    iterations: int = 100
    """Meta-iterations."""
    meta_batch_size: int = 40
    """Tasks per meta-iteration."""
    trajectories_per_task: Optional[int] = None
    """Episodes per task per sampling round; None: the paper's for the family (else 20)."""
    inner_steps: int = 1
    """Policy-gradient steps of the adaptation."""
    inner_lr: float = 0.1
    """Step size of the adaptation steps."""
    inner_objective: str = "pg"
    """What the adaptation step differentiates: pg, the policy-gradient loss (the MAML
    paper's); lvc, ProMP's low-variance curvature loss, the same step with the score's outer
    product in its second derivatives (maml-trpo only)."""
    inner_update: str = "pg"
    """What each adaptation step does with its batch (reptile): pg, one policy-gradient
    step; clipped, inner_epochs full-batch steps of inner_lr on PPO's clipped surrogate (the
    first is the pg step). Evaluation and adaptation of the checkpoint use the same."""
    inner_epochs: int = 4
    """Gradient steps per batch of the clipped inner update."""
    inner_clip: float = 0.2
    """The clipped inner update's ratio bound: 1 +- inner_clip."""
    learn_inner_lr: bool = False
    """Meta-SGD: one adaptation step size per parameter entry, starting at inner_lr and
    learned by the outer step with the policy (maml-trpo, fomaml-trpo); evaluate and adapt
    then use them."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 1.0
    """GAE lambda of the advantages (1: Monte Carlo returns minus the baseline)."""
    baseline_fit: str = "current"
    """current: each task's baseline is fit on its own batch; previous: the reference code's
    training order, predicting with the fit of the batch processed just before (the previous
    task's); fresh: the reference code's evaluation order, one baseline per task that predicts
    each batch with the fit of the same task's batch before (0 for the first batch)."""
    max_kl: Optional[float] = None
    """TRPO's KL bound per outer step; None: the paper's run for the family (0.02 for
    HalfCheetahDir, else 0.01)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations of the TRPO step."""
    cg_damping: float = 1e-5
    """Damping added to the Fisher-vector products."""
    fisher_fraction: float = 1.0
    """Fraction of each task's trajectories the Fisher-vector products use (less is faster;
    on HalfCheetahDir 0.25 learned markedly worse than 1.0)."""
    hessian: str = "exact"
    """How the outer TRPO step's KL Hessian-vector products are computed: exact (Fisher
    products through the adaptation); finite-difference, as the MAML paper's code (symmetric
    differences of the KL's gradient with a step of 1 / |theta| times the vector, see
    meta.finite_difference_product; on HalfCheetahDir an iteration takes about 20% longer)."""
    max_backtracks: int = 15
    """Line-search steps of TRPO (ratio 0.8)."""
    chunk_samples: int = 8192
    """Samples per chunk of tasks in the outer step's computations (whole tasks, at least
    one): the results are the same up to rounding; chunks whose activations fit the CPU's
    caches run about twice as fast as all tasks at once."""
    reptile_epsilon: float = 0.1
    """Reptile's outer step size (at the first iteration when it anneals)."""
    reptile_epsilon_final: Optional[float] = None
    """Reptile: the outer step size reached after reptile_anneal_iterations, linearly from
    reptile_epsilon (and kept after); None: no annealing."""
    reptile_anneal_iterations: Optional[int] = None
    """Reptile: iterations over which the outer step size anneals (default: iterations). A
    setting of its own, so that a resumed run with more iterations keeps the schedule."""
    hidden_sizes: Tuple[int, ...] = (100, 100)
    """Hidden layer widths of the policy."""
    activation: str = "relu"
    """Hidden activation of the policy."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the policy."""
    seed: int = 0
    """Seeds tasks, simulations and the policy's initial weights."""
    threads: int = 0
    """Simulation threads; 0: one per CPU."""
    device: str = "cpu"
    """Where the learner runs: cpu, cuda (or cuda:N), or auto (cuda when a GPU is visible).
    Sampling stays on CPU threads; each sampled batch goes to the device once, and the inner
    and outer steps run there, all tasks in one batch. On CPU the results are those of
    earlier releases, bit for bit; on CUDA they agree to float32 rounding. A resumed run
    may change device."""
    cuda_graphs: bool = True
    """On CUDA: replay the Fisher-vector product of the conjugate gradient as one CUDA graph."""
    cluster: str = "local"
    """Where the per-task work runs: local (this process) or ray (one Ray actor per shard of
    the meta-batch; see docs/cluster.md). The results are the same bit for bit."""
    ray_address: Optional[str] = None
    """With cluster ray: auto (the cluster this machine belongs to), HOST:PORT of a
    cluster's head, or None to start a Ray instance on this machine for the run."""
    workers: int = 1
    """With cluster ray: task workers (Ray actors), each owning a shard of whole task chunks
    (at most one worker per chunk, see chunk_samples)."""
    threads_per_worker: int = 1
    """With cluster ray: CPUs each worker reserves, its simulation and torch threads."""
    checkpoint_every: int = 10
    """Iterations between checkpoints (the last one is always saved)."""
    time_budget: Optional[float] = None
    """Seconds of training after which the run stops at the end of an iteration."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, (str, bytes)) or \
                not hasattr(self.hidden_sizes, "__iter__"):
            raise ValueError(f"hidden_sizes should be a sequence of integers >= 1, got "
                             f"{self.hidden_sizes!r}")
        self.hidden_sizes = tuple(self.hidden_sizes)
        for h in self.hidden_sizes:
            checks.COUNT.check(h, "hidden_sizes")
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        for name, allowed in FIELD_RANGES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_FIELDS:
                continue
            allowed.check(value, name)
        device_module.resolve(self.device)  # a device this machine has
        for name, values in FIELD_CHOICES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} should be one of {values}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("learn_inner_lr", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} should be True or False, got "
                                 f"{getattr(self, name)!r}")
        if self.inner_objective != "pg" and self.algo != "maml-trpo":
            raise ValueError(f"inner_objective {self.inner_objective!r} changes only second "
                             f"derivatives of the adaptation: it needs maml-trpo, not "
                             f"{self.algo}")
        if self.inner_update != "pg" and self.algo != "reptile":
            raise ValueError(f"inner_update {self.inner_update!r} is not differentiated "
                             f"through: it needs reptile, not {self.algo} (MAML's outer step "
                             f"differentiates the pg step)")
        if self.learn_inner_lr and self.algo == "reptile":
            raise ValueError("learn_inner_lr (Meta-SGD) needs an outer step that "
                             "differentiates the adaptation: maml-trpo or fomaml-trpo, not "
                             "reptile")
        if self.reptile_epsilon_final is not None and self.reptile_anneal_iterations is None:
            self.reptile_anneal_iterations = self.iterations  # saved: resuming keeps it
        family = make_family(self.family, **self.family_overrides)  # raises for unknown names
        self._check_cluster(family)

    def _check_cluster(self, family: TaskFamily) -> None:
        """The cluster settings hold together (before any connection is made)."""
        from .workers import check_cluster_settings
        check_cluster_settings(self, family)

    @property
    def kl_bound(self) -> float:
        """The KL bound in force: max_kl, or the paper's for the family."""
        if self.max_kl is not None:
            return self.max_kl
        return PAPER_MAX_KL.get(self.family, 0.01)

    def epsilon_at(self, iteration: int) -> float:
        """Reptile's outer step size at an iteration (0-based): reptile_epsilon, annealed
        linearly to reptile_epsilon_final over reptile_anneal_iterations when that is set."""
        if self.reptile_epsilon_final is None:
            return self.reptile_epsilon
        done = min(1.0, iteration / max(self.reptile_anneal_iterations or 1, 1))
        return self.reptile_epsilon + (self.reptile_epsilon_final - self.reptile_epsilon) * done

    @property
    def inner_rule(self) -> meta.InnerUpdate:
        """The adaptation step's update (see inner_update)."""
        return meta.InnerUpdate(self.inner_update, self.inner_epochs if
                                self.inner_update == "clipped" else 1, self.inner_clip)

    @property
    def trajectories(self) -> int:
        if self.trajectories_per_task is not None:
            return self.trajectories_per_task
        return PAPER_TRAJECTORIES.get(self.family, 20)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**d)


def _seed(seed: int, *key: int) -> int:
    """A 32-bit seed of its own for each (seed, key...) stream."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


TRAIN_STREAM, EVAL_STREAM, ADAPT_STREAM = 0, 1, 2


def make_policy(config: TrainConfig, family: TaskFamily) -> GaussianMLPPolicy:
    model = family.load_model()
    torch.manual_seed(_seed(config.seed, 3))
    return GaussianMLPPolicy(family.observation_dim(model), model.nu, config.hidden_sizes,
                             config.activation, config.init_log_std)


def _per_task_params(adapted: meta.Params, ntask: int) -> List[Dict[str, torch.Tensor]]:
    return [{k: v[i].detach() for k, v in adapted.items()} for i in range(ntask)]


@dataclasses.dataclass
class IterationResult:
    pre_return: float
    post_return: float
    times: Dict[str, float]
    info: Dict[str, float]
    carry: Optional[np.ndarray] = None


def meta_iteration(config: TrainConfig, family: TaskFamily, policy: GaussianMLPPolicy,
                   theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
                   report: Optional[Callable[[str], None]] = None,
                   workers: Optional[WorkerSet] = None
                   ) -> Tuple[meta.Params, IterationResult]:
    """One meta-iteration; returns the new parameters and what it measured. theta: the
    policy's parameters, and Meta-SGD's step sizes when config.learn_inner_lr (see
    meta.split_step_sizes). carry: the baseline coefficients carried between batches
    (baseline_fit 'previous'); the result's carry is the next iteration's. report, when
    given, hears of each phase as it starts (a progress display). workers: who does the
    per-task work (metarobot.workers); default one worker in this process. This function is
    the driver: it sums the workers' answers and takes the outer step."""
    say = report or (lambda text: None)
    if config.learn_inner_lr != (meta.split_step_sizes(theta)[1] is not None):
        raise ValueError("theta should hold step sizes exactly when learn_inner_lr is set")
    if workers is None:
        workers = InProcessWorkers(config, family, policy)
    t0 = time.perf_counter()
    sampled = workers.sample(theta, iteration, carry, report=say)
    transfer = time.perf_counter() - t0 - sum(sampled.times.values())
    # transfer: what the sampling round took beyond its slowest shard's work (0 in-process)
    times = dict(sampled.times, transfer=0.0 if workers.local else max(0.0, transfer))
    pre_return = float(sampled.pre_returns.mean())
    post_return = float(sampled.post_returns.mean())
    info: Dict[str, float] = {}
    t0 = time.perf_counter()
    if config.algo == "reptile":
        new_theta = meta.reptile_update(theta, workers.adapted(), config.epsilon_at(iteration))
        times["outer"] += time.perf_counter() - t0
        return new_theta, IterationResult(pre_return, post_return, times, info, sampled.carry)

    # The outer step's losses, gradients and Fisher products are means over tasks: the
    # workers compute them per chunk of tasks (meta.task_chunks), summed with weights
    # (tasks in the chunk) / (all tasks) in the meta-batch's chunk order.
    product: Callable[[meta.Params], meta.Params] = workers.fisher_product
    if config.hessian == "finite-difference":
        product = meta.finite_difference_product(workers.kl_gradient,
                                                 {n: theta[n] for n in sorted(theta)})
    new_theta, trpo = meta.trpo_step(
        theta, lambda p: workers.loss_kl(p)[0], lambda p: workers.loss_kl(p)[1],
        config.kl_bound, config.cg_iters, config.cg_damping,
        max_backtracks=config.max_backtracks, hessian_product=product,
        loss_kl_fn=workers.loss_kl, grad_fn=workers.gradient,
        report=lambda text: say(f"outer step: {text}"),
        cuda_graph=config.cuda_graphs and workers.local)
    times["outer"] += time.perf_counter() - t0
    info.update(kl=trpo.kl, backtracks=trpo.backtracks, accepted=float(trpo.accepted),
                surrogate_before=trpo.surrogate_before, surrogate_after=trpo.surrogate_after)
    return new_theta, IterationResult(pre_return, post_return, times, info, sampled.carry)


def _check_baseline_fit(value: Any) -> None:
    if value not in BASELINE_FITS:
        raise ValueError(f"baseline_fit should be one of {BASELINE_FITS}, got {value!r}")


def _baseline_start(baseline_fit: str, ntask: int, obs_dim: int,
                    carry: Optional[np.ndarray] = None
                    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(carry, prior) of a round's first batch (see meta.process). 'previous': the given carry
    (the run's last batch), else zeros; 'fresh': zeros for every task. An unfitted baseline of
    the reference code predicts 0, which zero coefficients do; 2 obs_dim + 4 features."""
    nfeat = 2 * obs_dim + 4
    if baseline_fit == "previous":
        return (np.zeros(nfeat) if carry is None else np.asarray(carry, dtype=np.float64)), None
    if baseline_fit == "fresh":
        return None, np.zeros((ntask, nfeat))
    return None, None


def _baseline_next(baseline_fit: str, batch: meta.TaskBatch
                   ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(carry, prior) of the batch after this one, of the same tasks."""
    return (batch.baseline_carry if baseline_fit == "previous" else None,
            batch.baseline_coeffs if baseline_fit == "fresh" else None)


class _Progress:
    """Progress on stderr: one self-rewriting line on a terminal, plain lines otherwise. The
    phases of the first iteration are shown as they start (it is the slowest: nothing is warm
    yet); on a terminal every iteration's are. The ETA counts the iterations after the
    first only."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start, self.enabled = total, start, enabled
        self.tty = sys.stderr.isatty()
        self.done = start
        self.first_end: Optional[float] = None  # when this process's first iteration ended
        self.first_time = 0.0
        self.t0 = time.perf_counter()
        self.last = ""

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / self.total)
        return "[" + "#" * filled + "." * (width - filled) + f"] {self.done}/{self.total}"

    def _write(self, line: str) -> None:
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def phase(self, text: str) -> None:
        """The phase of the iteration under way has changed."""
        if not self.enabled or (not self.tty and self.done > self.start):
            return
        self._write(f"{self._bar()} | iteration {self.done + 1}: {text}"
                    + (f" | {self.last}" if self.last and self.tty else ""))

    def update(self, done: int, text: str) -> None:
        now = time.perf_counter()
        if self.first_end is None:
            self.first_end, self.first_time = now, now - self.t0
        self.done = done
        if not self.enabled:
            return
        later = done - self.start - 1  # iterations after this process's first
        if later >= 1:
            rate = (now - self.first_end) / later
            eta = f"{rate:.1f} s/it | ETA {rate * (self.total - done) / 60:.1f} min"
        else:
            rate = self.first_time
            eta = f"first iteration {rate:.1f} s | ETA after the next"
        self.last = f"{text} | {eta}"
        self._write(f"{self._bar()} | {self.last}")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


_CSV_FIELDS = ["iteration", "pre_return", "post_return", "time_sampling", "time_returns",
               "time_inner", "time_outer", "time_total", "kl", "backtracks", "wall_clock",
               "time_transfer"]


def train(config: TrainConfig, out_dir: Union[str, Path], resume: bool = False,
          progress: bool = True) -> Path:
    """Meta-trains a policy; returns the path of the final checkpoint.

    out_dir receives config.json, progress.csv, TensorBoard events (when tensorboard is
    installed) and checkpoints/ (latest.safetensors and one per checkpoint_every iterations).
    resume continues from out_dir's latest checkpoint with its saved configuration.
    """
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.safetensors"
    start, wall0 = 0, 0.0
    carry = None
    if resume:
        params, info = checkpoint.load(latest)
        saved = TrainConfig.from_dict(info["config"])
        if saved.to_dict() != config.to_dict():
            # the saved settings win, but a longer run, a new time budget or another device
            # may be asked for
            for name in RESUME_MAY_CHANGE:
                setattr(saved, name, getattr(config, name))
        config = TrainConfig.from_dict(saved.to_dict())  # the changed settings checked
        start = int(info["iteration"]) + 1
        wall0 = float(info.get("wall_clock", 0.0))
        carry = info.get("baseline_carry")
        note = torch_threads_note(info.get("torch_threads"), torch.get_num_threads())
        if note:
            warnings.warn(f"resuming {str(out)!r}: {note}", RuntimeWarning, stacklevel=2)
    elif latest.exists():
        raise ValueError(f"{str(out)!r} already holds a run; resume it (--resume) or choose "
                         f"another directory")
    family = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    if config.learn_inner_lr:
        theta.update(meta.initial_step_sizes(theta, config.inner_lr))
    names = sorted(theta)
    if resume:
        _check_params(params, theta, latest)
        theta = {n: params[n].clone() for n in names}
    device = device_module.resolve(config.device)
    if device.type != "cpu":
        theta = {n: v.to(device) for n, v in theta.items()}
    # connected and started before anything is written: a cluster that cannot be used
    # fails here
    workers = make_workers(config, family, policy)
    try:
        return _train_loop(config, out, family, policy, theta, workers, start, wall0, carry,
                           resume, progress)
    finally:
        workers.close()


def _train_loop(config: TrainConfig, out: Path, family: TaskFamily,
                policy: GaussianMLPPolicy, theta: meta.Params, workers: WorkerSet, start: int,
                wall0: float, carry: Optional[np.ndarray], resume: bool, progress: bool
                ) -> Path:
    latest = out / "checkpoints" / "latest.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    csv_path = out / "progress.csv"
    rows = _read_rows(csv_path, below=start)
    writer = _tensorboard(out)
    bar = _Progress(config.iterations, start, progress)
    if progress:
        where = "" if config.cluster == "local" else \
            f" on {config.workers} Ray worker(s) x {config.threads_per_worker} thread(s)"
        print(f"{'resuming' if resume else 'training'} {config.family} with {config.algo}"
              f"{where}: iterations {start + 1}..{config.iterations}, {config.meta_batch_size} "
              f"tasks x {config.trajectories} trajectories each, into {out}", file=sys.stderr)
    stop = {"now": False}

    def request_stop(signum, frame):  # finish the iteration, save, then stop
        stop["now"] = True
    previous = signal.signal(signal.SIGTERM, request_stop)
    t_start = time.perf_counter()
    try:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
            f.flush()
            iteration = start - 1
            for iteration in range(start, config.iterations):
                t0 = time.perf_counter()
                theta, result = meta_iteration(config, family, policy, theta, iteration, carry,
                                               report=bar.phase, workers=workers)
                carry = result.carry
                total = time.perf_counter() - t0
                wall = wall0 + time.perf_counter() - t_start
                row = {"iteration": iteration, "pre_return": f"{result.pre_return:.4f}",
                       "post_return": f"{result.post_return:.4f}",
                       **{f"time_{k}": f"{v:.3f}" for k, v in result.times.items()},
                       "time_total": f"{total:.3f}", "kl": f"{result.info.get('kl', 0):.5f}",
                       "backtracks": int(result.info.get("backtracks", 0)),
                       "wall_clock": f"{wall:.1f}"}
                w.writerow(row)
                f.flush()
                if writer is not None:
                    writer.add_scalar("return/pre_update", result.pre_return, iteration)
                    writer.add_scalar("return/post_update", result.post_return, iteration)
                    for k, v in result.times.items():
                        writer.add_scalar(f"time/{k}", v, iteration)
                bar.update(iteration + 1, f"return {result.pre_return:.1f} -> "
                                          f"{result.post_return:.1f}")
                last = iteration + 1 == config.iterations
                over = config.time_budget is not None and \
                    time.perf_counter() - t_start > config.time_budget
                if last or over or stop["now"] or (iteration + 1) % config.checkpoint_every == 0:
                    _save(out, theta, config, iteration, wall, keep=True, carry=carry)
                if over or stop["now"]:
                    break
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; the last checkpoint in {out / 'checkpoints'} is whole: resume "
              f"with --resume", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if writer is not None:
            writer.close()
    bar.close()
    return latest


# What a branch may not change: the parameters' shapes and meaning (the policy's layout and
# Meta-SGD's step sizes) and the tasks they were trained on.
BRANCH_FIXED = ("family", "family_overrides", "hidden_sizes", "activation", "learn_inner_lr",
                "init_log_std")


def run_from_checkpoint(source: Union[str, Path], out_dir: Union[str, Path],
                        progress_csv: Optional[Union[str, Path]] = None,
                        changes: Optional[Dict[str, Any]] = None) -> Path:
    """Makes out_dir a run that `train(..., resume=True)` continues from source, a checkpoint
    file (a committed one, say): checkpoints/latest.safetensors (a copy), config.json from the
    checkpoint's metadata, and progress.csv from progress_csv's rows before the checkpoint's
    iteration when given. Refuses a directory that already holds a run. Returns out_dir.

    changes: a branch, settings (TrainConfig fields) that the continued run changes, e.g.
    {"max_kl": 0.01}: it starts from the checkpoint's parameters and iteration count with
    them, and out_dir/branch.json records where it came from. The run is then not the
    checkpoint's run continued; BRANCH_FIXED settings may not change."""
    import shutil
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.safetensors"
    if latest.exists():
        raise ValueError(f"{str(out)!r} already holds a run; --resume without a checkpoint "
                         f"continues it")
    params, info = checkpoint.load(source)
    if "adapted_to" in info:
        raise ValueError(f"{str(source)!r} is a policy adapted to one task, not a training "
                         f"checkpoint")
    try:
        config = TrainConfig.from_dict(info["config"])
        done = int(info["iteration"]) + 1
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(source)!r} is not a training checkpoint (an adapted policy "
                         f"or a foreign file): {exc}") from None
    changed: Dict[str, Any] = {}
    if changes:
        was = config.to_dict()
        config = TrainConfig.from_dict(dict(was, **changes))  # the new settings checked
        now = config.to_dict()
        fixed = [k for k in BRANCH_FIXED if now[k] != was[k]]
        if fixed:
            raise ValueError(f"a branch keeps the checkpoint's {', '.join(fixed)} (the "
                             f"parameters' layout and the tasks: "
                             f"{', '.join(f'{k}={was[k]!r}' for k in fixed)}); it may change "
                             f"the other settings")
        changed = {k: [was[k], v] for k, v in now.items() if was[k] != v}
        if not changed:
            raise ValueError(f"a branch changes settings, but {changes} are the checkpoint's "
                             f"own; without them --resume continues the run")
    if progress_csv is not None:
        rows = _read_rows(Path(progress_csv), below=done)
        if len(rows) != done:
            raise ValueError(f"{str(progress_csv)!r} has {len(rows)} rows before iteration "
                             f"{done}, the checkpoint's; expected {done}")
    latest.parent.mkdir(parents=True, exist_ok=True)
    if changed:
        checkpoint.save(latest, params, dict(info, config=config.to_dict()))
        (out / "branch.json").write_text(json.dumps(
            {"checkpoint": str(source), "iterations_done": done,
             "changed": {k: {"from": a, "to": b} for k, (a, b) in changed.items()}}, indent=2))
    else:
        shutil.copyfile(source, latest)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if progress_csv is not None:
        with open(out / "progress.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return out


def torch_threads_note(saved: Optional[int], now: int) -> Optional[str]:
    """None when a run that trained with `saved` torch threads (None: not recorded) continues
    bit for bit on `now`; else what differs and how to get the same bits. The simulations give
    the same bits at any thread count, but torch splits the learner's reductions and matrix
    products by its thread count: float32 sums in another order differ in the last bits, the
    next batch's trajectories then diverge (the dynamics are chaotic) and so does the run."""
    if saved is None or saved == now:
        return None
    return (f"the run's learner used {saved} torch thread(s), this process has {now}: "
            f"the continuation is deterministic but not bit-identical to the uninterrupted "
            f"run (run with OMP_NUM_THREADS={saved} for that)")


def _save(out: Path, theta: meta.Params, config: TrainConfig, iteration: int, wall: float,
          keep: bool, carry: Optional[np.ndarray] = None) -> None:
    info = {"config": config.to_dict(), "iteration": iteration, "wall_clock": wall,
            "torch_threads": torch.get_num_threads(),
            "baseline_carry": None if carry is None else [float(x) for x in carry],
            "family": config.family, "policy": {
                "hidden_sizes": list(config.hidden_sizes), "activation": config.activation}}
    checkpoint.save(out / "checkpoints" / "latest.safetensors", theta, info)
    if keep:
        checkpoint.save(out / "checkpoints" / f"iter_{iteration + 1:06d}.safetensors", theta,
                        info)


def _check_params(params: Dict[str, torch.Tensor], theta: meta.Params, path: Path) -> None:
    if set(params) != set(theta):
        raise ValueError(f"{str(path)!r} holds parameters {sorted(params)}, the policy has "
                         f"{sorted(theta)}")
    for n, p in theta.items():
        if params[n].shape != p.shape:
            raise ValueError(f"{str(path)!r}: parameter {n} has shape {tuple(params[n].shape)}, "
                             f"the policy needs {tuple(p.shape)}")


def _read_rows(path: Path, below: int) -> List[Dict[str, str]]:
    """Rows of an earlier progress.csv for iterations before below (resume drops the rest)."""
    if below == 0 or not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["iteration"]) < below]


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


# ------------------------------------------------------------------------ loading and evaluation

def load_policy(path: Union[str, Path], family: Optional[str] = None
                ) -> Tuple[GaussianMLPPolicy, TrainConfig, TaskFamily, Dict[str, Any]]:
    """The policy of a checkpoint (a file or a run directory), with its settings and family.
    family, when given, must be the checkpoint's."""
    return _load(path, family)[:4]


def _load(path: Union[str, Path], family: Optional[str] = None
          ) -> Tuple[GaussianMLPPolicy, TrainConfig, TaskFamily, Dict[str, Any],
                     Optional[meta.Params]]:
    """load_policy's results and the checkpoint's learned step sizes (Meta-SGD; None if
    it has none: an adapted policy saved by adapt holds the policy alone)."""
    params, info = checkpoint.load(path)
    params, sizes = meta.split_step_sizes(params)
    try:
        config = TrainConfig.from_dict(info["config"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} has no usable training settings: {exc}") from None
    if family is not None and family != config.family:
        raise ValueError(f"{str(path)!r} is a checkpoint of {config.family}, not {family}")
    fam = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, fam)
    _check_params(params, policy.params(), Path(path))
    if sizes is not None:
        _check_params(sizes, policy.params(), Path(path))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            p.copy_(params[n])
    return policy, config, fam, info, sizes


def adaptation_curve(policy: GaussianMLPPolicy, family: TaskFamily, tasks: Sequence[Task],
                     steps: int, trajectories: int,
                     lr: Union[float, Sequence[float], meta.Params],
                     seed: int, gamma: float = 0.99, gae_lambda: float = 1.0,
                     threads: int = 0, baseline_fit: str = "current", device: str = "cpu",
                     first_stream: int = 0, update: Optional[meta.InnerUpdate] = None
                     ) -> Tuple[np.ndarray, List[Dict[str, torch.Tensor]]]:
    """Mean return per task after 0..steps vanilla policy-gradient steps: (steps + 1, M), and
    the adapted parameters of each task after the last step (on the CPU). lr: the step size
    of each step (a sequence; the last repeats), or one for all, or learned per-entry step
    sizes (a dict of tensors shaped as the policy's parameters) for every step. device: where
    the adaptation steps run (sampling is on CPU threads). first_stream: the random stream of
    the first simulation (tasks that are a shard of a larger set, see BatchSim). update: what
    each step does with its batch (meta.InnerUpdate; default one policy-gradient step)."""
    where = device_module.resolve(device)
    _check_baseline_fit(baseline_fit)
    checks.NONNEGATIVE_INT.check(steps, "steps")
    checks.COUNT.check(trajectories, "trajectories")
    lrs = [lr] * steps if isinstance(lr, (int, float, dict)) else list(lr)
    if not isinstance(lr, dict):
        if not lrs and steps:
            raise ValueError("lr should hold at least one step size, got none")
        for value in lrs:
            checks.STEP_SIZE.check(value, "lr (adaptation step size)")
    if len(lrs) < steps:
        lrs += [lrs[-1]] * (steps - len(lrs))
    spec = meta.PolicySpec(policy.nlayers, policy.activation)
    theta = {k: v.detach() for k, v in policy.params().items()}
    if isinstance(lr, dict):
        lrs = [{k: v.to(where) for k, v in lr.items()}] * steps
    theta_dev = {k: v.to(where) for k, v in theta.items()}
    sim = BatchSim(family, tasks, trajectories, seed=seed, num_threads=threads,
                   first_stream=first_stream)
    ntask = len(tasks)
    returns = []
    current: Any = theta
    adapted: Optional[meta.Params] = None
    carry, prior = _baseline_start(baseline_fit, ntask, sim.observation_dim)
    for step in range(steps + 1):
        traj = sim.rollout(policy, params=current)
        batch = meta.process(traj, ntask, gamma, gae_lambda, carry=carry, prior=prior)
        carry, prior = _baseline_next(baseline_fit, batch)
        returns.append(batch.returns.numpy())
        if step < steps:
            source = theta_dev if adapted is None else adapted
            adapted = (update or meta.InnerUpdate()).step(
                spec, source, device_module.to_device(batch, where), lrs[step],
                adapted is not None)
            current = _per_task_params(device_module.params_to_cpu(adapted)
                                       if where.type != "cpu" else adapted, ntask)
    per_task = current if isinstance(current, list) else [theta] * ntask
    return np.stack(returns), per_task


def evaluate(path: Union[str, Path], tasks: int = 40, steps: int = 3, seed: int = 0,
             trajectories: Optional[int] = None,
             lr: Optional[Union[float, Sequence[float]]] = None,
             json_path: Optional[Union[str, Path]] = None,
             plot_path: Optional[Union[str, Path]] = None, threads: int = 0,
             baseline_fit: Optional[str] = None, device: str = "cpu",
             cluster: str = "local", ray_address: Optional[str] = None, workers: int = 1,
             threads_per_worker: int = 1) -> Dict[str, Any]:
    """Held-out evaluation of a checkpoint: tasks drawn from a stream disjoint from training's,
    mean return and standard error over tasks after 0..steps adaptation steps. lr: the step
    size of each step (the last repeats); the default is a Meta-SGD checkpoint's learned step
    sizes, else for Reptile its training inner step size at every step, else the MAML
    paper's evaluation, 0.1 for the first step and 0.05 after (its VPG's initial step, then
    half). baseline_fit: the
    advantages' baseline order (see TrainConfig.baseline_fit); default the checkpoint's
    training order; 'fresh' is the order of the paper's evaluation script. device: where the
    adaptation steps run (cpu, cuda, auto). cluster, ray_address, workers, threads_per_worker:
    as TrainConfig's; on a cluster the tasks are split over the workers, with the same
    results."""
    checks.COUNT.check(tasks, "tasks")
    checks.NONNEGATIVE_INT.check(steps, "steps")
    checks.SEED.check(seed, "seed")
    checks.optional(checks.COUNT, trajectories, "trajectories")
    checks.NONNEGATIVE_INT.check(threads, "threads")
    device_module.resolve(device)
    if lr is not None:
        values = [lr] if isinstance(lr, (int, float)) else list(lr)
        if not values:
            raise ValueError("lr should hold at least one step size, got none")
        for value in values:
            checks.STEP_SIZE.check(value, "lr (adaptation step size)")
    policy, config, family, info, sizes = _load(path)
    baseline_fit = config.baseline_fit if baseline_fit is None else baseline_fit
    step_sizes: Any = lr if lr is not None else (
        sizes if sizes is not None else
        # Reptile adapts as it trained: its inner update at every step
        (config.inner_lr,) if config.algo == "reptile" else (0.1, 0.05))
    held_out = family.sample_tasks(tasks, _seed(seed, EVAL_STREAM, 0))
    k = trajectories if trajectories is not None else (40 if config.family == "AntDir" else 20)
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster should be one of {CLUSTERS}, got {cluster!r}")
    if cluster == "local":
        if (workers, ray_address) != (1, None):
            raise ValueError("workers and ray_address need cluster 'ray'")
        curve, _ = adaptation_curve(policy, family, held_out, steps, k, step_sizes,
                                    _seed(seed, EVAL_STREAM, 1), config.gamma,
                                    config.gae_lambda, threads, baseline_fit, device,
                                    update=config.inner_rule)
    else:
        on = TrainConfig.from_dict(dict(config.to_dict(), device=device, cluster=cluster,
                                        ray_address=ray_address, workers=1,
                                        threads_per_worker=threads_per_worker))
        on.workers = int(checks.COUNT.check(workers, "workers"))
        from .cluster import RayWorkers
        with RayWorkers(on, training=False) as pool:
            theta = {n: p.detach() for n, p in policy.params().items()}
            curve, _ = pool.curves(theta, held_out, steps, k, step_sizes,
                                   _seed(seed, EVAL_STREAM, 1), baseline_fit)
    mean = curve.mean(1)
    stderr = curve.std(1, ddof=1) / math.sqrt(tasks) if tasks > 1 else np.zeros_like(mean)
    result = {"family": config.family, "checkpoint": str(path),
              "iteration": int(info.get("iteration", -1)) + 1, "tasks": tasks,
              "trajectories_per_task": k, "baseline_fit": baseline_fit,
              "step_sizes": "learned" if isinstance(step_sizes, dict) else
              ([float(step_sizes)] if isinstance(step_sizes, (int, float))
               else [float(x) for x in step_sizes]),
              "steps": list(range(steps + 1)),
              "mean_return": [float(x) for x in mean], "stderr": [float(x) for x in stderr],
              "per_task": curve.T.tolist(), "held_out_tasks": [t.as_dict() for t in held_out]}
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
    if plot_path is not None:
        plot_adaptation(result, plot_path)
    return result


def plot_adaptation(result: Dict[str, Any], path: Union[str, Path]) -> None:
    """A PNG of mean return against adaptation steps, with standard errors."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.errorbar(result["steps"], result["mean_return"], yerr=result["stderr"], marker="o",
                capsize=3, label="metarobot")
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return")
    ax.set_title(f"{result['family']}: {result['tasks']} held-out tasks")
    ax.set_xticks(result["steps"])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    plt.close(fig)


def adapt_to_task(path: Union[str, Path], task: Union[Task, Dict[str, float]], steps: int = 1,
                  trajectories: int = 20, lr: Optional[float] = None, seed: int = 0,
                  out: Optional[Union[str, Path]] = None, threads: int = 0,
                  device: str = "cpu") -> Tuple[Dict[str, torch.Tensor], List[float]]:
    """Adapts a checkpoint's policy to one task; returns the adapted parameters and the mean
    return after 0..steps steps, and saves them as a checkpoint at out when given. lr: the
    step size; default the checkpoint's learned step sizes (Meta-SGD), else 0.1."""
    checks.COUNT.check(steps, "steps")
    checks.COUNT.check(trajectories, "trajectories")
    checks.optional(checks.STEP_SIZE, lr, "lr (adaptation step size)")
    checks.SEED.check(seed, "seed")
    checks.NONNEGATIVE_INT.check(threads, "threads")
    device_module.resolve(device)
    policy, config, family, info, sizes = _load(path)
    step_sizes: Any = lr if lr is not None else (
        sizes if sizes is not None else config.inner_lr if config.algo == "reptile" else 0.1)
    if isinstance(task, dict):
        task = family.task(**task)
    family.check_task(task)
    curve, per_task = adaptation_curve(policy, family, [task], steps, trajectories, step_sizes,
                                       _seed(seed, ADAPT_STREAM, 0), config.gamma,
                                       config.gae_lambda, threads, config.baseline_fit,
                                       device, update=config.inner_rule)
    adapted = per_task[0]
    if out is not None:
        info = dict(info, adapted_to=task.as_dict(), adaptation_steps=steps,
                    adaptation_returns=[float(x) for x in curve[:, 0]])
        checkpoint.save(out, adapted, info)
    return adapted, [float(x) for x in curve[:, 0]]
