"""How a meta-batch is cut for the outer step's computations and the workers: task chunks of
about chunk_samples samples (whole tasks), and shards of whole chunks, one per worker.

    chunks = chunk_bounds(config, family)      # [(0, 2), (2, 4), ...] task ranges
    shards = shard_chunks(chunks, workers=2)   # [[(0, 2), (2, 4)], [(4, 6), ...]]

The chunks are a function of the configuration alone (never of the worker count): the
outer step's sums are taken per chunk and added in chunk order, whatever the sharding.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from . import device as device_module
from .config import TrainConfig
from .families import TaskFamily
from .samples import chunk_ranges

Chunk = Tuple[int, int]  # tasks [lo, hi) of the meta-batch


def chunk_bounds(config: TrainConfig, family: TaskFamily) -> List[Chunk]:
    """The meta-batch's task chunks: ranges of whole tasks of about config.chunk_samples
    samples each on the CPU (see chunk_ranges), all tasks at once on a GPU."""
    ntask = config.meta_batch_size
    if device_module.resolve(config.device).type != "cpu":
        return [(0, ntask)]
    return chunk_ranges(ntask, family.horizon * config.trajectories, config.chunk_samples)


def shard_chunks(chunks: Sequence[Chunk], shards: int) -> List[List[Chunk]]:
    """Contiguous runs of whole chunks, one per shard, as even in tasks as the chunks allow.
    ValueError when there are fewer chunks than shards (more workers than tasks, or than the
    chunks of a meta-batch of more than samples.MIN_CHUNKS tasks)."""
    if shards > len(chunks):
        ntask = chunks[-1][1] - chunks[0][0] if chunks else 0
        raise ValueError(f"{shards} workers need at least {shards} task chunks; the meta-batch "
                         f"has {len(chunks)} ({ntask} tasks; chunk_samples sets the chunks' "
                         f"size: lower it, or use fewer workers)")
    ntask = chunks[-1][1] - chunks[0][0]
    out: List[List[Chunk]] = []
    start = 0
    for s in range(shards):
        # end this shard at the chunk boundary closest to its even share of the tasks,
        # leaving at least one chunk for each shard after it
        target = chunks[0][0] + ntask * (s + 1) / shards
        last = len(chunks) - (shards - s - 1)
        end = start + 1
        while end < last and abs(chunks[end][1] - target) <= abs(chunks[end - 1][1] - target):
            end += 1
        out.append(list(chunks[start:end]))
        start = end
    return out
