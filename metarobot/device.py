"""Where the learner runs: sampling is CPU work (MuJoCo threads), everything after it
(advantage normalisation, inner steps, the outer TRPO step) runs on `device`.

    device = resolve("auto")                       # cuda when a GPU is visible, else cpu
    batch = to_device(samples.process(traj, ...), device)   # once per sampled batch
    host = params_to_cpu(adapted)                  # once per sampling round, for the sampler
    fvp = capture(fvp, example)                    # a CUDA graph of a fixed-shape product

On a GPU the learner is bound by how many small operations it launches, not by their
arithmetic: it runs all tasks in one batch (the CPU's cache-sized task chunks are a CPU choice),
replays the Fisher-vector product, which runs with the same shapes every conjugate-gradient
iteration, as one CUDA graph, and does not wait on the GPU inside the conjugate gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterator

import torch

DEVICES = ("cpu", "cuda", "auto")


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Within: every torch operation of this process runs on the thread that calls it (one
    intra-op thread). torch splits a reduction or matrix product over its threads, and float
    sums in another order round differently, so the learner's bits would depend on the core
    count; on one thread they do not, and parallelism comes from running independent pieces
    (task chunks) side by side instead (metarobot.executors.ChunkExecutors)."""
    previous = torch.get_num_threads()
    # set even when torch already says 1: it also sets this thread's own OpenMP and BLAS
    # thread counts, which a thread that did not set them runs at the machine's default
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def check_name(name: str) -> str:
    """name, when it names a device ('cpu', 'cuda', 'cuda:N' or 'auto'); ValueError otherwise.
    Only the form: whether this machine has that device is resolve's question, asked where
    the device is used (a checkpoint trained on a GPU loads on a robot's CPU)."""
    index = name[5:] if isinstance(name, str) and name.startswith("cuda:") else None
    if not isinstance(name, str) or not (name in DEVICES or (index is not None and
                                                             index.isdigit())):
        raise ValueError(f"device should be one of {DEVICES} (or 'cuda:N'), got {name!r}")
    return name


def resolve(name: str) -> torch.device:
    """'cpu', 'cuda' (or 'cuda:N') or 'auto' (cuda when torch sees a GPU) -> a torch.device;
    ValueError for a device this machine does not have."""
    check_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda
            raise ValueError(f"device {name!r} was asked for, but this torch "
                             f"({torch.__version__}, "
                             f"{'CUDA ' + build if build else 'a CPU-only build'}) sees no GPU; "
                             f"use device 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} was asked for, but torch sees "
                             f"{torch.cuda.device_count()} GPU(s)")
    return device


def to_device(batch: Any, device: torch.device) -> Any:
    """A TaskBatch's per-sample tensors (obs, actions, advantages, mask and any recorded
    sampling-policy tensors) on device, through pinned host memory with non-blocking copies;
    per-task returns and baseline coefficients stay on the host (they are only logged and
    carried). The batch itself when device is the CPU."""
    if device.type == "cpu":
        return batch
    moved: Dict[str, Any] = {}
    for field in dataclasses.fields(batch):
        x = getattr(batch, field.name)
        if field.name == "returns" or not isinstance(x, torch.Tensor):
            continue
        if x.device.type == "cpu":
            x = x.pin_memory()
        moved[field.name] = x.to(device, non_blocking=True)
    return dataclasses.replace(batch, **moved)


def params_to_cpu(params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU copies of a parameter dict (one copy per tensor; the sampler reads them)."""
    return {k: v.detach().to("cpu") for k, v in params.items()}


def capture(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
            warmup: int = 2) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn (a CUDA tensor -> a CUDA tensor of fixed shapes, no host synchronisation inside) as
    one CUDA graph: each call copies its argument into the graph's input, replays the graph
    and returns a copy of its output. Its results equal fn's (the same kernels on the same
    data). Warm-up calls run on a side stream first, as CUDA graph capture requires."""
    static_in = example.detach().clone()
    side = torch.cuda.Stream(device=example.device)
    side.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(example.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def replay(v: torch.Tensor) -> torch.Tensor:
        static_in.copy_(v)
        graph.replay()
        return static_out.clone()
    replay.graph = graph  # kept alive with the closure; tests inspect it
    return replay
