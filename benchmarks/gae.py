"""Advantage (GAE) throughput: metarobot.gae against a numpy reverse loop, a torch Python loop,
TorchRL's vectorised GAE (when installed) and a memory copy of the same bytes, on the CPU and,
where a GPU is visible, on CUDA. Prints markdown tables of time and effective bandwidth (bytes
read and written: reward, value, next_value, the output, and done, terminated).

  python benchmarks/gae.py
  python benchmarks/gae.py --device cuda        # on a GPU machine
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List, Tuple

import numpy as np
import torch

import metarobot

CPU_SHAPES = [(1000, 256), (200, 1024), (1000, 10_000), (256, 65_536)]
CUDA_SHAPES = [(1000, 4096), (256, 65_536), (64, 1 << 20), (200, 1024)]


def timeit(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None,
           budget: float = 1.0) -> float:
    """Best seconds of one call over repeats (within a time budget)."""
    fn()
    sync()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget:
            break
    return best


def numpy_loop(r, v, nv, d, term, gamma, lam):
    adv = np.empty_like(r)
    a = np.zeros(r.shape[1], r.dtype)
    not_done, not_term = 1.0 - d, 1.0 - term
    for t in range(r.shape[0] - 1, -1, -1):
        delta = r[t] + gamma * nv[t] * not_term[t] - v[t]
        a = delta + gamma * lam * not_done[t] * a
        adv[t] = a
    return adv


def torch_loop(r, v, nv, d, term, gamma, lam):
    adv = torch.empty_like(r)
    a = torch.zeros_like(r[0])
    not_done, not_term = (~d).to(r.dtype), (~term).to(r.dtype)
    for t in range(r.shape[0] - 1, -1, -1):
        a = r[t] + gamma * nv[t] * not_term[t] - v[t] + gamma * lam * not_done[t] * a
        adv[t] = a
    return adv


def inputs(T: int, B: int, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r, v, nv = (torch.randn(T, B, generator=g) for _ in range(3))
    d = torch.rand(T, B, generator=g) < 0.01
    term = d & (torch.rand(T, B, generator=g) < 0.5)
    return [x.to(device) for x in (r, v, nv, d, term)]


def nbytes(T: int, B: int, itemsize: int = 4) -> int:
    return T * B * (4 * itemsize + 2)


def bench(device: str, shapes: List[Tuple[int, int]], repeats: int, threads: int) -> None:
    try:
        from torchrl.objectives.value.functional import vec_generalized_advantage_estimate
    except ImportError:
        vec_generalized_advantage_estimate = None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gamma, lam = 0.99, 0.95
    print(f"\n{device.upper()} ({torch.cuda.get_device_name() if device == 'cuda' else f'{threads} threads'}), "
          f"float32, gamma {gamma}, lambda {lam}:\n")
    print("| T x B | metarobot.gae | effective bandwidth | memory copy of the bytes | "
          "vs copy | back to back (per call) | numpy loop | torch loop | torchrl vec GAE | "
          "speed-up vs numpy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for T, B in shapes:
        r, v, nv, d, term = inputs(T, B, device)
        out = torch.empty_like(r)
        # into a preallocated output: a fresh one costs its page faults, not the kernel's time
        ours = timeit(lambda: metarobot.gae(r, v, nv, d, term, gamma, lam, num_threads=threads,
                                            out=out), repeats, sync)
        # 50 calls queued back to back, one wait: the host's cost per call where it exceeds
        # the kernel's (on a GPU the host's work overlaps the kernels')
        def fifty():
            for _ in range(50):
                metarobot.gae(r, v, nv, d, term, gamma, lam, num_threads=threads, out=out)
        pipelined = timeit(fifty, max(3, repeats // 50), sync) / 50
        n = nbytes(T, B)
        src = torch.empty(n, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        copy = timeit(lambda: dst.copy_(src), repeats, sync)
        big = T * B > 3_000_000
        numpy_t = torch_t = rl_t = None
        if device == "cpu" and T * B <= 3_000_000:
            arrays = [x.numpy() for x in (r, v, nv)] + [x.numpy().astype(np.float32)
                                                         for x in (d, term)]
            numpy_t = timeit(lambda: numpy_loop(*arrays, gamma, lam), 3, budget=3.0)
        if not big:
            torch_t = timeit(lambda: torch_loop(r, v, nv, d, term, gamma, lam), 3, sync,
                             budget=3.0)
        if vec_generalized_advantage_estimate is not None and T * B <= 20_000_000:
            def rl():
                return vec_generalized_advantage_estimate(
                    gamma, lam, v.unsqueeze(-1), nv.unsqueeze(-1), r.unsqueeze(-1),
                    d.unsqueeze(-1), terminated=term.unsqueeze(-1), time_dim=0)
            try:
                rl_t = timeit(rl, repeats, sync, budget=3.0)
            except Exception as exc:  # a version of torchrl with another signature
                print(f"(torchrl failed: {exc})")
        fmt = lambda s: "-" if s is None else (f"{s * 1e3:.2f} ms" if s >= 1e-3
                                               else f"{s * 1e6:.1f} us")
        speedup = "-" if numpy_t is None else f"{numpy_t / ours:,.0f}x"
        print(f"| {T} x {B} | {fmt(ours)} | {n / ours / 1e9:.1f} GB/s | {fmt(copy)} | "
              f"{ours / copy:.2f}x | {fmt(pipelined)} | {fmt(numpy_t)} | {fmt(torch_t)} | "
              f"{fmt(rl_t)} | {speedup} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0: all")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    if args.device in ("cpu", "all"):
        bench("cpu", CPU_SHAPES, args.repeats, args.threads)
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available() and metarobot.cuda_available():
            bench("cuda", CUDA_SHAPES, args.repeats, args.threads)
        else:
            print("\n(no GPU visible, or metarobot built without CUDA: CUDA rows skipped)")


if __name__ == "__main__":
    main()
