"""The cluster path's cost and how a meta-iteration scales with workers:

    python benchmarks/cluster.py --families HalfCheetahDir AntDir --workers 1 2 \\
        --json benchmarks/results/cluster.json

Runs the same meta-iterations (same seeds: every configuration does the same work and ends
with the same parameters, bit for bit) locally and on a Ray instance
started on this machine with 1, 2, ... workers, and reports the phases of each iteration
(sampling, returns, inner, outer, transfer), the round trips and bytes moved per iteration.
The first iteration of each configuration (warm-up: imports, first calls) is not counted.

From the local run it splits the outer step into the part inside the workers' calls (which
divides among workers) and the driver's own (the conjugate gradient's vector arithmetic, the
line search's bookkeeping), and from the Ray runs it measures the cost of one round trip; then
it prints the modelled iteration time for 8..256 workers (docs/cluster.md, the model):

    T(W) = (per-task work) x (largest shard's tasks) + driver + round trips x (a + b W)
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

import torch

from metarobot.families import make_family
from metarobot.config import TrainConfig, make_policy
from metarobot.train import meta_iteration
from metarobot.cluster import make_workers
from metarobot.sharding import shard_chunks
from metarobot.workers import InProcessWorkers

PHASES = ("sampling", "returns", "inner", "outer", "transfer")


def run(config: TrainConfig, iterations: int) -> Dict[str, Any]:
    """Mean phase times of iterations 1..iterations (0 is the warm-up), and per iteration the
    round trips, bytes, and for a local run the outer step's time inside the workers' calls."""
    family = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    t0 = time.perf_counter()
    workers = make_workers(config, family, policy)
    start_s = time.perf_counter() - t0
    inside = {"s": 0.0, "setup": 0.0}
    sample = workers.sample

    def timed_sample(*args, **kwargs):
        r = sample(*args, **kwargs)
        inside["setup"] = r.times.get("outer", 0.0)  # the outer step's set-up in the workers
        return r
    workers.sample = timed_sample
    if isinstance(workers, InProcessWorkers):
        mapped = workers._map

        def timed_map(method, *args):
            t = time.perf_counter()
            out = mapped(method, *args)
            inside["s"] += time.perf_counter() - t
            return out
        workers._map = timed_map
    rows: List[Dict[str, float]] = []
    try:
        for iteration in range(iterations + 1):
            inside["s"] = 0.0
            calls0, bytes0 = getattr(workers, "calls", 0), getattr(workers, "bytes_moved", 0)
            waited0 = getattr(workers, "waited", 0.0)
            t = time.perf_counter()
            theta, result = meta_iteration(config, family, policy, theta, iteration,
                                           workers=workers)
            total = time.perf_counter() - t
            row = dict(result.times, total=total,
                       calls=getattr(workers, "calls", 0) - calls0,
                       bytes=getattr(workers, "bytes_moved", 0) - bytes0,
                       waited=getattr(workers, "waited", 0.0) - waited0,
                       in_workers=inside["s"], outer_setup=inside["setup"])
            print(f"  {config.cluster} x{config.workers} iteration {iteration}: "
                  f"{total:.2f} s", file=sys.stderr, flush=True)
            if iteration > 0:
                rows.append(row)
    finally:
        workers.close()
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    digest = float(sum(v.double().sum() for v in theta.values()))
    return {"mean": mean, "start_s": start_s, "params_checksum": digest,
            "chunks": len(workers.chunks), "shards": [len(s) for s in workers.shards]}


def round_trips(names_sizes: int, chunks: int, workers: int, repeats: int = 200) -> float:
    """Seconds of one call to `workers` Ray actors that sends a vector of the policy's size
    (put once) and gets back each actor's share of `chunks` such vectors: the cost of a
    round trip of the outer step beyond the work."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def answer(self, v, rows):
            return torch.zeros(rows, v[1].numel()), torch.zeros(rows, 2)

    actors = [Echo.remote() for _ in range(workers)]
    ray.get([a.answer.remote((False, torch.zeros(1)), 1) for a in actors])
    rows = [len(range(i, chunks, workers)) for i in range(workers)]
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        ref = ray.put((False, torch.zeros(names_sizes)))
        ray.get([a.answer.remote(ref, r) for a, r in zip(actors, rows)])
        best.append(time.perf_counter() - t)
    for a in actors:
        ray.kill(a)
    best.sort()
    return best[len(best) // 2]


def model(local: Dict[str, Any], trips: Dict[int, float], calls: float, config: TrainConfig,
          family) -> Dict[str, Any]:
    """The modelled iteration time for W workers of this machine's CPUs each, from the local
    run's per-task work and driver time and the measured round trips."""
    m = local["mean"]
    ntask = config.meta_batch_size
    per_task = (m["sampling"] + m["returns"] + m["inner"] + m["outer_setup"]
                + m["in_workers"]) / ntask
    driver = m["outer"] - m["outer_setup"] - m["in_workers"]
    # least squares of the measured round trips on a + b W
    ws = sorted(trips)
    mw = sum(ws) / len(ws)
    mt = sum(trips[w] for w in ws) / len(ws)
    var = sum((w - mw) ** 2 for w in ws)
    b = max(0.0, sum((w - mw) * (trips[w] - mt) for w in ws) / var) if var else 0.0
    a = max(0.0, mt - b * mw)
    # the driver's part is taken as independent of the tasks (its vectors are the policy's
    # size; the sums over chunks it also does grow with them)
    curve: Dict[str, Dict[str, float]] = {}
    for tasks in (ntask, 256):
        chunks = local_chunks(config, family, tasks)
        curve[str(tasks)] = {}
        for w in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            if w > len(chunks):
                continue
            largest = max(s[-1][1] - s[0][0] for s in shard_chunks(chunks, w))
            curve[str(tasks)][str(w)] = per_task * largest + driver + calls * (a + b * w)
    return {"per_task_s": per_task, "driver_s": driver, "round_trip_a_s": a,
            "round_trip_b_s": b, "round_trips": calls, "round_trip_s": trips,
            "modelled_iteration_s": curve}


def local_chunks(config: TrainConfig, family, tasks: int = 0):
    from metarobot.sharding import chunk_bounds
    import dataclasses
    c = dataclasses.replace(config, meta_batch_size=tasks or config.meta_batch_size)
    return chunk_bounds(c, family)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["HalfCheetahDir", "AntDir"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--cpus", type=int, default=0,
                   help="CPUs in all (default: this machine's); each Ray configuration's "
                        "workers share them evenly")
    p.add_argument("--iterations", type=int, default=2, help="timed, after one warm-up")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import os
    cpus = args.cpus or os.cpu_count() or 1
    warnings.simplefilter("ignore")
    results: Dict[str, Any] = {"cpus": cpus, "torch_threads": torch.get_num_threads(),
                               "families": {}}
    for name in args.families:
        base = TrainConfig(family=name, threads=cpus)
        family = make_family(name)
        print(f"{name}: local ({cpus} threads)", file=sys.stderr)
        local = run(base, args.iterations)
        rays = {}
        for w in args.workers:
            k = max(1, cpus // w)
            config = TrainConfig(family=name, cluster="ray", workers=w, threads_per_worker=k)
            print(f"{name}: Ray, {w} worker(s) x {k} thread(s)", file=sys.stderr)
            rays[w] = run(config, args.iterations)
        import ray
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        nparam = sum(p.numel() for p in make_policy(base, family).params().values())
        nchunks = len(local_chunks(base, family))
        trips = {w: round_trips(nparam, nchunks, w) for w in (1, 2, 4, 8)}
        ray.shutdown()
        calls = rays[min(rays)]["mean"]["calls"]
        fit = model(local, trips, calls, base, family)
        results["families"][name] = {"local": local, "ray": rays, "model": fit}
        print(f"\n{name}, mean of {args.iterations} iterations after a warm-up, {cpus} CPUs:")
        print("| run | sampling | returns | inner | outer | transfer | total | vs local | "
              "round trips | MB moved |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        runs = [("local", local)] + [(f"Ray, {w} worker(s) x {max(1, cpus // w)} thread(s)",
                                      r) for w, r in rays.items()]
        for label, r in runs:
            m = r["mean"]
            print(f"| {label} | " + " | ".join(f"{m.get(k, 0.0):.2f}" for k in PHASES) +
                  f" | {m['total']:.2f} | {m['total'] / local['mean']['total']:.3f} | "
                  f"{m['calls']:.0f} | {m['bytes'] / 1e6:.2f} |")
        print("\nparameters' checksum after the run (equal for every row): " +
              ", ".join(f"{label}: {r['params_checksum']!r}" for label, r in runs))
        print(f"\nmodel: per task {fit['per_task_s'] * 1e3:.1f} ms, driver "
              f"{fit['driver_s'] * 1e3:.1f} ms, {fit['round_trips']:.0f} round trips of "
              f"{fit['round_trip_a_s'] * 1e3:.2f} + {fit['round_trip_b_s'] * 1e3:.2f} x W ms "
              f"(measured: " + ", ".join(f"{w} actors {t * 1e3:.2f} ms"
                                         for w, t in trips.items()) + ")")
        for tasks, curve in fit["modelled_iteration_s"].items():
            print(f"\nmodelled, a meta-batch of {tasks} tasks:")
            print("| workers | iteration (s) | speed-up over 1 worker |")
            print("| --- | --- | --- |")
            for w, t in curve.items():
                print(f"| {w} | {t:.2f} | {curve['1'] / t:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
