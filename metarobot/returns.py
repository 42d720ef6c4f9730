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
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core

_FLOATS = ("float32", "float64")


_CUDA_DEVICES: Optional[int] = None


def cuda_available() -> bool:
    """Whether the CUDA kernels were compiled in and a GPU is visible."""
    global _CUDA_DEVICES
    if _CUDA_DEVICES is None:
        _CUDA_DEVICES = _core.cuda_device_count() if _core.cuda_compiled() else 0
    return _CUDA_DEVICES > 0


class _Arg:
    """What the kernel needs of one argument: kind ('numpy' or 'torch'), shape, dtype name,
    device type, address and (t, b) strides in elements; flags become bool first."""

    __slots__ = ("value", "kind", "shape", "dtype", "device")

    def __init__(self, name: str, x: Any, flags: bool):
        if isinstance(x, np.ndarray):
            if flags and x.dtype != np.bool_:
                x = x != 0
            self.kind, self.dtype, self.device = "numpy", x.dtype.name, "cpu"
        elif type(x).__module__.startswith("torch") and hasattr(x, "data_ptr"):
            if flags and x.dtype is not _torch_bool():
                x = x != 0
            self.kind, self.dtype, self.device = "torch", str(x.dtype)[6:], x.device.type
        else:
            raise ValueError(f"{name} should be a numpy array or a torch tensor, got "
                             f"{type(x).__name__}")
        self.value, self.shape = x, tuple(x.shape)

    def pointer(self) -> Tuple[Any, int, int]:
        """(address, or the numpy array whose data the core reads, stride_t, stride_b)."""
        x = self.value
        if self.kind == "torch":
            st = x.stride()
            return x.data_ptr(), st[0], st[1]
        item = x.itemsize
        if x.strides[0] % item or x.strides[1] % item:
            x = self.value = np.ascontiguousarray(x)
        return x, x.strides[0] // item, x.strides[1] // item


def _torch_bool():
    import torch
    return torch.bool


def _torch_fast(args: Tuple[Any, ...], gamma: Any, lam: Any, num_threads: int, out: Any):
    """The common case, torch (T, B) tensors of the right dtypes on the CPU or on the current
    CUDA device, checked with a few cheap attribute reads (the general path's checks cost
    about 10 us on the CPU and over 100 us with CUDA's, more than a kernel). Returns None
    where anything differs; the general path then checks and explains."""
    torch = sys.modules.get("torch")
    if torch is None or type(gamma) is not float or type(lam) is not float:
        return None
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        return None
    reward = args[0]
    if type(reward) is not torch.Tensor:
        return None
    device = reward.device
    on_cpu = reward.is_cpu
    if not on_cpu and (not reward.is_cuda or not cuda_available()
                       or device.index != torch.cuda.current_device()):
        return None
    dtype = reward.dtype
    if dtype is torch.float32:
        name = "float32"
    elif dtype is torch.float64:
        name = "float64"
    else:
        return None
    shape = reward.shape
    if len(shape) != 2:
        return None
    floats = len(args) - 2  # reward, value, next_value then done, terminated; or reward, done
    ptrs: List[Any] = []
    strides: List[int] = []
    for k, x in enumerate(args):
        if type(x) is not torch.Tensor or x.device != device or x.shape != shape:
            return None
        if x.dtype is not (dtype if k < floats else torch.bool):
            return None
        ptrs.append(x.data_ptr())
        strides += x.stride()
    if floats == 1:  # discounted returns: no value, next_value, terminated
        ptrs = [ptrs[0], None, None, ptrs[1], None]
        strides = strides[:2] + [0, 0, 0, 0] + strides[2:] + [0, 0]
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=device)
    elif (type(out) is not torch.Tensor or out.device != device or out.dtype is not dtype
          or out.shape != shape or not out.is_contiguous()):
        return None
    if shape[0] and shape[1]:
        if on_cpu:
            _core.advantages(name, "cpu", shape[0], shape[1], ptrs, strides, gamma, lam,
                             out.data_ptr(), 0, num_threads)
        else:
            _core.advantages(name, "cuda", shape[0], shape[1], ptrs, strides, gamma, lam,
                             out.data_ptr(), _current_stream(device.index), num_threads)
    return out


