"""Meta-training: the driver of a meta-iteration and the training loop, the main job of
metarobot.

    config = TrainConfig(family="HalfCheetahDir", algo="maml-trpo")
    train(config, "runs/cheetah-dir")     # checkpoints, progress.csv, TensorBoard
    train(config, "runs/cheetah-dir", resume=True)   # continues where it stopped

Every iteration draws its tasks and simulation seeds from (seed, iteration) alone, and the
learner's arithmetic does not depend on the threads or workers that compute it, so a run
resumed from a checkpoint, on this machine or another with the same versions and CPU
architecture, continues exactly as the uninterrupted run would have. The per-task work is
the workers' (metarobot.workers, on Ray: metarobot.cluster); this module holds the
parameters, takes the outer step and writes the run (metarobot.runs). The non-meta baselines
(algo trpo and ppo, domain randomisation) run through the same loop: their workers take no
adaptation steps (TrainConfig.train_inner_steps), so trpo's outer step is TRPO's on the
batch sampled with theta, and ppo's the epochs of Adam steps of metarobot.ppo.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from . import checkpoint, meta, ppo, trpo
from . import device as device_module
from .cluster import make_workers
from .config import VALUE_INIT_STREAM, TrainConfig, make_policy, stream_seed
from .families import TaskFamily, make_family
from .policy import GaussianMLPPolicy
from .progress import Progress
from .runs import (PROGRESS_FIELDS, check_params, load_policy, read_rows, resumed_config,
                   save_checkpoint)
from .workers import InProcessWorkers, WorkerSet


@dataclasses.dataclass
class IterationResult:
    """What a meta-iteration measured: the mean return over tasks before and after
    adaptation (equal for trpo: it does not adapt in training), seconds per phase, the outer
    step's numbers (kl, backtracks, ...) and the baseline carry into the next iteration."""

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
    if config.learn_inner_lr != (meta.split_step_sizes(theta)[1] is not None):
        raise ValueError("theta should hold step sizes exactly when learn_inner_lr is set")
    own = workers is None
    if workers is None:
        workers = InProcessWorkers(config, family, policy)
    try:
        # the learner's arithmetic on one thread per chunk (and the driver's on one): the
        # same bits at any core count and any number of workers
        with device_module.single_threaded():
            return _iteration(config, theta, iteration, carry, report, workers)
    finally:
        if own:
            workers.close()


def _iteration(config: TrainConfig, theta: meta.Params, iteration: int,
               carry: Optional[np.ndarray], report: Optional[Callable[[str], None]],
               workers: WorkerSet) -> Tuple[meta.Params, IterationResult]:
    say = report or (lambda text: None)
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
    if config.algo == "ppo":
        new_theta, info = ppo.update(theta, config.ppo_settings, workers.ppo_gradient,
                                     report=lambda text: say(f"ppo update: {text}"))
        times["outer"] += time.perf_counter() - t0
        return new_theta, IterationResult(pre_return, post_return, times, info, sampled.carry)

    # The outer step's losses, gradients and Fisher products are means over tasks: the
    # workers compute them per chunk of tasks (sharding.chunk_bounds), summed with weights
    # (tasks in the chunk) / (all tasks) in the meta-batch's chunk order. For trpo they are
    # those of the batch sampled with theta itself (no adaptation in between).
    product: Callable[[meta.Params], meta.Params] = workers.fisher_product
    if config.hessian == "finite-difference":
        product = trpo.finite_difference_product(workers.kl_gradient,
                                                 {n: theta[n] for n in sorted(theta)})
    new_theta, step = trpo.trpo_step(
        theta, lambda p: workers.loss_kl(p)[0], lambda p: workers.loss_kl(p)[1],
        config.kl_bound, config.cg_iters, config.cg_damping,
        max_backtracks=config.max_backtracks, hessian_product=product,
        loss_kl_fn=workers.loss_kl, grad_fn=workers.gradient,
        report=lambda text: say(f"outer step: {text}"),
        cuda_graph=config.cuda_graphs and workers.local)
    times["outer"] += time.perf_counter() - t0
    info.update(kl=step.kl, backtracks=step.backtracks, accepted=float(step.accepted),
                surrogate_before=step.surrogate_before, surrogate_after=step.surrogate_after)
    return new_theta, IterationResult(pre_return, post_return, times, info, sampled.carry)


