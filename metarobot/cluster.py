"""Meta-training on a Ray cluster: one Ray actor per shard of the meta-batch.

    config = TrainConfig(family="AntDir", cluster="ray", ray_address="auto", workers=8,
                         threads_per_worker=2)
    train(config, "runs/ant-dir")        # the same results as the local run, bit for bit

Each actor (`_ShardActor`) holds a `metarobot.workers.TaskWorker` for its shard of whole task
chunks; `RayWorkers` is the driver's side of the seam. What travels per iteration: theta once
(`ray.put`, fetched by every worker), then per call one flat vector out (put once) and one
small answer per chunk back: the gradient, each Fisher-vector product (one round trip per
conjugate-gradient iteration), each line-search candidate's loss and KL. Rollouts and
batches never leave their worker.

A worker that dies (its process killed, its node lost) is replaced in its placement-group
bundle, re-samples its shard from the iteration's seeds (which gives the same batches), and
the call that failed is asked again: the iteration's result is unchanged. Ray is an optional
dependency: `pip install -e ".[ray]"`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import device as device_module
from . import meta, trpo
from .adaptation import Curve
from .config import TrainConfig, parse_ray_address
from .families import TaskFamily, make_family
from .policy import GaussianMLPPolicy
from .sharding import chunk_bounds, shard_chunks
from .workers import InProcessWorkers, Round, TaskWorker, WorkerSet, merge_rounds

RAY_VERSION = "2.60.0"  # the version tested (constraints.txt)
INSTALL = 'pip install -e ".[ray]" (or pip install ray==' + RAY_VERSION + ")"
CONNECT_TIMEOUT = 5.0  # seconds to reach a head before giving up
START_TIMEOUT = 120.0  # seconds for the workers to be placed and started
RETRIES = 3  # replacements of one worker within one call before the call fails


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"cluster 'ray' needs Ray, which is not installed: {INSTALL}") \
            from None
    return ray


def _reach(host: str, port: int) -> None:
    """ValueError unless a TCP connection to host:port opens within CONNECT_TIMEOUT."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach a Ray cluster at {host}:{port} ({exc}); start one with "
                         f"'ray start --head --port {port}' on that machine, or check the "
                         f"address") from None


@contextlib.contextmanager
def _outside_a_source_tree() -> Iterator[None]:
    """Within: the working directory is one whose metarobot, if any, is the one this process
    imported. Ray puts the driver's working directory first on its workers' import path;
    started from a source checkout with metarobot installed (not editable), the workers
    would import the checkout's package, which has no compiled core."""
    here = Path.cwd()
    imported = Path(__file__).resolve().parent
    shadow = here / "metarobot" / "__init__.py"
    if not shadow.is_file() or shadow.resolve().parent == imported:
        yield
        return
    os.chdir(imported.parent)
    try:
        yield
    finally:
        os.chdir(here)


# ---------------------------------------------------------------------- flat tensors on the wire

# The CPU's BLAS may round differently for operands at other addresses (its kernels pick
# their paths by alignment), so a worker rebuilds parameters in the memory layout the driver
# had: views into one flat buffer (the conjugate gradient's vectors, the line search's
# candidates), or one buffer per entry (theta), each freshly allocated (aligned as torch
# allocates).

def pack(params: meta.Params, names: Sequence[str]) -> Tuple[bool, torch.Tensor]:
    """(whether the entries are views into one flat buffer in names' order, the entries as
    one flat tensor)."""
    first = params[names[0]]
    offset = first.storage_offset()
    views = offset == 0
    for n in names:
        t = params[n]
        views = views and t.is_contiguous() and t.storage_offset() == offset and \
            t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        offset += t.numel()
    return views, trpo.flatten(params, names).detach()


def unpack(packed: Tuple[bool, torch.Tensor], shapes: Dict[str, Tuple[int, ...]],
           names: Sequence[str]) -> meta.Params:
    """The parameter dict of pack(), in fresh memory of the packed layout."""
    views, flat = packed
    flat = flat.clone() if views else flat
    out, i = {}, 0
    for n in names:
        size = int(np.prod(shapes[n], dtype=np.int64))
        out[n] = flat[i:i + size].view(shapes[n])
        if not views:
            out[n] = out[n].clone()
        i += size
    return out


