"""Sampled batches as the learner sees them: a rollout's trajectories -> advantages with the
linear feature baseline refit per task -> a TaskBatch of (tasks, samples, ...) tensors.

    batch = process(traj, ntask, gamma=0.99, gae_lambda=1.0)   # TaskBatch
    batch.obs.shape                                # (M, T x k, obs_dim) float32
    carry, prior = baseline_start("current", ntask, obs_dim)  # the baseline order's inputs

A TaskBatch holds the samples of M tasks as (M, S, ...) tensors, S = steps x trajectories per
task, with a validity mask; every loss is a masked mean per task, averaged over tasks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .baseline import fit_linear_baseline
from .batch import Trajectories
from .returns import discounted_returns, gae

Params = Dict[str, torch.Tensor]
BASELINE_FITS = ("current", "previous", "fresh")
# A meta-batch is cut into at least min(tasks, MIN_CHUNKS) chunks, whatever their samples:
# a meta-batch of up to MIN_CHUNKS tasks has a chunk per task, so that any number of workers
# up to its task count can share it (a shard holds whole chunks) with the same results.
MIN_CHUNKS = 16


@dataclasses.dataclass
class TaskBatch:
    """Samples of M tasks: (M, S, ...) float32 tensors; mask (M, S) 1.0 where valid."""

    obs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    returns: torch.Tensor          # (M,) mean undiscounted return per trajectory, per task
    horizon: int = 1               # T: S = T x trajectories per task, time-major within a task
    baseline_coeffs: Optional[np.ndarray] = None  # (M, F) every task's own baseline fit
    old_log_prob: Optional[torch.Tensor] = None  # (M, S) under the sampling policy
    old_mean: Optional[torch.Tensor] = None      # (M, S, act_dim)
    old_log_std: Optional[torch.Tensor] = None   # (M, act_dim)
    old_values: Optional[torch.Tensor] = None    # (M, S) a learned value function's V(s)
    value_targets: Optional[torch.Tensor] = None  # (M, S) its GAE targets (advantage + V)
    critic_obs: Optional[torch.Tensor] = None    # (M, S, F) its inputs

    @property
    def baseline_carry(self) -> Optional[np.ndarray]:
        """The last task's baseline coefficients (F,): the carry of the next batch."""
        return None if self.baseline_coeffs is None else self.baseline_coeffs[-1].copy()


def _per_task(x: np.ndarray, ntask: int) -> torch.Tensor:
    """(T, N, ...) time-major, simulation i of task i // k, -> (M, T * k, ...)."""
    T, N = x.shape[:2]
    k = N // ntask
    y = x.reshape(T, ntask, k, *x.shape[2:])
    y = np.moveaxis(y, 1, 0).reshape(ntask, T * k, *x.shape[2:])
    return torch.from_numpy(np.ascontiguousarray(y))


def process(traj: Trajectories, ntask: int, gamma: float, gae_lambda: float,
            normalize: bool = True, carry: Optional[np.ndarray] = None,
            prior: Optional[np.ndarray] = None,
            value_fn: Optional[Callable[[Trajectories], Tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]]] = None
            ) -> TaskBatch:
    """Advantages of a rollout with the linear feature baseline refit per task (as the MAML
    paper's code): discounted returns, baseline values, GAE with no bootstrap past an episode's
    end, advantages normalised per task. carry and prior: see baseline.fit_linear_baseline; the
    batch's baseline_carry is then the carry of the next batch, its baseline_coeffs the prior
    of the same tasks' next batch.

    value_fn: a learned value function instead (PPO's critic), traj -> (values (T, N) at
    each step's state, values (N,) at the final observations, the critic's inputs (T, N, F)):
    GAE bootstraps with it where an episode was cut at the horizon (from the state it was
    cut at) and not where it ended in a terminal state; the batch then holds the values
    (old_values), the value targets (advantages + values, before the normalisation) and the
    critic's inputs (critic_obs)."""
    if value_fn is not None:
        return _process_with_values(traj, ntask, gamma, gae_lambda, normalize, value_fn)
    valid = traj.valid
    rewards = np.where(valid, traj.rewards, 0.0).astype(np.float64)
    ended = traj.terminated | traj.truncated | ~valid
    returns = discounted_returns(rewards, ended, gamma)
    T, N = rewards.shape
    k = N // ntask
    # time index of each step within its episode: every episode starts at t = 0
    t_index = np.broadcast_to(np.arange(T, dtype=np.float64)[:, None], (T, N))
    values, own = fit_linear_baseline(traj.observations, t_index, returns, valid, ntask,
                                      carry=carry, prior=prior, return_all=True)
    next_values = np.zeros_like(values)
    next_values[:-1] = values[1:]
    # the paper's code ends every path at a zero value, truncated or not
    adv = gae(rewards, values, next_values, ended, ended, gamma, gae_lambda)
    return _batch(traj, ntask, adv, normalize, baseline_coeffs=own)


