"""PPO, the second domain-randomised learner (algo 'ppo'): one policy trained on tasks drawn
from the whole family, with a learned value function, as the legged-robot stacks train their
controllers (rsl_rl's recipe: clipped surrogate, clipped value loss, entropy bonus, Adam with
a step size adapted to a target KL, gradient-norm clipping).

The learner's state lives in the parameter dict beside the policy, under 'learner/' (so a
checkpoint resumes exactly, and everything that reads a policy drops it):

    learner/value/layers.{i}.weight|bias   the value MLP, (obs_dim) -> 1, the policy's widths
    learner/adam_m/<name>, adam_v/<name>   Adam's moments of every trained entry
    learner/adam_step, learner/lr          (1,) float32: Adam's step count, the step size

One iteration: the workers sample the meta-batch with theta and compute GAE advantages with
the value function (bootstrapped where an episode was cut at the horizon, not where it
ended in a terminal state); then `epochs` passes over `minibatches` minibatches, each the
same fraction of every task's samples drawn from (seed, iteration, epoch, task), one Adam
step per minibatch on the mean over tasks of each task's loss (workers.ppo_gradient, summed
over task chunks in order: the same bits on any number of threads or workers).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .batch import Trajectories
from .families import TaskFamily
from .meta import LEARNER_PREFIX, Params, PolicySpec
from .policy import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob, mlp_mean

VALUE_PREFIX = LEARNER_PREFIX + "value/"
ADAM_M = LEARNER_PREFIX + "adam_m/"
ADAM_V = LEARNER_PREFIX + "adam_v/"
ADAM_STEP = LEARNER_PREFIX + "adam_step"
STEP_SIZE = LEARNER_PREFIX + "lr"
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# the adaptive step size's bounds and factor (rsl_rl's)
LR_MIN, LR_MAX, LR_FACTOR = 1e-5, 1e-2, 1.5


def is_learner_state(name: str) -> bool:
    return name.startswith(LEARNER_PREFIX)


def trained_names(params: Params) -> List[str]:
    """The entries Adam moves, sorted: the policy's and the value function's."""
    return sorted(n for n in params
                  if not is_learner_state(n) or n.startswith(VALUE_PREFIX))


def value_params(params: Params) -> Params:
    """The value MLP's parameters, named as mlp_mean reads them (layers.{i}.*)."""
    return {n[len(VALUE_PREFIX):]: v for n, v in params.items() if n.startswith(VALUE_PREFIX)}


def value(params: Params, critic_obs: torch.Tensor, spec: PolicySpec) -> torch.Tensor:
    """V: (...) from the critic's inputs (..., critic_dim) (critic_features), with the value
    MLP in params (full dict)."""
    return mlp_mean(value_params(params), critic_obs, spec.nlayers, spec.activation)[..., 0]


# The critic sees more than the policy (an asymmetric actor-critic, as the legged stacks
# train blind controllers): besides the policy's observation, the family's metrics measured
# after the step before (for Go2Walk the velocity tracking errors, which the observation
# cannot show: the robot has no sensor of its base velocity) and the task's hidden parameters
# scaled to [-1, 1] over their training ranges. None of it reaches the policy; it only makes
# the advantages less noisy.

def critic_dim(family: TaskFamily, obs_dim: int) -> int:
    """Width of critic_features' last axis."""
    return obs_dim + len(family.metrics) + len(family.parameter_names)


def _parameter_scale(family: TaskFamily) -> Tuple[np.ndarray, np.ndarray]:
    """(centre, half width) per task parameter, from its training range (low and high, or
    the extreme values it draws; unscaled where it declares neither)."""
    lo, hi = {}, {}
    for parameter in family.parameters:
        if hasattr(parameter, "low") and hasattr(parameter, "high"):
            values = [float(parameter.low), float(parameter.high)]
        else:
            values = [float(v) for v in parameter.extremes()]
        for name in parameter.names:
            if values:
                lo[name], hi[name] = min(values), max(values)
    names = family.parameter_names
    low = np.array([lo.get(n, 0.0) for n in names])
    high = np.array([hi.get(n, 0.0) for n in names])
    half = (high - low) / 2
    return (low + high) / 2, np.where(half > 0, half, 1.0)


