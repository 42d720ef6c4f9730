"""Executors that run independent pieces of the learner (task chunks) side by side, each on one
thread, so that the results do not depend on how many run at once.

    with device.single_threaded():
        executors = ChunkExecutors(cpu_count())
        parts = executors.map(lambda chunk: work(chunk), chunks)   # in chunk order
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Sequence

import torch


class ChunkExecutors:
    """n executors that run task chunks side by side, each chunk's computation on one thread:
    every executor thread sets its own torch, OpenMP and BLAS thread counts to one (a new
    thread would otherwise run BLAS at the machine's default), as device.single_threaded
    does for its caller. The results are those of running the chunks one after the other
    in the caller, whatever n: each chunk's arithmetic is the same, and the caller adds the
    answers in chunk order."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n, thread_name_prefix="chunk",
                                       initializer=torch.set_num_threads, initargs=(1,)) \
            if self.n > 1 else None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
        """[fn(x) for x in items], computed on up to n threads."""
        if self.pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
