"""TRPO's outer step on the meta-objective: the natural-gradient direction by conjugate gradient
on products with the Hessian of the mean KL through the adaptation (J^T F J), then a line
search under the KL bound.

    product = maml_fisher_product(spec, theta, batches, lr, post)   # v -> H v
    new_theta, info = trpo_step(theta, loss_fn, kl_fn, max_kl=0.01, hessian_product=product)

Functions of parameter dicts (torch.func); the per-task pieces come from metarobot.meta.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import torch
from torch.func import grad, jvp, vjp, vmap

from .device import capture
from .meta import Params, PolicySpec, adapt, inner_step, split_step_sizes
from .samples import TaskBatch

# torch.func.jvp's forward-mode levels are global to the process: calls that use them, from
# chunks run side by side (metarobot.executors.ChunkExecutors), take turns
FORWARD_AD = threading.Lock()


def flatten(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The entries named, in names' order, as one flat vector."""
    return torch.cat([tensors[n].reshape(-1) for n in names])


def unflatten(vec: torch.Tensor, like: Mapping[str, torch.Tensor],
              names: Sequence[str]) -> Params:
    """flatten's inverse: views of vec shaped as like's entries."""
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
        with FORWARD_AD:
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
    flat = flatten(theta, names).detach()
    eps = base_eps / (float(flat.norm()) + 1e-8)

    def product(v: Params) -> Params:
        dv = eps * flatten(v, names)
        plus = flatten(kl_grad(unflatten(flat + dv, theta, names)), names)
        minus = flatten(kl_grad(unflatten(flat - dv, theta, names)), names)
        return unflatten(((plus - minus) / (2.0 * eps)).detach(), theta, names)
    return product


def maml_fisher_product(spec: PolicySpec, theta: Params, batches: Sequence[TaskBatch],
                        lr: float, post: TaskBatch, phi: Optional[Params] = None,
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
    product. No batches (trpo, which trains without adapting; first_order): phi is theta
    for every task, J = I, and H is the plain Fisher of the mean KL on post.
    """
    ntask = post.mask.shape[0]
    learned = split_step_sizes(theta)[1] is not None
    if first_order and not learned:
        if phi is None:
            phi = adapt(spec, theta, batches, lr, True, ntask=ntask)

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
                         objective, ntask=ntask)
        phi_b, adapt_vjp = vjp(adapt_fn, theta)

        def jac(v: Params) -> Params:
            with FORWARD_AD:  # torch's forward-mode levels are global to the process
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
        # forward mode by hand (thread-safe: chunks run side by side)
        dmean = vmap(spec.mean_jvp)(phi, dphi, post.obs)
        u = dict(mean_vjp(dmean * inv_var * weight.unsqueeze(-1))[0])
        u["log_std"] = u["log_std"] + log_std_scale * dphi["log_std"]
        return jac_t(u)
    return product


def axpy(acc: Any, w: float, y: Any) -> Any:
    """acc + w * y over matching structures of tensors (dicts, tuples); acc None: w * y."""
    if isinstance(y, dict):
        return {k: axpy(None if acc is None else acc[k], w, t) for k, t in y.items()}
    if isinstance(y, tuple):
        return tuple(axpy(None if acc is None else a, w, t)
                     for a, t in zip(acc if acc is not None else y, y))
    return w * y if acc is None else acc + w * y


def combine(values: Sequence[Any], weights: Sequence[float]) -> Any:
    """sum_c weights[c] * values[c] in order, over tensors or dicts or tuples of them."""
    acc: Any = None
    for w, v in zip(weights, values):
        acc = axpy(acc, w, v)
    return acc


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
    g = flatten(g, names).detach()
    loss0 = loss0.detach()
    if loss_kl_fn is None:
        def loss_kl_fn(p: Params) -> Tuple[torch.Tensor, torch.Tensor]:
            return loss_fn(p), kl_fn(p)
    product = hessian_product or kl_hessian_product(kl_fn, theta)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = product(unflatten(v, theta, names))
        return flatten(hv, names).detach() + damping * v

    on_gpu = g.is_cuda
    if on_gpu and cuda_graph:
        try:
            fvp = capture(fvp, -g)
        except RuntimeError as exc:  # an operation graphs cannot hold: run it as it is
            warnings.warn(f"the Fisher-vector product could not be captured as a CUDA graph "
                          f"({exc}); it runs eagerly")
    direction = conjugate_gradient(fvp, -g, cg_iters, report=report, early_stop=not on_gpu)
    shs = 0.5 * (direction @ fvp(direction))
    step = direction * torch.sqrt(2.0 * max_kl / (2.0 * shs + 1e-12))
    flat0 = flatten(theta, names)
    info = TrpoInfo(float(loss0), float(loss0), 0.0, 0, False)
    with torch.no_grad():
        for k in range(max_backtracks):
            if report is not None:
                report(f"line search {k + 1}")
            candidate = unflatten(flat0 + (backtrack_ratio ** k) * step, theta, names)
            # one read of both (on a GPU, one wait for the device per candidate)
            loss, kl = torch.stack([x.detach().reshape(()).double()
                                    for x in loss_kl_fn(candidate)]).tolist()
            if math.isfinite(loss) and loss < float(loss0) and kl <= max_kl:
                info = TrpoInfo(float(loss0), loss, kl, k, True)
                return {n: t.clone() for n, t in candidate.items()}, info
    return theta, info