def _normalized(adv_t: torch.Tensor, mask_t: torch.Tensor) -> torch.Tensor:
    """Advantages (M, S) centred and scaled per task over its valid samples."""
    count = mask_t.sum(1, keepdim=True).clamp_min(1.0)
    mean = (adv_t * mask_t).sum(1, keepdim=True) / count
    var = (((adv_t - mean) * mask_t) ** 2).sum(1, keepdim=True) / count
    return (adv_t - mean) / (var.sqrt() + 1e-8) * mask_t


def _batch(traj: Trajectories, ntask: int, adv: np.ndarray, normalize: bool,
           **extra: Any) -> TaskBatch:
    """The TaskBatch of a rollout with advantages adv (T, N)."""
    T, N = traj.valid.shape
    k = N // ntask
    mask_t = _per_task(traj.valid.astype(np.float32), ntask)
    adv_t = _per_task(adv.astype(np.float32), ntask)
    if normalize:
        adv_t = _normalized(adv_t, mask_t)
    ep_returns = np.where(traj.valid, traj.rewards, 0.0).sum(0).reshape(ntask, k).mean(1)
    return TaskBatch(obs=_per_task(traj.observations, ntask),
                     actions=_per_task(traj.actions, ntask),
                     advantages=adv_t, mask=mask_t,
                     returns=torch.from_numpy(ep_returns.astype(np.float64)), horizon=T,
                     **extra)


def _process_with_values(traj: Trajectories, ntask: int, gamma: float, gae_lambda: float,
                         normalize: bool, value_fn: Callable[..., Any]) -> TaskBatch:
    """process with a learned value function (see process)."""
    valid = traj.valid
    T, N = valid.shape
    rewards = np.where(valid, traj.rewards, 0.0).astype(np.float64)
    ended = traj.terminated | traj.truncated | ~valid
    step_values, final_values, critic_obs = value_fn(traj)
    values = np.where(valid, np.asarray(step_values, np.float64), 0.0)
    next_values = np.zeros_like(values)
    next_values[:-1] = values[1:]
    # the step an episode was cut at looks ahead to the observation it was cut at (a
    # terminal step's next value is never read: it does not bootstrap)
    last = np.clip(traj.lengths.astype(np.int64) - 1, 0, T - 1)
    cols = np.arange(N)
    cut = traj.truncated[last, cols] & valid[last, cols]
    final = np.asarray(final_values, np.float64)
    next_values[last[cut], cols[cut]] = final[cut]
    terminal = traj.terminated | ~valid
    adv = gae(rewards, values, next_values, ended, terminal, gamma, gae_lambda)
    targets = np.where(valid, adv + values, 0.0)
    return _batch(traj, ntask, adv, normalize,
                  old_values=_per_task(values.astype(np.float32), ntask),
                  value_targets=_per_task(targets.astype(np.float32), ntask),
                  critic_obs=_per_task(np.ascontiguousarray(critic_obs, np.float32), ntask))


TERMINATIONS = "terminations_per_minute"


