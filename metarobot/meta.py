"""Meta-learners as pure functions of parameter dicts (torch.func): the adaptation (inner) step
and its losses, shared by training, evaluation and the robot; Reptile's outer update. MAML's
outer step (TRPO through the adaptation) is metarobot.trpo.

Data flow of one meta-iteration, K inner steps, M tasks:

    theta --rollout--> batch_0 --inner step--> theta'_1 --rollout--> batch_1 ... theta'_K
    theta'_K --rollout--> post batch;  outer: TRPO on L_post(theta'_K(theta)) or Reptile

    adapted = inner_step(spec, theta, batch, lr=0.1, first_order=False, batched=False)
    adapted["log_std"].shape               # (M, act_dim): one adapted policy per task
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch.func import grad, vmap

from .policy import gaussian_kl, gaussian_log_prob, mlp_mean, mlp_mean_jvp
from .samples import TaskBatch

Params = Dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """What the pure functions need to know of the policy."""

    nlayers: int
    activation: str

    def mean(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        return mlp_mean(params, obs, self.nlayers, self.activation)

    def mean_jvp(self, params: Params, tangents: Params, obs: torch.Tensor) -> torch.Tensor:
        """The mean's derivative along tangents (policy.mlp_mean_jvp), (..., act_dim)."""
        return mlp_mean_jvp(params, tangents, obs, self.nlayers, self.activation)[1]

    def log_prob(self, params: Params, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(self.mean(params, obs), params["log_std"], actions)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


INNER_OBJECTIVES = ("pg", "lvc")


def pg_loss(spec: PolicySpec, params: Params, obs, actions, advantages, mask) -> torch.Tensor:
    """Vanilla policy-gradient loss of one task: -mean(log pi(a|s) * A) over valid steps."""
    return -_masked_mean(spec.log_prob(params, obs, actions) * advantages, mask)


def lvc_loss(spec: PolicySpec, params: Params, obs, actions, advantages, mask,
             sample_log_prob) -> torch.Tensor:
    """ProMP's low-variance curvature loss of one task: -mean(pi(a|s) / pi_s(a|s) * A), pi_s
    the sampling policy (its log-probabilities are data, constant at every order). At the
    sampling parameters its gradient is pg_loss's; its Hessian adds the score's outer product,
    sum_t grad log pi_t grad log pi_t^T A_t, the term through which the adapted policy's
    return depends on the pre-update policy's exploration."""
    ratio = torch.exp(spec.log_prob(params, obs, actions) - sample_log_prob)
    return -_masked_mean(ratio * advantages, mask)


def _check_objective(objective: str) -> None:
    if objective not in INNER_OBJECTIVES:
        raise ValueError(f"inner objective should be one of {INNER_OBJECTIVES}, got "
                         f"{objective!r}")


STEP_SIZE_PREFIX = "inner_lr/"
# a learner's own state beside the policy (PPO's value function and optimiser, metarobot.ppo)
LEARNER_PREFIX = "learner/"


def split_step_sizes(params: Params) -> Tuple[Params, Optional[Params]]:
    """(policy parameters, learned step sizes or None) of a parameter dict that may hold
    Meta-SGD's per-entry step sizes under 'inner_lr/<name>' (same shapes as <name>), and a
    learner's state under 'learner/' (which is neither, and is left out)."""
    policy = {k: v for k, v in params.items()
              if not k.startswith(STEP_SIZE_PREFIX) and not k.startswith(LEARNER_PREFIX)}
    sizes = {k[len(STEP_SIZE_PREFIX):]: v for k, v in params.items()
             if k.startswith(STEP_SIZE_PREFIX)}
    return policy, (sizes or None)


def initial_step_sizes(params: Params, lr: float) -> Params:
    """Meta-SGD's step sizes, every entry lr, keyed 'inner_lr/<name>'."""
    return {STEP_SIZE_PREFIX + k: torch.full_like(v, float(lr)) for k, v in params.items()}


def inner_step(spec: PolicySpec, params: Params, batch: TaskBatch, lr: Union[float, Params],
               first_order: bool, batched: bool, objective: str = "pg") -> Params:
    """One policy-gradient step per task: params (shared, or (M, ...) per task if batched) ->
    (M, ...) adapted params. lr: one step size, or one per parameter entry (Meta-SGD: a dict
    of tensors shaped as the shared params, differentiable). Second-order unless first_order
    (the gradient is then a constant). objective 'lvc' differentiates lvc_loss (needs
    batch.old_log_prob, see record_sampling); its step is pg's, its second derivatives are
    not."""
    _check_objective(objective)
    pdim = 0 if batched else None
    if objective == "lvc":
        if batch.old_log_prob is None:
            raise ValueError("the 'lvc' inner objective needs the batch's sampling "
                             "log-probabilities (meta.record_sampling)")
        task_grad = grad(lambda p, o, a, adv, m, lp: lvc_loss(spec, p, o, a, adv, m, lp))
        grads = vmap(task_grad, in_dims=(pdim, 0, 0, 0, 0, 0))(
            params, batch.obs, batch.actions, batch.advantages, batch.mask, batch.old_log_prob)
    else:
        task_grad = grad(lambda p, o, a, adv, m: pg_loss(spec, p, o, a, adv, m))
        grads = vmap(task_grad, in_dims=(pdim, 0, 0, 0, 0))(
            params, batch.obs, batch.actions, batch.advantages, batch.mask)
    out = {}
    for name, p in params.items():
        g = grads[name].detach() if first_order else grads[name]
        out[name] = p - (lr[name] if isinstance(lr, dict) else lr) * g
    return out


INNER_UPDATES = ("pg", "clipped")


def clipped_loss(spec: PolicySpec, params: Params, obs, actions, advantages, mask,
                 sample_log_prob, clip: float) -> torch.Tensor:
    """PPO's clipped surrogate loss of one task: -mean(min(r A, clip(r, 1 - clip, 1 + clip)
    A)), r = pi(a|s) / pi_s(a|s), pi_s the sampling policy."""
    ratio = torch.exp(spec.log_prob(params, obs, actions) - sample_log_prob)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return -_masked_mean(torch.minimum(ratio * advantages, clipped * advantages), mask)


@dataclasses.dataclass(frozen=True)
class InnerUpdate:
    """How one adaptation step moves the parameters on a batch sampled with them (values
    only, no derivatives through it): 'pg', one policy-gradient step (inner_step, the MAML
    paper's); 'clipped', `epochs` full-batch gradient steps of the step size on PPO's
    clipped surrogate (clipped_loss), the first of which is the 'pg' step. Reptile trains
    with either; evaluation, adaptation and the robot then use the checkpoint's."""

    kind: str = "pg"
    epochs: int = 1
    clip: float = 0.2

    def __post_init__(self):
        if self.kind not in INNER_UPDATES:
            raise ValueError(f"inner update should be one of {INNER_UPDATES}, got "
                             f"{self.kind!r}")

    def step(self, spec: PolicySpec, params: Params, batch: TaskBatch,
             lr: Union[float, Params], batched: bool, objective: str = "pg") -> Params:
        """params (shared, or (M, ...) per task if batched) -> (M, ...) adapted, detached."""
        if self.kind == "pg":
            out = inner_step(spec, params, batch, lr, True, batched, objective)
            return {k: v.detach() for k, v in out.items()}
        ntask = batch.mask.shape[0]
        p = {k: (v if batched else v.unsqueeze(0).expand(ntask, *v.shape)).detach()
             for k, v in params.items()}
        with torch.no_grad():
            sample_lp = vmap(spec.log_prob)(p, batch.obs, batch.actions)
        clip = self.clip
        task_grad = grad(lambda q, o, a, adv, m, lp: clipped_loss(spec, q, o, a, adv, m, lp,
                                                                  clip))
        for _ in range(self.epochs):
            grads = vmap(task_grad)(p, batch.obs, batch.actions, batch.advantages, batch.mask,
                                    sample_lp)
            p = {k: (v - (lr[k] if isinstance(lr, dict) else lr) * grads[k]).detach()
                 for k, v in p.items()}
        return p


def for_each_task(params: Params, ntask: int) -> Params:
    """Shared params as (ntask, ...) per entry, one copy per task (expanded views: a gradient
    through them sums over the tasks)."""
    return {k: v.unsqueeze(0).expand(ntask, *v.shape) for k, v in params.items()}


def adapt(spec: PolicySpec, params: Params, batches: Sequence[TaskBatch],
          lr: Union[float, Params], first_order: bool, objective: str = "pg",
          ntask: Optional[int] = None) -> Params:
    """K >= 0 inner steps, step j on batches[j] (sampled with the params of step j): (M, ...).
    lr: as inner_step's, the same for every step. With no batches (trpo, which trains without
    adapting): params themselves for each of ntask tasks (for_each_task)."""
    if not batches:
        if ntask is None:
            raise ValueError("adapt with no batches (no steps) needs ntask, the number of "
                             "tasks to give the parameters to")
        return for_each_task(params, ntask)
    adapted, batched = params, False
    for batch in batches:
        adapted = inner_step(spec, adapted, batch, lr, first_order, batched, objective)
        batched = True
    return adapted


def surrogate(spec: PolicySpec, adapted: Params, post: TaskBatch) -> torch.Tensor:
    """TRPO's surrogate loss on the post-update samples, averaged over tasks (to minimise)."""
    def task(p, o, a, adv, m, old):
        ratio = torch.exp(spec.log_prob(p, o, a) - old)
        return -_masked_mean(ratio * adv, m)
    return vmap(task)(adapted, post.obs, post.actions, post.advantages, post.mask,
                      post.old_log_prob).mean()


def mean_kl(spec: PolicySpec, adapted: Params, post: TaskBatch) -> torch.Tensor:
    """Mean KL(sampling policy || adapted policy) over valid post-update samples and tasks."""
    def task(p, o, m, old_mean, old_log_std):
        kl = gaussian_kl(old_mean, old_log_std, spec.mean(p, o), p["log_std"])
        return _masked_mean(kl, m)
    return vmap(task)(adapted, post.obs, post.mask, post.old_mean, post.old_log_std).mean()


def record_sampling(spec: PolicySpec, params: Params, batch: TaskBatch,
                    batched: bool) -> TaskBatch:
    """Adds the log-probabilities of the batch's actions under the policy that sampled them
    (params shared, or (M, ...) per task if batched): the data of the 'lvc' objective."""
    with torch.no_grad():
        detached = {k: v.detach() for k, v in params.items()}
        batch.old_log_prob = vmap(spec.log_prob, in_dims=(0 if batched else None, 0, 0))(
            detached, batch.obs, batch.actions)
    return batch


def record_old(spec: PolicySpec, adapted: Params, post: TaskBatch) -> TaskBatch:
    """Adds the sampling policy's log-probabilities and means to the post-update batch."""
    with torch.no_grad():
        detached = {k: v.detach() for k, v in adapted.items()}
        post.old_log_prob = vmap(spec.log_prob)(detached, post.obs, post.actions)
        post.old_mean = vmap(spec.mean)(detached, post.obs)
        post.old_log_std = detached["log_std"]
    return post


def reptile_update(params: Params, adapted: Params, epsilon: float) -> Params:
    """theta <- theta + epsilon * mean over tasks of (phi_i - theta)."""
    return {k: (v + epsilon * (adapted[k].mean(0) - v)).detach() for k, v in params.items()}
