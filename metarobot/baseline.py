"""The linear feature baseline of the MAML paper's code (rllab's LinearFeatureBaseline).

Features of a step: clip(obs, -10, 10), its square, t/100 and its square and cube, and 1;
regularised least squares on the discounted returns, refit on each task's batch.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def features(obs: torch.Tensor, t_index: torch.Tensor) -> torch.Tensor:
    """(..., obs_dim) observations and (...) time steps -> (..., 2 obs_dim + 4) features."""
    o = obs.clamp(-10.0, 10.0)
    al = (t_index / 100.0).unsqueeze(-1)
    return torch.cat([o, o * o, al, al * al, al * al * al, torch.ones_like(al)], dim=-1)


def _solve_each(gram: torch.Tensor, rhs: torch.Tensor, reg: float) -> torch.Tensor:
    """(gram_i + reg I) x_i = rhs_i for each task i, (M, F, F) and (M, F, 1) -> (M, F, 1); a
    system that is singular at reg is solved again with 10 times more, up to 4 times (NaN if
    it stays singular). Each system on its own, so that a task's fit does not depend on the
    tasks solved with it (a batched solve may take another kernel, or fail as a whole: with
    an explicitly set number of intra-op threads, torch's batched LU on the CPU rejects some
    sizes, among them AntDir's 254 features)."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    out = torch.full_like(rhs, float("nan"))
    for i in range(gram.shape[0]):
        r = reg
        for _ in range(5):
            # the regularised normal equations are square: solve them (LAPACK's least-squares
            # drivers are not bit-reproducible from call to call)
            try:
                x = torch.linalg.solve(gram[i] + r * eye, rhs[i])
            except RuntimeError:  # singular
                x = None
            if x is not None and torch.isfinite(x).all():
                out[i] = x
                break
            r *= 10.0
    return out


def fit_linear_baseline(obs: np.ndarray, t_index: np.ndarray, returns: np.ndarray,
                        valid: np.ndarray, ntask: int, reg: float = 1e-5,
                        carry: Optional[np.ndarray] = None,
                        prior: Optional[np.ndarray] = None, return_all: bool = False):
    """Values (T, N) float64 of a rollout (simulation i of task i // (N / ntask)), each task's
    baseline fit on its own valid steps. The ridge term grows tenfold while the solve fails.

    carry, when given (coefficients, (2 obs_dim + 4,)), switches to the order of the reference
    code's sampler, whose one baseline predicts with the fit of the batch processed before and
    is refit afterwards: task i's values come from task i-1's fit, task 0's from carry.

    prior, when given ((ntask, 2 obs_dim + 4) coefficients), predicts task i's values with
    prior[i] instead of its own fit: the order of the reference code's evaluation, one baseline
    per task predicting each step's batch with the fit of the step before (zeros, the unfitted
    baseline, for the first step).

    With return_all, also returns every task's own fit, (ntask, 2 obs_dim + 4): row i is the
    prior of task i's next batch, the last row the carry of the next batch."""
    if carry is not None and prior is not None:
        raise ValueError("give carry or prior, not both")
    T, N = returns.shape
    k = N // ntask
    def per_task(x):
        x = np.ascontiguousarray(x)
        # a read-only view (a broadcast one) would be shared with torch: copy it
        x = torch.as_tensor(x if x.flags.writeable else x.copy())
        x = x.reshape(T, ntask, k, *x.shape[2:]).movedim(1, 0)
        return x.reshape(ntask, T * k, *x.shape[3:])
    feats = features(per_task(obs).double(), per_task(t_index).double())
    mask = per_task(valid).double()
    target = per_task(returns).double()
    xm = feats * mask.unsqueeze(-1)
    gram = xm.transpose(1, 2) @ feats
    rhs = (xm.transpose(1, 2) @ (target * mask).unsqueeze(-1))
    coeffs = _solve_each(gram, rhs, reg)
    used = coeffs
    if carry is not None:
        first = torch.as_tensor(np.asarray(carry, dtype=np.float64)).reshape(1, -1, 1)
        if first.shape[1] != coeffs.shape[1]:
            raise ValueError(f"baseline carry has {first.shape[1]} coefficients, the features "
                             f"{coeffs.shape[1]}")
        used = torch.cat([first, coeffs[:-1]], dim=0)
    if prior is not None:
        used = torch.as_tensor(np.asarray(prior, dtype=np.float64)).unsqueeze(-1)
        if used.shape != coeffs.shape:
            raise ValueError(f"baseline prior should have shape {tuple(coeffs.shape[:2])} "
                             f"(tasks, coefficients), got {tuple(used.shape[:-1])}")
    values = (feats @ used).squeeze(-1)  # (M, T k)
    values = values.reshape(ntask, T, k).movedim(0, 1).reshape(T, N).numpy()
    if return_all:
        return values, coeffs[:, :, 0].numpy().copy()
    return values