def _current_stream(index: int) -> int:
    """The raw handle of the current CUDA stream of device index (under a graph capture, the
    capturing stream), by torch's own cheap accessor where it has one."""
    import torch
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw(index)
    return torch.cuda.current_stream(index).cuda_stream


def _run(args: Dict[str, Any], gamma: float, lam: float, num_threads: int, out: Any = None):
    views = {n: _Arg(n, x, n in ("done", "terminated")) for n, x in args.items()}
    ref = views["reward"]
    kind, shape, dtype, device = ref.kind, ref.shape, ref.dtype, ref.device
    for n, v in views.items():
        if v.kind != kind:
            mix = ", ".join(f"{m}: {w.kind}" for m, w in views.items())
            raise ValueError(f"arguments should all be numpy arrays or all torch tensors, got "
                             f"{mix}")
        if v.shape != shape:
            raise ValueError(f"{n} should have reward's shape {shape}, got {v.shape}")
        if v.device != device:
            raise ValueError(f"{n} should be on reward's device {device}, got {v.device}")
    if len(shape) not in (1, 2):
        raise ValueError(f"inputs should be (T,) or (T, B), time-major; got shape {shape}")
    if dtype not in _FLOATS:
        raise ValueError(f"reward should be float32 or float64, got {dtype}")
    for n in ("value", "next_value"):
        if n in views and views[n].dtype != dtype:
            raise ValueError(f"{n} should have reward's dtype {dtype}, got {views[n].dtype}")
    if kind == "torch" and device not in ("cpu", "cuda"):
        raise ValueError(f"tensors should be on the CPU or a CUDA device, got {device}")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not (isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0):
            raise ValueError(f"{name} should be a number in [0, 1], got {x!r}")

    squeeze = len(shape) == 1
    if squeeze:
        for v in views.values():
            v.value = v.value.reshape(-1, 1)
    steps, batch = views["reward"].value.shape
    if out is not None:
        o = _Arg("out", out, False)
        if (o.kind, o.shape, o.dtype, o.device) != (kind, shape, dtype, device):
            raise ValueError(f"out should be a {kind} {dtype} array of shape {shape} on "
                             f"{device}, got a {o.kind} {o.dtype} array of shape {o.shape} on "
                             f"{o.device}")
        contiguous = out.is_contiguous() if kind == "torch" else out.flags.c_contiguous
        if not contiguous:
            raise ValueError("out should be C-contiguous")
        if kind == "numpy" and not out.flags.writeable:
            raise ValueError("out is read-only")
        result = out
    elif kind == "torch":
        import torch
        result = torch.empty(shape, dtype=ref.value.dtype, device=ref.value.device)
    else:
        result = np.empty(shape, dtype=dtype)
    if steps and batch:
        ptrs: List[Any] = []
        strides: List[int] = []
        for n in ("reward", "value", "next_value", "done", "terminated"):
            p, st, sb = views[n].pointer() if n in views else (None, 0, 0)
            ptrs.append(p)
            strides += [st, sb]
        out_ptr = result.data_ptr() if kind == "torch" else result
        if device == "cuda":
            import torch
            if not cuda_available():
                raise ValueError("CUDA tensors were given but metarobot was built without CUDA "
                                 "or sees no GPU")
            with torch.cuda.device(ref.value.device):
                stream = _current_stream(torch.cuda.current_device())
                _core.advantages(dtype, device, steps, batch, ptrs, strides, float(gamma),
                                 float(lam), out_ptr, stream, num_threads)
        else:
            _core.advantages(dtype, device, steps, batch, ptrs, strides, float(gamma),
                             float(lam), out_ptr, 0, num_threads)
    return result


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
    fast = _torch_fast((reward, value, next_value, done, terminated), gamma, lam,
                           num_threads, out)
    if fast is not None:
        return fast
    return _run(dict(reward=reward, value=value, next_value=next_value, done=done,
                     terminated=terminated), gamma, lam, num_threads, out)


def discounted_returns(reward, done, gamma: float, num_threads: int = 0, out=None):
    """G_t = r_t + gamma * (1 - done_t) * G_{t+1}, (T, B) or (T,) like reward; no bootstrap."""
    fast = _torch_fast((reward, done), gamma, 0.0, num_threads, out)
    if fast is not None:
        return fast
    return _run(dict(reward=reward, done=done), gamma, 0.0, num_threads, out)
