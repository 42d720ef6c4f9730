"""Advantages (GAE) and discounted returns, by the C++ core on the CPU and CUDA kernels on a GPU.

Time-major (T, B) inputs, numpy arrays or torch tensors, float32 or float64, CPU or CUDA; the
result has the input's type, dtype and device. Non-contiguous inputs work (no copy).

Convention (TorchRL's): ``done`` ends the lambda recursion at any episode boundary;
``terminated`` stops bootstrapping; a truncated step (done, not terminated) bootstraps from
``next_value``, the value of the observation the episode was cut at.

    delta_t = r_t + gamma * next_value_t * (1 - terminated_t) - value_t
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},    A_T = 0
    G_t     = r_t + gamma * (1 - done_t) * G_{t+1},               G_T = 0

Worked example (gamma = 0.5, lam = 1, one column): an episode truncated at t = 1, then one that
terminates at t = 2.

    t  reward value next_value done terminated   delta            A
    0  1      0     2          0    0            1 + 1 - 0 = 2    2 + 0.5 * 1 = 2.5
    1  1      2     4          1    0            1 + 2 - 2 = 1    1      (recursion ends)
    2  1      0     9          1    1            1 + 0 - 0 = 1    1      (no bootstrap)

Value targets are A + value: 2.5, 3, 1.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np

from . import _core

_FLOATS = ("float32", "float64")


def cuda_available() -> bool:
    """Whether the CUDA kernels were compiled in and a GPU is visible."""
    return bool(_core.cuda_compiled()) and _core.cuda_device_count() > 0


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _describe(name: str, x: Any) -> Tuple[str, Tuple[int, ...], str, str]:
    """(kind, shape, dtype, device) of an argument, or ValueError."""
    if _is_torch(x):
        return "torch", tuple(x.shape), str(x.dtype).replace("torch.", ""), x.device.type
    if isinstance(x, np.ndarray):
        return "numpy", x.shape, str(x.dtype), "cpu"
    raise ValueError(f"{name} should be a numpy array or a torch tensor, got {type(x).__name__}")


def _pointer(x: Any, itemsize: int) -> Tuple[int, int, int]:
    """(address, stride over t, stride over b) in elements of a 2-D array or tensor."""
    if _is_torch(x):
        return x.data_ptr(), x.stride(0), x.stride(1)
    return x.ctypes.data, x.strides[0] // itemsize, x.strides[1] // itemsize


def _as_flags(name: str, x: Any, kind: str) -> Any:
    """done/terminated as bool (one byte, 0 or 1, read in place); other dtypes are compared with
    zero (a copy)."""
    if kind == "torch":
        import torch
        return x if x.dtype == torch.bool else x != 0
    return x if x.dtype == np.bool_ else x != 0


def _run(args: Dict[str, Any], gamma: float, lam: float, num_threads: int, out: Any = None):
    names = list(args)
    described = {n: _describe(n, x) for n, x in args.items()}
    kinds = {d[0] for d in described.values()}
    if len(kinds) > 1:
        mix = ", ".join(f"{n}: {d[0]}" for n, d in described.items())
        raise ValueError(f"arguments should all be numpy arrays or all torch tensors, got {mix}")
    kind = kinds.pop()
    shape = described["reward"][1]
    for n, (_, s, _, _) in described.items():
        if s != shape:
            raise ValueError(f"{n} should have reward's shape {shape}, got {s}")
    if len(shape) not in (1, 2):
        raise ValueError(f"inputs should be (T,) or (T, B), time-major; got shape {shape}")
    dtype = described["reward"][2]
    if dtype not in _FLOATS:
        raise ValueError(f"reward should be float32 or float64, got {dtype}")
    for n in ("value", "next_value"):
        if n in described and described[n][2] != dtype:
            raise ValueError(f"{n} should have reward's dtype {dtype}, got {described[n][2]}")
    device = described["reward"][3]
    for n, d in described.items():
        if d[3] != device:
            raise ValueError(f"{n} should be on reward's device {device}, got {d[3]}")
    if kind == "torch" and device not in ("cpu", "cuda"):
        raise ValueError(f"tensors should be on the CPU or a CUDA device, got {device}")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not (isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0):
            raise ValueError(f"{name} should be a number in [0, 1], got {x!r}")

    squeeze = len(shape) == 1
    result = None
    arrays = {}
    for n, x in args.items():
        if n in ("done", "terminated"):
            x = _as_flags(n, x, kind)
        if squeeze:
            x = x.reshape(-1, 1) if kind == "numpy" else x.unsqueeze(1)
        if kind == "numpy" and any(s % x.itemsize for s in x.strides):
            x = np.ascontiguousarray(x)
        arrays[n] = x
    steps, batch = arrays["reward"].shape
    if out is not None:
        _check_out(out, kind, shape, dtype, device)
        result = out
        out = out.reshape(steps, batch) if kind == "numpy" else out.view(steps, batch)
    elif kind == "torch":
        import torch
        out = torch.empty((steps, batch), dtype=arrays["reward"].dtype,
                          device=arrays["reward"].device)
    else:
        out = np.empty((steps, batch), dtype=dtype)
    out_ptr = out.data_ptr() if kind == "torch" else out.ctypes.data
    if steps and batch:
        ptrs: List[int] = []
        strides: List[int] = []
        for n in ("reward", "value", "next_value", "done", "terminated"):
            if n in arrays:
                x = arrays[n]
                itemsize = 1 if n in ("done", "terminated") else np.dtype(dtype).itemsize
                p, st, sb = _pointer(x, itemsize)
            else:
                p, st, sb = 0, 0, 0
            ptrs.append(p)
            strides += [st, sb]
        stream = 0
        if device == "cuda":
            import torch
            if not cuda_available():
                raise ValueError("CUDA tensors were given but metarobot was built without CUDA "
                                 "or sees no GPU")
            with torch.cuda.device(arrays["reward"].device):
                stream = torch.cuda.current_stream().cuda_stream
                _core.advantages(dtype, device, steps, batch, ptrs, strides, float(gamma),
                                 float(lam), out_ptr, stream, num_threads)
        else:
            _core.advantages(dtype, device, steps, batch, ptrs, strides, float(gamma),
                             float(lam), out_ptr, stream, num_threads)
    if result is not None:
        return result
    return out[:, 0] if squeeze else out


def _check_out(out: Any, kind: str, shape: Tuple[int, ...], dtype: str, device: str) -> None:
    okind, oshape, odtype, odevice = _describe("out", out)
    if (okind, oshape, odtype, odevice) != (kind, shape, dtype, device):
        raise ValueError(f"out should be a {kind} {dtype} array of shape {shape} on {device}, "
                         f"got a {okind} {odtype} array of shape {oshape} on {odevice}")
    contiguous = out.is_contiguous() if kind == "torch" else out.flags.c_contiguous
    if not contiguous:
        raise ValueError("out should be C-contiguous")
    if kind == "numpy" and not out.flags.writeable:
        raise ValueError("out is read-only")


def gae(reward, value, next_value, done, terminated, gamma: float, lam: float,
        num_threads: int = 0, out=None):
    """Generalized advantage estimates, (T, B) or (T,) like reward.

    Args:
      reward: (T, B) rewards.
      value: (T, B) V(s_t).
      next_value: (T, B) V(s_{t+1}), the value of the observation after step t (at a
        truncated step, of the observation the episode was cut at).
      done: (T, B) bool, the episode ended at step t (terminated or truncated).
      terminated: (T, B) bool, it ended in a terminal state (no bootstrap).
      gamma: discount in [0, 1]. lam: GAE lambda in [0, 1].
      num_threads: CPU threads over B; 0: one per CPU.
      out: optional C-contiguous array or tensor like reward to write the result into.

    Returns advantages with reward's type, dtype and device; value targets are
    advantages + value.
    """
    return _run(dict(reward=reward, value=value, next_value=next_value, done=done,
                     terminated=terminated), gamma, lam, num_threads, out)


def discounted_returns(reward, done, gamma: float, num_threads: int = 0, out=None):
    """G_t = r_t + gamma * (1 - done_t) * G_{t+1}, (T, B) or (T,) like reward; no bootstrap."""
    return _run(dict(reward=reward, done=done), gamma, 0.0, num_threads, out)