def critic_features(traj: Trajectories, family: TaskFamily) -> Tuple[np.ndarray, np.ndarray]:
    """The critic's inputs of a rollout: (T, N, critic_dim) at each step's observation and
    (N, critic_dim) at final_observations, float32. At step t the metrics are those measured
    after step t - 1 (zeros at t = 0, the robot at rest after its reset): V(s_t) may not see
    anything of the action taken at t."""
    T, N = traj.valid.shape
    parts, final_parts = [traj.observations], [traj.final_observations]
    if family.metrics:
        metrics = traj.metrics
        before = np.zeros_like(metrics)
        before[1:] = metrics[:-1]
        last = np.clip(traj.lengths.astype(np.int64) - 1, 0, T - 1)
        parts.append(before)
        final_parts.append(metrics[last, np.arange(N)])
    if family.parameter_names:
        centre, half = _parameter_scale(family)
        table = np.array([[task[n] for n in family.parameter_names] for task in traj.tasks])
        per_sim = ((table[traj.task_index] - centre) / half).astype(np.float32)  # (N, P)
        parts.append(np.broadcast_to(per_sim[None], (T, N, per_sim.shape[1])))
        final_parts.append(per_sim)
    return (np.concatenate(parts, axis=-1).astype(np.float32),
            np.concatenate(final_parts, axis=-1).astype(np.float32))


