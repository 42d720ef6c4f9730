"""Meta-learners as pure functions of parameter dicts (torch.func): MAML with a TRPO outer step
(second-order through the inner policy-gradient steps, or first-order), and Reptile.

Data flow of one meta-iteration, K inner steps, M tasks:

    theta --rollout--> batch_0 --inner step--> theta'_1 --rollout--> batch_1 ... theta'_K
    theta'_K --rollout--> post batch;  outer: TRPO on L_post(theta'_K(theta)) or Reptile

A TaskBatch holds the samples of M tasks as (M, S, ...) tensors, S = steps x trajectories per
task, with a validity mask; every loss is a masked mean per task, averaged over tasks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.func import grad, jvp, vjp, vmap

from .baseline import fit_linear_baseline
from .batch import Trajectories
from .policy import gaussian_kl, gaussian_log_prob, mlp_mean
from .returns import discounted_returns, gae

Params = Dict[str, torch.Tensor]


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
            prior: Optional[np.ndarray] = None) -> TaskBatch:
    """Advantages of a rollout with the linear feature baseline refit per task (as the MAML
    paper's code): discounted returns, baseline values, GAE with no bootstrap past an episode's
    end, advantages normalised per task. carry and prior: see baseline.fit_linear_baseline; the
    batch's baseline_carry is then the carry of the next batch, its baseline_coeffs the prior
    of the same tasks' next batch."""
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
    mask = valid.astype(np.float32)
    adv_t = _per_task(adv.astype(np.float32), ntask)
    mask_t = _per_task(mask, ntask)
    if normalize:
        count = mask_t.sum(1, keepdim=True).clamp_min(1.0)
        mean = (adv_t * mask_t).sum(1, keepdim=True) / count
        var = (((adv_t - mean) * mask_t) ** 2).sum(1, keepdim=True) / count
        adv_t = (adv_t - mean) / (var.sqrt() + 1e-8) * mask_t
    ep_returns = np.where(valid, traj.rewards, 0.0).sum(0).reshape(ntask, k).mean(1)
    return TaskBatch(obs=_per_task(traj.observations, ntask),
                     actions=_per_task(traj.actions, ntask),
                     advantages=adv_t, mask=mask_t,
                     returns=torch.from_numpy(ep_returns.astype(np.float64)), horizon=T,
                     baseline_coeffs=own)


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


def task_chunks(batch: TaskBatch, samples: int) -> List[Tuple[int, int]]:
    """(lo, hi) ranges of whole tasks of about `samples` samples each (at least one task).
    The outer step's products and gradients run chunk by chunk: the activations of a few
    tasks stay in the CPU's caches, where those of all tasks at once (tens of MB) would not,
    which makes them about twice as fast; the sums are the same up to rounding."""
    M, S = batch.mask.shape
    return chunk_ranges(M, S, samples)


def chunk_ranges(ntask: int, samples_per_task: int, samples: int) -> List[Tuple[int, int]]:
    """task_chunks of ntask tasks of samples_per_task samples each."""
    per = max(1, samples // max(samples_per_task, 1))
    return [(lo, min(ntask, lo + per)) for lo in range(0, ntask, per)]


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """What the pure functions need to know of the policy."""

    nlayers: int
    activation: str

    def mean(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        return mlp_mean(params, obs, self.nlayers, self.activation)

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


def split_step_sizes(params: Params) -> Tuple[Params, Optional[Params]]:
    """(policy parameters, learned step sizes or None) of a parameter dict that may hold
    Meta-SGD's per-entry step sizes under 'inner_lr/<name>' (same shapes as <name>)."""
    policy = {k: v for k, v in params.items() if not k.startswith(STEP_SIZE_PREFIX)}
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


def adapt(spec: PolicySpec, params: Params, batches: Sequence[TaskBatch],
          lr: Union[float, Params], first_order: bool, objective: str = "pg") -> Params:
    """K >= 1 inner steps, step j on batches[j] (sampled with the params of step j): (M, ...).
    lr: as inner_step's, the same for every step."""
    if not batches:
        raise ValueError("adapt needs at least one batch")
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


# ------------------------------------------------------------------------------------ TRPO step

def _flat(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def _unflat(vec: torch.Tensor, like: Mapping[str, torch.Tensor], names: Sequence[str]) -> Params:
    out, i = {}, 0
    for n in names:
        size = like[n].numel()
        out[n] = vec[i:i + size].view_as(like[n])
        i += size
    return out


def conjugate_gradient(fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int = 10, tol: float = 1e-10,
                       report: Optional[Callable[[str], None]] = None,
                       early_stop: bool = True) -> torch.Tensor:
    """Solves F x = b for a symmetric positive definite F given as a product. report, when
    given, hears of each iteration as it starts. early_stop: stop once the squared residual
    is below tol; that test reads the residual on the host, so on a GPU it waits for the
    device every iteration (pass False there: all iters run, nothing waits)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for i in range(iters):
        if report is not None:
            report(f"conjugate gradient {i + 1}/{iters}")
        fp = fvp(p)
        alpha = rr / (p @ fp + 1e-12)
        x += alpha * p
        r -= alpha * fp
        rr_new = r @ r
        if early_stop and rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


@dataclasses.dataclass
class TrpoInfo:
    surrogate_before: float
    surrogate_after: float
    kl: float
    backtracks: int
    accepted: bool


def kl_hessian_product(kl_fn: Callable[[Params], torch.Tensor], theta: Params
                       ) -> Callable[[Params], Params]:
    """v -> (Hessian of kl_fn at theta) v, by forward-over-reverse differentiation."""
    kl_grad = grad(kl_fn)

    def product(v: Params) -> Params:
        return jvp(kl_grad, (theta,), (v,))[1]
    return product


def finite_difference_product(kl_grad: Callable[[Params], Params], theta: Params,
                              base_eps: float = 1.0) -> Callable[[Params], Params]:
    """v -> the KL Hessian-vector product as the MAML paper's code computes it: the symmetric
    difference (kl_grad(theta + eps v) - kl_grad(theta - eps v)) / (2 eps) with
    eps = base_eps / |theta| (rllab's FiniteDifferenceHvp; that code's TRPO passes 1 as
    base_eps). kl_grad: params -> gradient of the mean KL, through the adaptation for MAML.
    With a large eps, directions where the KL grows faster than quadratically (the log-std's)
    get a larger curvature than the exact Hessian's."""
    names = sorted(theta)
    flat = _flat(theta, names).detach()
    eps = base_eps / (float(flat.norm()) + 1e-8)

    def product(v: Params) -> Params:
        dv = eps * _flat(v, names)
        plus = _flat(kl_grad(_unflat(flat + dv, theta, names)), names)
        minus = _flat(kl_grad(_unflat(flat - dv, theta, names)), names)
        return _unflat(((plus - minus) / (2.0 * eps)).detach(), theta, names)
    return product


def maml_fisher_product(spec: "PolicySpec", theta: Params, batches: Sequence["TaskBatch"],
                        lr: float, post: "TaskBatch", phi: Optional[Params] = None,
                        first_order: bool = False, objective: str = "pg"
                        ) -> Callable[[Params], Params]:
    """v -> H v, H the Hessian at theta of the mean KL between the sampling and the adapted
    policies, KL(theta) = mean_KL(adapt(theta, batches)). KL's gradient in the adapted
    parameters vanishes at theta, so H = J^T F J exactly: J the Jacobian of the adaptation
    (Hessian-vector products of the inner loss) and F the adapted Gaussian policies' Fisher on
    the post-update samples, at phi (default: the adapted parameters). One inner step makes
    each task's J = I - lr * H_i symmetric, so J v is a reverse-mode product too, which PyTorch
    does much faster than forward mode. first_order: the adaptation's Jacobian is taken as I.
    theta holding step sizes (Meta-SGD, see split_step_sizes): they are the adaptation's step
    sizes (lr is unused) and J, now with their columns, is a forward- and a reverse-mode
    product.
    """
    ntask = post.mask.shape[0]
    learned = split_step_sizes(theta)[1] is not None
    if first_order and not learned:
        if phi is None:
            phi = adapt(spec, theta, batches, lr, True)

        def jac(v: Params) -> Params:
            return {k: x.unsqueeze(0).expand(ntask, *x.shape) for k, x in v.items()}

        def jac_t(u: Params) -> Params:
            return {k: x.sum(0) for k, x in u.items()}
        phi_b = phi
    elif len(batches) == 1 and not learned:
        theta_b = {k: v.unsqueeze(0).expand(ntask, *v.shape).contiguous()
                   for k, v in theta.items()}
        phi_b, step_vjp = vjp(
            lambda p: inner_step(spec, p, batches[0], lr, False, True, objective), theta_b)

        def jac(v: Params) -> Params:
            return step_vjp({k: x.unsqueeze(0).expand(ntask, *x.shape) for k, x in v.items()})[0]

        def jac_t(u: Params) -> Params:
            return {k: x.sum(0) for k, x in step_vjp(u)[0].items()}
    else:
        # several steps, or learned step sizes: J v in forward mode, J^T u in reverse mode
        def adapt_fn(p: Params) -> Params:
            policy, sizes = split_step_sizes(p)
            return adapt(spec, policy, batches, lr if sizes is None else sizes, first_order,
                         objective)
        phi_b, adapt_vjp = vjp(adapt_fn, theta)

        def jac(v: Params) -> Params:
            return jvp(adapt_fn, (theta,), (v,))[1]

        def jac_t(u: Params) -> Params:
            return adapt_vjp(u)[0]
    names = sorted(phi_b)  # the policy's; torch.func matches dicts by key order
    phi = {n: (phi_b if phi is None else phi)[n].detach() for n in names}

    def means(p: Params) -> torch.Tensor:
        return vmap(spec.mean)(p, post.obs)

    _, mean_vjp = vjp(means, phi)
    weight = post.mask / post.mask.sum(1, keepdim=True).clamp_min(1.0) / ntask  # (M, S)
    inv_var = torch.exp(-2.0 * phi["log_std"]).unsqueeze(1)  # (M, 1, A)
    # every task's weights sum to 1 / M: the log-std block of F is 2 / M per dimension
    log_std_scale = 2.0 * (weight.sum(1, keepdim=True) > 0).to(weight.dtype) / ntask

    def product(v: Params) -> Params:
        dphi = jac(v)
        dphi = {n: dphi[n] for n in names}
        dmean = jvp(means, (phi,), (dphi,))[1]
        u = dict(mean_vjp(dmean * inv_var * weight.unsqueeze(-1))[0])
        u["log_std"] = u["log_std"] + log_std_scale * dphi["log_std"]
        return jac_t(u)
    return product


def _axpy(acc: Any, w: float, y: Any) -> Any:
    """acc + w * y over matching structures of tensors (dicts, tuples); acc None: w * y."""
    if isinstance(y, dict):
        return {k: _axpy(None if acc is None else acc[k], w, t) for k, t in y.items()}
    if isinstance(y, tuple):
        return tuple(_axpy(None if acc is None else a, w, t)
                     for a, t in zip(acc if acc is not None else y, y))
    return w * y if acc is None else acc + w * y


def weighted_sum(parts: Sequence[Tuple[float, Callable[..., Any]]]) -> Callable[..., Any]:
    """x -> sum_i w_i f_i(x) for parts (w_i, f_i) whose f_i return tensors, or dicts or tuples
    of them (the same structure for every part)."""
    def total(*args: Any) -> Any:
        acc: Any = None
        for w, f in parts:
            acc = _axpy(acc, w, f(*args))
        return acc
    return total


def trpo_step(params: Params, loss_fn: Callable[[Params], torch.Tensor],
              kl_fn: Callable[[Params], torch.Tensor], max_kl: float = 0.01,
              cg_iters: int = 10, damping: float = 1e-5, backtrack_ratio: float = 0.8,
              max_backtracks: int = 15,
              hessian_product: Optional[Callable[[Params], Params]] = None,
              loss_kl_fn: Optional[Callable[[Params], Tuple[torch.Tensor, torch.Tensor]]] = None,
              grad_fn: Optional[Callable[[Params], Tuple[Params, torch.Tensor]]] = None,
              report: Optional[Callable[[str], None]] = None,
              cuda_graph: bool = False,
              ) -> Tuple[Params, TrpoInfo]:
    """One TRPO step on params: the natural gradient direction by conjugate gradient on
    products with the Hessian of kl_fn at params (hessian_product, or by differentiating kl_fn),
    the largest step of KL max_kl along it, then backtracking until the loss improves and the KL
    bound holds. loss_kl_fn, when given, returns (loss, kl) of a candidate at once (sharing
    work such as the adaptation); grad_fn, when given, returns (gradient, loss) of loss_fn
    (for instance summed over parts computed one at a time). report, when given, hears of
    each phase as it starts (gradient, conjugate-gradient iterations, line-search steps).
    On a GPU (params on CUDA) the conjugate gradient runs all cg_iters iterations without
    waiting on the device, and with cuda_graph the Fisher-vector product (the same shapes
    every iteration) is captured once as a CUDA graph and replayed (metarobot.device.capture).
    Returns the new params (detached) and what happened."""
    names = sorted(params)
    theta = {n: params[n].detach() for n in names}
    if report is not None:
        report("gradient")
    g, loss0 = (grad_fn or torch.func.grad_and_value(loss_fn))(theta)
    g = _flat(g, names).detach()
    loss0 = loss0.detach()
    if loss_kl_fn is None:
        def loss_kl_fn(p: Params) -> Tuple[torch.Tensor, torch.Tensor]:
            return loss_fn(p), kl_fn(p)
    product = hessian_product or kl_hessian_product(kl_fn, theta)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = product(_unflat(v, theta, names))
        return _flat(hv, names).detach() + damping * v

    on_gpu = g.is_cuda
    if on_gpu and cuda_graph:
        from .device import capture
        try:
            fvp = capture(fvp, -g)
        except RuntimeError as exc:  # an operation graphs cannot hold: run it as it is
            import warnings
            warnings.warn(f"the Fisher-vector product could not be captured as a CUDA graph "
                          f"({exc}); it runs eagerly")
    direction = conjugate_gradient(fvp, -g, cg_iters, report=report, early_stop=not on_gpu)
    shs = 0.5 * (direction @ fvp(direction))
    step = direction * torch.sqrt(2.0 * max_kl / (2.0 * shs + 1e-12))
    flat0 = _flat(theta, names)
    info = TrpoInfo(float(loss0), float(loss0), 0.0, 0, False)
    with torch.no_grad():
        for k in range(max_backtracks):
            if report is not None:
                report(f"line search {k + 1}")
            candidate = _unflat(flat0 + (backtrack_ratio ** k) * step, theta, names)
            # one read of both (on a GPU, one wait for the device per candidate)
            loss, kl = torch.stack([x.detach().reshape(()).double()
                                    for x in loss_kl_fn(candidate)]).tolist()
            if math.isfinite(loss) and loss < float(loss0) and kl <= max_kl:
                info = TrpoInfo(float(loss0), loss, kl, k, True)
                return {n: t.clone() for n, t in candidate.items()}, info
    return theta, info


def reptile_update(params: Params, adapted: Params, epsilon: float) -> Params:
    """theta <- theta + epsilon * mean over tasks of (phi_i - theta)."""
    return {k: (v + epsilon * (adapted[k].mean(0) - v)).detach() for k, v in params.items()}