class _ShardActor:
    """A task worker in its own process (a Ray actor). Tensors come and go flat."""

    def __init__(self, config: Dict[str, Any], chunks: Optional[List[Tuple[int, int]]],
                 threads: int):
        # the learner's arithmetic runs on one torch thread per chunk, `threads` chunks side
        # by side (see device.single_threaded): the same bits as any other worker count
        torch.set_num_threads(1)
        self.worker = TaskWorker(TrainConfig.from_dict(config), chunks, threads=threads)
        self.names: List[str] = []
        self.shapes: Dict[str, Tuple[int, ...]] = {}

    def pid(self) -> int:
        return os.getpid()

    def sample(self, theta: Tuple[List[str], Dict[str, Tuple[int, ...]],
                                  Tuple[bool, torch.Tensor]],
               iteration: int, carry: Optional[np.ndarray]) -> Round:
        self.names, self.shapes, packed = theta
        return self.worker.sample(unpack(packed, self.shapes, self.names), iteration, carry)

    def call(self, method: str, packed: Tuple[bool, torch.Tensor], *args: Any
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """method's per-chunk values at unpack(packed) (and args): (chunks, parameters) and
        (chunks, 2) (a gradient's loss, a loss and KL, or ppo's [loss, KL]; zeros where
        none)."""
        values = getattr(self.worker, method)(unpack(packed, self.shapes, self.names), *args)
        vectors, scalars = [], []
        for v in values:
            if method == "gradient":
                vectors.append(trpo.flatten(v[0], self.names).detach())
                scalars.append(torch.stack([v[1].detach(), torch.zeros_like(v[1])]))
            elif method == "ppo_gradient":
                vectors.append(trpo.flatten(v[0], self.names).detach())
                scalars.append(v[1].detach())
            elif method == "loss_kl":
                scalars.append(torch.stack([v[0].detach(), v[1].detach()]))
            else:
                vectors.append(trpo.flatten(v, self.names).detach())
        empty = torch.zeros(len(values), 0)
        return (torch.stack(vectors) if vectors else empty,
                torch.stack(scalars) if scalars else empty)

    def adapted(self) -> torch.Tensor:
        """(tasks, parameters) of the shard's adapted policies."""
        adapted = self.worker.adapted()
        return torch.cat([adapted[n].reshape(adapted[n].shape[0], -1) for n in self.names], 1)

    def curves(self, theta: Tuple[List[str], Dict[str, Tuple[int, ...]],
                                  Tuple[bool, torch.Tensor]],
               *args: Any) -> Tuple[np.ndarray, List[Dict[str, torch.Tensor]]]:
        names, shapes, packed = theta
        return self.worker.curves(unpack(packed, shapes, names), *args)


class RayWorkers(WorkerSet):
    """config.workers Ray actors, one per shard, in a placement group that spreads them over
    the cluster's nodes (config.threads_per_worker CPUs each). Connects on creation:
    config.ray_address 'auto', HOST:PORT, or None (a Ray instance on this machine, for the
    run). ValueError, before any work, for an unreachable cluster or one with too few CPUs.

    Counters, for benchmarks: bytes_moved, the tensors that travelled (each worker's copy of a
    broadcast counts); calls, the calls made to all workers at once (each a round trip);
    waited, the seconds the driver spent waiting for answers; replaced, the workers replaced
    after dying."""

    local = False

    def __init__(self, config: TrainConfig, training: bool = True):
        ray = _ray()
        self.ray = ray
        self.config = config
        family = make_family(config.family, **config.family_overrides)
        self.chunks = chunk_bounds(config, family)
        # evaluation (curves) splits its own tasks; its workers hold no training shard
        self.shards = (shard_chunks(self.chunks, config.workers) if training
                       else [None] * config.workers)
        self.bytes_moved = 0
        self.calls = 0
        self.waited = 0.0
        self.replaced = 0
        self._owns_ray = False
        self._round: Optional[Dict[str, Any]] = None
        self.actors: List[Any] = []
        self.group = None
        self._connect()
        try:
            self._place()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------ set-up

    def _connect(self) -> None:
        ray, config = self.ray, self.config
        if ray.is_initialized():
            return  # the caller's connection
        need = config.workers * config.threads_per_worker
        kwargs: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": "WARNING", "configure_logging": True}
        if config.ray_address is None:
            kwargs.update(num_cpus=need)
            # Ray lowers its workers' priority (nice 15) by default: on a machine shared with
            # other work they then lose the CPU to it. A cluster started with `ray start` has
            # its own setting (see docs/cluster.md).
            os.environ.setdefault("RAY_worker_niceness", "0")
        else:
            host, port = parse_ray_address(config.ray_address)
            if host is not None:
                _reach(host, port)
            kwargs["address"] = config.ray_address
        try:
            with _outside_a_source_tree():
                ray.init(**kwargs)
        except ConnectionError as exc:
            raise ValueError(f"cannot connect to the Ray cluster at "
                             f"{config.ray_address!r}: {exc}") from None
        self._owns_ray = True
        total = ray.cluster_resources().get("CPU", 0)
        if total < need:
            raise ValueError(f"{config.workers} workers x {config.threads_per_worker} threads "
                             f"need {need} CPUs; the Ray cluster has {total:g}")

    def _place(self) -> None:
        from ray.util.placement_group import placement_group
        k = self.config.threads_per_worker
        self.group = placement_group([{"CPU": k}] * len(self.shards), strategy="SPREAD")
        try:
            self.ray.get(self.group.ready(), timeout=START_TIMEOUT)
        except self.ray.exceptions.GetTimeoutError:
            raise ValueError(f"the Ray cluster did not place {len(self.shards)} workers of {k} "
                             f"CPUs within {START_TIMEOUT:.0f} s") from None
        self.actors = [self._start(i) for i in range(len(self.shards))]
        self.pids = self.ray.get([a.pid.remote() for a in self.actors], timeout=START_TIMEOUT)

    def _start(self, i: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        cls = _actor_class(self.ray)
        strategy = PlacementGroupSchedulingStrategy(placement_group=self.group,
                                                    placement_group_bundle_index=i)
        return cls.options(num_cpus=self.config.threads_per_worker, max_restarts=0,
                           scheduling_strategy=strategy).remote(
            self.config.to_dict(), self.shards[i], self.config.threads_per_worker)

    def _replace(self, i: int, error: BaseException) -> None:
        """A new actor for shard i, re-sampled from this iteration's seeds."""
        warnings.warn(f"worker {i} was lost ({type(error).__name__}); replacing it and "
                      f"re-sampling its tasks")
        try:
            self.ray.kill(self.actors[i], no_restart=True)
        except Exception:  # already gone
            pass
        self.actors[i] = self._start(i)
        self.pids[i] = self.ray.get(self.actors[i].pid.remote(), timeout=START_TIMEOUT)
        self.replaced += 1
        if self._round is not None:
            r = self._round
            self.ray.get(self.actors[i].sample.remote(r["theta"], r["iteration"],
                                                      r["carry"][i]))

    def _gather(self, submit: Callable[[Any, int], Any],
                count: Optional[int] = None) -> List[Any]:
        """submit(actor, i) on every worker (the first count); each answer, replacing a
        worker that died (up to RETRIES times per worker) and asking it again."""
        lost = (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError)
        t0 = time.perf_counter()
        self.calls += 1
        refs = [submit(a, i) for i, a in enumerate(self.actors[:count])]
        out = []
        for i, ref in enumerate(refs):
            for attempt in range(RETRIES + 1):
                try:
                    out.append(self.ray.get(ref))
                    break
                except lost as exc:
                    if attempt == RETRIES:
                        raise RuntimeError(f"worker {i} died {RETRIES + 1} times in one "
                                           f"call; last: {exc}") from exc
                    self._replace(i, exc)
                    ref = submit(self.actors[i], i)
        self.waited += time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------------------ the seam

    def sample(self, theta: meta.Params, iteration: int, carry: Optional[np.ndarray] = None,
               report: Optional[Callable[[str], None]] = None) -> Round:
        if report is not None:
            report(f"sampling on {len(self.actors)} workers")
        self.names = sorted(theta)
        self.shapes = {n: tuple(theta[n].shape) for n in self.names}
        packed = pack(theta, self.names)
        ref = self.ray.put((self.names, self.shapes, packed))
        self.bytes_moved += packed[1].nbytes * len(self.actors)
        # the carry into each shard: only one shard with 'previous' (see TrainConfig._check_cluster)
        carries = [carry] + [None] * (len(self.actors) - 1)
        self._round = None  # a worker replaced during this call samples when asked again
        rounds = self._gather(lambda a, i: a.sample.remote(ref, iteration, carries[i]))
        self._round = {"theta": ref, "iteration": iteration, "carry": carries}
        self.bytes_moved += sum(r.pre_returns.nbytes + r.post_returns.nbytes for r in rounds)
        return merge_rounds(rounds)

    def _map(self, method: str, p: meta.Params, *args: Any) -> List[Any]:
        packed = pack(p, self.names)
        ref = self.ray.put(packed)
        self.bytes_moved += packed[1].nbytes * len(self.actors)
        answers = self._gather(lambda a, i: a.call.remote(method, ref, *args))
        out: List[Any] = []
        for vectors, scalars in answers:
            self.bytes_moved += vectors.nbytes + scalars.nbytes
            for c in range(scalars.shape[0] if method == "loss_kl" else vectors.shape[0]):
                if method == "gradient":
                    out.append((unpack((False, vectors[c]), self.shapes, self.names),
                                scalars[c, 0]))
                elif method == "ppo_gradient":
                    out.append((unpack((False, vectors[c]), self.shapes, self.names),
                                scalars[c]))
                elif method == "loss_kl":
                    out.append((scalars[c, 0], scalars[c, 1]))
                else:
                    out.append(unpack((False, vectors[c]), self.shapes, self.names))
        return out

    def adapted(self) -> meta.Params:
        rows = self._gather(lambda a, i: a.adapted.remote())
        self.bytes_moved += sum(r.nbytes for r in rows)
        flat = torch.cat(rows)
        out, j = {}, 0
        for n in self.names:
            size = int(np.prod(self.shapes[n], dtype=np.int64))
            out[n] = flat[:, j:j + size].reshape(flat.shape[0], *self.shapes[n])
            j += size
        return out

    def curves(self, theta: meta.Params, tasks: Sequence[Any], steps: int, trajectories: int,
               lr: Any, seed: int, baseline_fit: str) -> Curve:
        """adaptation.adaptation_curve over the workers: tasks split evenly in order, each worker's
        simulations on the random streams they have in the whole batch. A worker lost
        meanwhile is replaced and its tasks evaluated again (they depend on nothing else)."""
        names = sorted(theta)
        packed = self.ray.put((names, {n: tuple(theta[n].shape) for n in names},
                               pack(theta, names)))
        n = min(len(self.actors), len(tasks))
        bounds = [round(len(tasks) * s / n) for s in range(n + 1)]
        self._round = None  # nothing to re-sample: the evaluation is the whole call
        parts = self._gather(
            lambda a, s: a.curves.remote(packed, list(tasks[bounds[s]:bounds[s + 1]]), steps,
                                         trajectories, lr, seed, baseline_fit,
                                         bounds[s] * trajectories), count=n)
        return Curve.join(parts)

    def close(self) -> None:
        ray = self.ray
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []
        if self.group is not None:
            try:
                from ray.util.placement_group import remove_placement_group
                remove_placement_group(self.group)
            except Exception:  # the cluster is gone
                pass
            self.group = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


_ACTOR = None


def _actor_class(ray: Any) -> Any:
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = ray.remote(_ShardActor)
    return _ACTOR


def check_workers(config: TrainConfig, family: TaskFamily) -> None:
    """ValueError, before any connection, unless this machine can run the worker set config
    asks for: its device exists, and the meta-batch splits into config.workers shards."""
    device_module.resolve(config.device)  # a device this machine has
    shard_chunks(chunk_bounds(config, family), config.workers)


def make_workers(config: TrainConfig, family: Optional[TaskFamily] = None,
                 policy: Optional[GaussianMLPPolicy] = None) -> WorkerSet:
    """The worker set config asks for: in this process (cluster 'local'), or Ray actors
    (cluster 'ray'). Checks the machine and connects and starts the workers now, so that a
    missing device, a bad address or an unreachable cluster fails here, before any work."""
    family = family or make_family(config.family, **config.family_overrides)
    check_workers(config, family)
    if config.cluster == "ray":
        return RayWorkers(config)
    return InProcessWorkers(config, family, policy)