def initial_theta(config: TrainConfig, family: TaskFamily,
                  policy: GaussianMLPPolicy) -> meta.Params:
    """What a run's first iteration starts from, on the CPU: the policy's parameters, and
    with them Meta-SGD's step sizes (learn_inner_lr) or ppo's value function and optimiser
    state (saved with the policy)."""
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    if config.learn_inner_lr:
        theta.update(meta.initial_step_sizes(theta, config.inner_lr))
    if config.algo == "ppo":
        theta.update(ppo.initial_state(policy, theta, config.ppo_lr,
                                       stream_seed(config.seed, VALUE_INIT_STREAM),
                                       ppo.critic_dim(family, policy.obs_dim)))
    return theta


def train(config: TrainConfig, out_dir: Union[str, Path], resume: bool = False,
          progress: bool = True) -> Path:
    """Meta-trains a policy; returns the path of the final checkpoint.

    out_dir receives config.json, progress.csv, TensorBoard events (when tensorboard is
    installed) and checkpoints/ (latest.safetensors and one per checkpoint_every iterations).
    resume continues from out_dir's latest checkpoint with its saved settings (config may
    change only runs.RESUME_MAY_CHANGE; see runs.resumed_config). Raises ValueError before
    writing anything when this machine lacks the device or cluster config names.
    """
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.safetensors"
    start, wall0 = 0, 0.0
    carry = None
    if resume:
        params, info = checkpoint.load(latest)
        config = resumed_config(TrainConfig.from_dict(info["config"]), config.to_dict())
        start = int(info["iteration"]) + 1
        wall0 = float(info.get("wall_clock", 0.0))
        carry = info.get("baseline_carry")
    elif latest.exists():
        raise ValueError(f"{str(out)!r} already holds a run; resume it (--resume) or choose "
                         f"another directory")
    family = make_family(config.family, **config.family_overrides)
    digest = family.model_digest()
    if resume and info.get("model_digest") not in (None, digest):
        print(f"warning: {config.family}'s model ({family.model_path}) is not the one this run "
              f"was trained on (model digest {digest}, the checkpoint's "
              f"{info['model_digest']}): the run continues on the model as it is now",
              file=sys.stderr)
    policy = make_policy(config, family)
    theta = initial_theta(config, family, policy)
    names = sorted(theta)
    if resume:
        check_params(params, theta, latest)
        theta = {n: params[n].clone() for n in names}
    elif config.init is not None:
        # the run starts from another run's policy (its step sizes, if any, are not taken)
        initial = load_policy(config.init).policy.params()
        check_params(initial, {n: p for n, p in policy.params().items()}, Path(config.init))
        theta.update({n: p.detach().clone() for n, p in initial.items()})
    device = device_module.resolve(config.device)
    if device.type != "cpu":
        theta = {n: v.to(device) for n, v in theta.items()}
    # connected and started before anything is written: a cluster that cannot be used
    # fails here
    workers = make_workers(config, family, policy)
    try:
        return _train_loop(config, out, family, policy, theta, workers, start, wall0, carry,
                           resume, progress, digest)
    finally:
        workers.close()


def _train_loop(config: TrainConfig, out: Path, family: TaskFamily,
                policy: GaussianMLPPolicy, theta: meta.Params, workers: WorkerSet, start: int,
                wall0: float, carry: Optional[np.ndarray], resume: bool, progress: bool,
                digest: str) -> Path:
    latest = out / "checkpoints" / "latest.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    csv_path = out / "progress.csv"
    rows = read_rows(csv_path, below=start)
    writer = _tensorboard(out)
    bar = Progress(config.iterations, start, progress)
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
            w = csv.DictWriter(f, fieldnames=PROGRESS_FIELDS)
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
                # the simulations read the model file anew: an edit takes effect mid-run
                try:
                    now = family.model_digest()
                except ValueError as exc:  # half-written or gone: the checkpoint comes first
                    now = digest
                    bar.close()
                    print(f"warning: cannot read {config.family}'s model now: {exc}",
                          file=sys.stderr)
                if now != digest:
                    bar.close()
                    print(f"warning: {config.family}'s model ({family.model_path}) changed "
                          f"during the run (model digest {digest} -> {now}): iterations from "
                          f"{iteration + 2} on use the new one", file=sys.stderr)
                    digest = now
                last = iteration + 1 == config.iterations
                over = config.time_budget is not None and \
                    time.perf_counter() - t_start > config.time_budget
                if last or over or stop["now"] or (iteration + 1) % config.checkpoint_every == 0:
                    save_checkpoint(out, theta, config, iteration, wall, keep=True, carry=carry,
                                    model_digest=digest)
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


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