def episode_measures(traj: Trajectories, ntask: int, names: Sequence[str],
                     step_seconds: float, terminations: bool) -> Dict[str, np.ndarray]:
    """Per task (M,): the mean of each of the family's metrics (names, traj.metrics' last
    axis) over the valid steps of the task's simulations, and with terminations, the episodes
    that ended in a terminal state (a fall, for a legged robot) per minute of simulated time
    (step_seconds per step)."""
    T, N = traj.valid.shape
    valid = traj.valid.reshape(T, ntask, N // ntask)
    steps = valid.sum(axis=(0, 2)).astype(np.float64)  # (M,)
    out: Dict[str, np.ndarray] = {}
    if traj.metrics is not None:
        values = traj.metrics.reshape(T, ntask, N // ntask, -1).astype(np.float64)
        sums = (values * valid[..., None]).sum(axis=(0, 2))  # (M, K)
        for k, name in enumerate(names):
            out[name] = sums[:, k] / np.maximum(steps, 1)
    if terminations:
        ended = (traj.terminated & traj.valid).reshape(T, ntask, N // ntask).sum(axis=(0, 2))
        out[TERMINATIONS] = ended / np.maximum(steps * step_seconds / 60.0, 1e-12)
    return out


def subsample(batch: TaskBatch, fraction: float) -> TaskBatch:
    """The first ceil(fraction x k) trajectories of each task (all their steps)."""
    M, S = batch.mask.shape
    T = batch.horizon
    k = S // T
    keep = max(1, math.ceil(fraction * k))
    if keep >= k:
        return batch

    def cut(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if x is None or x.dim() < 2 or x.shape[1] != S:
            return x
        y = x.reshape(M, T, k, *x.shape[2:])[:, :, :keep]
        return y.reshape(M, T * keep, *x.shape[2:])
    return dataclasses.replace(
        batch, obs=cut(batch.obs), actions=cut(batch.actions), advantages=cut(batch.advantages),
        mask=cut(batch.mask), old_log_prob=cut(batch.old_log_prob), old_mean=cut(batch.old_mean))


def task_slice(batch: TaskBatch, lo: int, hi: int) -> TaskBatch:
    """Tasks lo..hi-1 of a batch (views, no copy)."""
    M = batch.mask.shape[0]

    def cut(x: Any) -> Any:
        return x[lo:hi] if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == M else x
    return dataclasses.replace(batch, **{f.name: cut(getattr(batch, f.name))
                                         for f in dataclasses.fields(batch)})


def trajectory_tasks(traj: Trajectories, lo: int, hi: int, per_task: int) -> Trajectories:
    """The simulations of tasks lo..hi-1 of a rollout of per_task simulations each (views)."""
    sims = slice(lo * per_task, hi * per_task)
    return dataclasses.replace(
        traj, observations=traj.observations[:, sims], actions=traj.actions[:, sims],
        rewards=traj.rewards[:, sims], terminated=traj.terminated[:, sims],
        truncated=traj.truncated[:, sims], valid=traj.valid[:, sims],
        final_observations=traj.final_observations[sims], lengths=traj.lengths[sims],
        diverged=traj.diverged[sims], task_index=traj.task_index[sims] - lo,
        tasks=traj.tasks[lo:hi],
        success=None if traj.success is None else traj.success[:, sims],
        metrics=None if traj.metrics is None else traj.metrics[:, sims])


def concat_tasks(batches: List[TaskBatch]) -> TaskBatch:
    """Batches of consecutive tasks as one (the inverse of task_slice)."""
    if len(batches) == 1:
        return batches[0]
    out = {}
    for field in dataclasses.fields(TaskBatch):
        values = [getattr(b, field.name) for b in batches]
        if isinstance(values[0], torch.Tensor):
            out[field.name] = torch.cat(values)
        elif isinstance(values[0], np.ndarray):
            out[field.name] = np.concatenate(values)
        else:
            out[field.name] = values[0]
    return TaskBatch(**out)


def per_task_params(adapted: Params, ntask: int) -> List[Dict[str, torch.Tensor]]:
    """(M, ...) per-entry parameters -> M detached dicts, one per task (the sampler's form)."""
    return [{k: v[i].detach() for k, v in adapted.items()} for i in range(ntask)]


def check_baseline_fit(value: Any) -> None:
    if value not in BASELINE_FITS:
        raise ValueError(f"baseline_fit should be one of {BASELINE_FITS}, got {value!r}")


def baseline_start(baseline_fit: str, ntask: int, obs_dim: int,
                    carry: Optional[np.ndarray] = None
                    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(carry, prior) of a round's first batch (see process). 'previous': the given carry
    (the run's last batch), else zeros; 'fresh': zeros for every task. An unfitted baseline of
    the reference code predicts 0, which zero coefficients do; 2 obs_dim + 4 features."""
    nfeat = 2 * obs_dim + 4
    if baseline_fit == "previous":
        return (np.zeros(nfeat) if carry is None else np.asarray(carry, dtype=np.float64)), None
    if baseline_fit == "fresh":
        return None, np.zeros((ntask, nfeat))
    return None, None


def baseline_next(baseline_fit: str, batch: TaskBatch
                   ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(carry, prior) of the batch after this one, of the same tasks."""
    return (batch.baseline_carry if baseline_fit == "previous" else None,
            batch.baseline_coeffs if baseline_fit == "fresh" else None)


def chunk_ranges(ntask: int, samples_per_task: int, samples: int) -> List[Tuple[int, int]]:
    """(lo, hi) ranges of whole tasks of about `samples` samples each (at least one task).
    The outer step's products and gradients run chunk by chunk: the activations of a few
    tasks stay in the CPU's caches, where those of all tasks at once (tens of MB) would not,
    which makes them about twice as fast. At least min(ntask, MIN_CHUNKS) chunks. The
    results depend on the chunks (their sums are added in chunk order), so they are a
    function of the configuration alone, never of the workers or cores that compute them."""
    per = max(1, samples // max(samples_per_task, 1))
    per = min(per, max(1, ntask // MIN_CHUNKS))  # then ntask / per >= MIN_CHUNKS chunks
    return [(lo, min(ntask, lo + per)) for lo in range(0, ntask, per)]
