"""The metarobot command line.

  metarobot families                          the task families, their sizes and parameters
  metarobot rollout HalfCheetahVel --tasks 8  episodes of a policy on sampled tasks, returns and
                                              throughput
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def _families(args: argparse.Namespace) -> int:
    import metarobot
    print("| family | obs | act | horizon | frame_skip | task parameters | description |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in metarobot.list_families():
        fam = metarobot.make_family(name)
        model = fam.load_model()
        params = ", ".join(_describe(d) for d in fam.parameters)
        print(f"| {name} | {fam.observation_dim(model)} | {model.nu} | {fam.horizon} | "
              f"{fam.frame_skip} | {params} | {fam.description} |")
    return 0


def _describe(dist) -> str:
    from metarobot import terms
    if isinstance(dist, terms.Uniform):
        return f"{dist.name} ~ U[{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, terms.Choice):
        return f"{dist.name} in {{{', '.join(f'{v:g}' for v in dist.values)}}}"
    if isinstance(dist, terms.Disc):
        return f"({dist.x}, {dist.y}) on a disc of radius {dist.radius:g}"
    return dist.name


def _rollout(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import metarobot
    torch.manual_seed(args.seed)
    family = metarobot.make_family(args.family, **({"horizon": args.horizon}
                                                   if args.horizon else {}))
    tasks = family.sample_tasks(args.tasks, seed=args.seed)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=args.envs_per_task, seed=args.seed,
                             num_threads=args.threads)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    start = time.perf_counter()
    traj = sim.rollout(policy, deterministic=args.deterministic)
    elapsed = time.perf_counter() - start
    steps = int(traj.valid.sum())
    returns = traj.returns
    per_task = [float(returns[traj.task_index == i].mean()) for i in range(len(tasks))]
    result = {
        "family": family.name, "simulations": sim.num_envs, "threads": sim.num_threads,
        "env_steps": steps, "seconds": elapsed, "env_steps_per_second": steps / elapsed,
        "mean_return": float(returns.mean()),
        "tasks": [{"task": t.as_dict(), "mean_return": r} for t, r in zip(tasks, per_task)],
        "diverged": int(traj.diverged.sum()),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{sim}: {steps} env steps in {elapsed:.3f} s ({steps / elapsed:,.0f} /s), "
              f"mean return {returns.mean():.2f} (a randomly initialised policy)")
        for t, r in zip(tasks, per_task):
            print(f"  {t!r}: {r:.2f}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="metarobot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("families", help="list the task families")
    p.set_defaults(func=_families)
    p = sub.add_parser("rollout", help="roll out a policy on sampled tasks")
    p.add_argument("family")
    p.add_argument("--tasks", type=int, default=8, help="tasks to sample (default 8)")
    p.add_argument("--envs-per-task", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="0: one per CPU")
    p.add_argument("--horizon", type=int, default=None, help="default: the family's")
    p.add_argument("--deterministic", action="store_true", help="mean actions, no noise")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_rollout)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"metarobot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
