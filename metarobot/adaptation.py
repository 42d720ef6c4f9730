"""Adaptation: sample with the policy, compute advantages, take an inner step, sample again.
The one loop behind training's sampling round, held-out evaluation, one-task adaptation and
the robot, and the one rule for the step sizes they use.

    sizes = step_sizes(config)                    # (0.1, 0.05) for a MAML checkpoint
    result = sample_and_adapt(sim, policy, theta, ntask, steps=1, lrs=expand(sizes, 1), ...)
    result.returns                                # (steps + 1, M) mean return per task
    curve = adaptation_curve(policy, family, tasks, steps=3, trajectories=20, lr=sizes, seed=1)
    curve.returns, curve.measures["tracking_error"]   # (steps + 1, M) each
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import checks
from . import device as device_module
from .batch import BatchSim
from .config import TrainConfig
from .executors import ChunkExecutors, cpu_count
from .families import Task, TaskFamily
from .meta import InnerUpdate, Params, PolicySpec, for_each_task, record_sampling
from .policy import GaussianMLPPolicy
from .samples import (TaskBatch, baseline_next, baseline_start, check_baseline_fit,
                      chunk_ranges, concat_tasks, episode_measures, per_task_params, process,
                      task_slice,
                      trajectory_tasks)

# Step sizes of the adaptation: one per step (the last repeats for later steps), or
# Meta-SGD's learned per-entry step sizes (a dict shaped as the policy's parameters).
StepSizes = Union[Tuple[float, ...], Params]


def step_sizes(config: TrainConfig, learned: Optional[Params] = None,
               lr: Optional[Union[float, Sequence[float]]] = None) -> StepSizes:
    """The adaptation step sizes of a checkpoint, the one rule that evaluate, adapt and the
    robot follow: lr when given (one for every step, or one per step); else the learned
    step sizes of a Meta-SGD checkpoint; else for Reptile its training inner step size at
    every step (it adapts as it trained); else MAML's training step size for the first step
    and half of it after, as the MAML paper's evaluation did (0.1 then 0.05). A trpo
    checkpoint (domain randomisation, no adaptation in training) takes MAML's rule, so that
    its adaptation is the one a MAML checkpoint of the same inner_lr gets."""
    if lr is not None:
        return given_step_sizes(lr)
    if learned is not None:
        return learned
    if config.algo == "reptile":
        return (config.inner_lr,)
    return (config.inner_lr, config.inner_lr / 2)


def given_step_sizes(lr: Union[float, Sequence[float]]) -> Tuple[float, ...]:
    """Step sizes given by a user, checked: one for every step, or one per step."""
    values = (lr,) if isinstance(lr, (int, float)) else tuple(lr)
    if not values:
        raise ValueError("lr should hold at least one step size, got none")
    return tuple(checks.STEP_SIZE.check(v, "lr (adaptation step size)") for v in values)


def expand(sizes: StepSizes, steps: int) -> List[Union[float, Params]]:
    """The step size of each of `steps` steps (a tuple's last entry repeats)."""
    if isinstance(sizes, dict):
        return [sizes] * steps
    if not sizes and steps:
        raise ValueError("lr should hold at least one step size, got none")
    return [sizes[min(j, len(sizes) - 1)] for j in range(steps)]


@dataclasses.dataclass
class Adaptation:
    """What sample_and_adapt measured and kept.

    returns: (steps + 1, M) float64, mean undiscounted return per task after 0..steps steps;
    batches: the steps + 1 batches on the learner's device (batch j sampled with the
    parameters after j steps; empty unless kept); adapted: (M, ...) per entry, the
    parameters that sampled each task's last batch, on the device: after the last step, or
    theta itself for every task after 0 steps (expanded views); per_task: the same as one
    CPU dict per task; times: seconds per phase (sampling, returns, inner); carry: the
    baseline carry after the last batch ('previous'); measures: by name, (steps + 1, M)
    per task after 0..steps steps: the family's metrics and, for families whose episodes can
    terminate, terminations per minute (samples.episode_measures)."""

    returns: np.ndarray
    batches: List[TaskBatch]
    adapted: Params
    per_task: List[Dict[str, torch.Tensor]]
    times: Dict[str, float]
    carry: Optional[np.ndarray]
    measures: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Curve:
    """An adaptation curve: returns (steps + 1, M) mean return per task after 0..steps
    steps; measures by name, (steps + 1, M) each (Adaptation.measures); per_task: the
    adapted parameters of each task after the last step, on the CPU."""

    returns: np.ndarray
    measures: Dict[str, np.ndarray]
    per_task: List[Dict[str, torch.Tensor]]

    @staticmethod
    def join(parts: Sequence["Curve"]) -> "Curve":
        """Curves of consecutive task sets as one."""
        return Curve(np.concatenate([p.returns for p in parts], axis=1),
                     {k: np.concatenate([p.measures[k] for p in parts], axis=1)
                      for k in parts[0].measures},
                     [x for p in parts for x in p.per_task])


def sample_and_adapt(sim: BatchSim, policy: GaussianMLPPolicy, theta: Params, ntask: int,
                     steps: int, lrs: Sequence[Union[float, Params]], *,
                     update: InnerUpdate, gamma: float, gae_lambda: float,
                     baseline_fit: str, device: torch.device,
                     carry: Optional[np.ndarray] = None, objective: str = "pg",
                     keep_batches: bool = False,
                     chunks: Optional[Sequence[Tuple[int, int]]] = None,
                     run: Optional[Callable[[Callable[[Any], Any], Sequence[Any]], List[Any]]]
                     = None,
                     report: Optional[Callable[[str], None]] = None,
                     value_fn: Optional[Callable[..., Any]] = None) -> Adaptation:
    """Samples sim's tasks with theta (the policy's parameters on `device`), then `steps`
    times: advantages, one adaptation step (update's) of lrs[j] per task, sampling with the
    adapted policies. Sampling runs on CPU threads; each batch goes to the device once.
    carry: the baseline carry into the first task ('previous'). objective 'lvc' records
    the sampling policy's log-probabilities in each batch before its step (the data of that
    loss). chunks: task ranges whose advantages and adaptation steps are computed apart,
    mapped by run (a ChunkExecutors' map) side by side; each task's numbers are the same as
    in one batch of all (a task's computation uses its own data alone; not with baseline_fit
    'previous', which chains the tasks). report hears of each phase as it starts.
    value_fn: a learned value function for the advantages instead of the linear baseline
    (samples.process; PPO's, which takes no adaptation steps)."""
    say = report or (lambda text: None)
    check_baseline_fit(baseline_fit)
    if len(lrs) < steps:
        raise ValueError(f"{steps} adaptation steps need {steps} step sizes, got {len(lrs)}")
    spec = PolicySpec(policy.nlayers, policy.activation)
    on_cpu = device.type == "cpu"
    split = chunks is not None and len(chunks) > 1 and baseline_fit != "previous"
    each = run or (lambda fn, items: [fn(x) for x in items])
    # the inner steps' chunks on a GPU: one after the other on the caller's stream
    step_each = each if on_cpu else (lambda fn, items: [fn(x) for x in items])
    per_task = sim.num_envs // ntask

    def advantages(traj: Any, carry: Optional[np.ndarray],
                   prior: Optional[np.ndarray]) -> TaskBatch:
        if not split:
            return process(traj, ntask, gamma, gae_lambda, carry=carry, prior=prior,
                           value_fn=value_fn)
        return concat_tasks(each(lambda c: process(
            trajectory_tasks(traj, c[0], c[1], per_task), c[1] - c[0], gamma, gae_lambda,
            prior=None if prior is None else prior[c[0]:c[1]], value_fn=value_fn), chunks))

    def adaptation_step(source: Params, batch: TaskBatch, lr: Any, batched: bool) -> Params:
        if not split:
            return update.step(spec, source, batch, lr, batched, objective)
        parts = step_each(lambda c: update.step(
            spec, {k: v[c[0]:c[1]] for k, v in source.items()} if batched else source,
            task_slice(batch, c[0], c[1]), lr, batched, objective), chunks)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    sampling: Any = theta if on_cpu else device_module.params_to_cpu(theta)
    times = {"sampling": 0.0, "returns": 0.0, "inner": 0.0}
    returns: List[np.ndarray] = []
    measured: List[Dict[str, np.ndarray]] = []
    names = [t.name for t in sim.family.metrics]
    step_seconds = sim.family.frame_skip * sim.models[0].opt.timestep
    terminations = bool(sim.family.termination)
    batches: List[TaskBatch] = []
    adapted: Optional[Params] = None  # None: no step taken yet, theta samples
    carry, prior = baseline_start(baseline_fit, ntask, sim.observation_dim, carry)
    for step in range(steps + 1):
        say(f"sampling (adaptation step {step + 1}/{steps})" if step < steps
            else "sampling the adapted policies" if steps else "sampling")
        t0 = time.perf_counter()
        traj = sim.rollout(policy, params=sampling)
        measured.append(episode_measures(traj, ntask, names, step_seconds, terminations))
        t1 = time.perf_counter()
        say("advantages")
        batch = device_module.to_device(advantages(traj, carry, prior), device)
        if objective == "lvc" and step < steps:
            # the sampling policy's log-probabilities: constants of the 'lvc' loss
            record_sampling(spec, theta if adapted is None else adapted, batch,
                            batched=adapted is not None)
        carry, prior = baseline_next(baseline_fit, batch)
        returns.append(batch.returns.numpy())
        if keep_batches:
            batches.append(batch)
        t2 = time.perf_counter()
        times["sampling"] += t1 - t0
        times["returns"] += t2 - t1
        if step == steps:
            break
        say("inner step")
        # the values of the adapted parameters, for sampling; training's outer step
        # differentiates through the adaptation itself
        source = theta if adapted is None else adapted
        adapted = adaptation_step(source, batch, lrs[step], adapted is not None)
        sampling = per_task_params(adapted if on_cpu else device_module.params_to_cpu(adapted),
                                   ntask)
        times["inner"] += time.perf_counter() - t2
    per_task = sampling if isinstance(sampling, list) else [sampling] * ntask
    if adapted is None:  # no steps: theta sampled every task's (only) batch
        adapted = for_each_task(theta, ntask)
    measures = {k: np.stack([m[k] for m in measured]) for k in measured[0]}
    return Adaptation(np.stack(returns), batches, adapted, per_task, times, carry, measures)


def adaptation_curve(policy: GaussianMLPPolicy, family: TaskFamily, tasks: Sequence[Task],
                     steps: int, trajectories: int, lr: Union[float, StepSizes], seed: int, *,
                     gamma: float = 0.99, gae_lambda: float = 1.0, threads: int = 0,
                     baseline_fit: str = "current", device: str = "cpu",
                     first_stream: int = 0, update: Optional[InnerUpdate] = None) -> Curve:
    """Mean return per task after 0..steps adaptation steps (steps + 1, M), the family's
    measures after each (Curve.measures), and the adapted parameters of each task after the
    last step (on the CPU). lr: one step size for every
    step, a sequence (the last repeats), or learned per-entry step sizes (see step_sizes).
    seed: the simulations' seed; first_stream: the random stream of the first simulation
    (tasks that are a shard of a larger set, see BatchSim). device: where the adaptation
    steps run (sampling is on CPU threads). update: what each step does with its batch
    (default one policy-gradient step)."""
    where = device_module.resolve(device)
    check_baseline_fit(baseline_fit)
    checks.NONNEGATIVE_INT.check(steps, "steps")
    checks.COUNT.check(trajectories, "trajectories")
    if isinstance(lr, dict):
        sizes: StepSizes = {k: v.to(where) for k, v in lr.items()}
    else:
        sizes = given_step_sizes(lr)
    theta = {k: v.detach().to(where) for k, v in policy.params().items()}
    sim = BatchSim(family, tasks, trajectories, seed=seed, num_threads=threads,
                   first_stream=first_stream)
    # each task's numbers do not depend on the chunks it is computed in: cut them for speed,
    # at training's default chunk size
    chunks = chunk_ranges(len(tasks), family.horizon * trajectories,
                          TrainConfig.chunk_samples) \
        if where.type == "cpu" else None
    executors = ChunkExecutors(threads or cpu_count())
    try:
        with device_module.single_threaded():  # the same bits at any core count
            result = sample_and_adapt(sim, policy, theta, len(tasks), steps,
                                      expand(sizes, steps), update=update or InnerUpdate(),
                                      gamma=gamma, gae_lambda=gae_lambda,
                                      baseline_fit=baseline_fit, device=where, chunks=chunks,
                                      run=executors.map)
    finally:
        executors.close()
    return Curve(result.returns, result.measures, result.per_task)