def initial_state(policy: GaussianMLPPolicy, params: Params, lr: float, seed: int,
                  critic_inputs: Optional[int] = None) -> Params:
    """The learner entries of a fresh run: a value MLP of the policy's widths and activation
    on critic_inputs inputs (default the policy's observation width; see critic_dim), its
    first weights drawn from seed, Adam's zero moments of every trained entry, step 0, step
    size lr."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        critic = GaussianMLPPolicy(critic_inputs or policy.obs_dim, 1, policy.sizes[1:-1],
                                   policy.activation)
    state: Params = {VALUE_PREFIX + n: p.detach().clone()
                     for n, p in critic.params().items() if n != "log_std"}
    full = dict(params, **state)
    for n in trained_names(full):
        state[ADAM_M + n] = torch.zeros_like(full[n])
        state[ADAM_V + n] = torch.zeros_like(full[n])
    state[ADAM_STEP] = torch.zeros(1, dtype=torch.float32)
    state[STEP_SIZE] = torch.full((1,), float(lr), dtype=torch.float32)
    return state


@dataclasses.dataclass(frozen=True)
class PpoSettings:
    """The loss's coefficients and the update's schedule (TrainConfig's ppo_* fields)."""

    epochs: int = 5
    minibatches: int = 4
    clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.01
    desired_kl: Optional[float] = 0.01
    max_grad_norm: float = 1.0


def task_loss(spec: PolicySpec, params: Params, obs, critic_obs, actions, advantages, mask,
              old_log_prob, old_mean, old_log_std, old_values, targets, settings: PpoSettings
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One task's PPO loss on its minibatch ((S, ...) tensors; mask (S,) 1.0 where valid;
    critic_obs the value function's inputs):
    clipped surrogate + value_coef x clipped value loss - entropy_coef x entropy, each a
    masked mean; and the mean KL(sampling policy || params) on the minibatch (a constant)."""
    count = mask.sum().clamp_min(1.0)
    mean = spec.mean(params, obs)
    log_std = params["log_std"]
    ratio = torch.exp(gaussian_log_prob(mean, log_std, actions) - old_log_prob)
    clipped = torch.clamp(ratio, 1.0 - settings.clip, 1.0 + settings.clip)
    surrogate = -(torch.minimum(ratio * advantages, clipped * advantages) * mask).sum() / count
    v = value(params, critic_obs, spec)
    v_clipped = old_values + torch.clamp(v - old_values, -settings.clip, settings.clip)
    value_loss = (torch.maximum((v - targets) ** 2, (v_clipped - targets) ** 2)
                  * mask).sum() / count
    entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
    loss = surrogate + settings.value_coef * value_loss - settings.entropy_coef * entropy
    with torch.no_grad():
        kl = (gaussian_kl(old_mean, old_log_std, mean.detach(), log_std.detach()) * mask).sum() \
            / count
    return loss, kl


def minibatch_indices(samples: int, minibatches: int, minibatch: int, seed: int) -> torch.Tensor:
    """The sample indices (samples // minibatches,) of one task's minibatch: part `minibatch`
    of a permutation of its samples drawn from seed (the samples left over by the division
    sit out this epoch)."""
    g = torch.Generator().manual_seed(seed)
    per = samples // minibatches
    return torch.randperm(samples, generator=g)[minibatch * per:(minibatch + 1) * per]


def adaptive_step_size(lr: float, kl: float, desired: Optional[float]) -> float:
    """rsl_rl's schedule: /1.5 when the KL exceeds twice the target, x1.5 below half."""
    if desired is None:
        return lr
    if kl > 2.0 * desired:
        return max(LR_MIN, lr / LR_FACTOR)
    if kl < 0.5 * desired:
        return min(LR_MAX, lr * LR_FACTOR)
    return lr


def adam_step(params: Params, grads: Params, names: Sequence[str], lr: float) -> Params:
    """Adam (torch.optim.Adam's arithmetic, no weight decay) on the named entries, with its
    moments and step count in params' learner entries; returns the new dict."""
    b1, b2 = ADAM_BETAS
    out = dict(params)
    step = params[ADAM_STEP] + 1
    t = float(step.item())
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    for n in names:
        g = grads[n]
        m = params[ADAM_M + n] * b1 + (1.0 - b1) * g
        v = params[ADAM_V + n] * b2 + (1.0 - b2) * g * g
        denom = (v.sqrt() / math.sqrt(c2)) + ADAM_EPS
        out[n] = params[n] - (lr / c1) * m / denom
        out[ADAM_M + n], out[ADAM_V + n] = m, v
    out[ADAM_STEP] = step
    return out


def update(theta: Params, settings: PpoSettings,
           gradient: Callable[[Params, int, int], Tuple[Params, torch.Tensor]],
           report: Optional[Callable[[str], None]] = None) -> Tuple[Params, Dict[str, float]]:
    """The epochs x minibatches Adam steps of an iteration. gradient(p, epoch, minibatch) ->
    (gradient of the mean task loss at p, tensor [loss, kl]) over the whole meta-batch.
    Returns the new theta and the mean loss, the last minibatch's KL, the step size and the
    gradient norm before clipping (means over the minibatches)."""
    say = report or (lambda text: None)
    names = trained_names(theta)
    p = dict(theta)
    lr = float(p[STEP_SIZE].item())
    losses, norms, kl = [], [], 0.0
    for epoch in range(settings.epochs):
        for mb in range(settings.minibatches):
            say(f"epoch {epoch + 1}/{settings.epochs}, minibatch {mb + 1}/"
                f"{settings.minibatches}")
            grads, scalars = gradient(p, epoch, mb)
            loss, kl = float(scalars[0]), float(scalars[1])
            lr = adaptive_step_size(lr, kl, settings.desired_kl)
            norm = math.sqrt(sum(float((grads[n].double() ** 2).sum()) for n in names))
            scale = min(1.0, settings.max_grad_norm / (norm + 1e-6))
            if scale < 1.0:
                grads = {n: grads[n] * scale for n in names}
            p = adam_step(p, grads, names, lr)
            losses.append(loss)
            norms.append(norm)
    p[STEP_SIZE] = torch.full((1,), lr, dtype=torch.float32, device=theta[STEP_SIZE].device)
    p = {n: v.detach() for n, v in p.items()}
    return p, {"loss": float(np.mean(losses)), "kl": kl, "lr": lr,
               "grad_norm": float(np.mean(norms))}
