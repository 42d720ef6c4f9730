"""The learner on one thread per task chunk against the learner on torch's threads: seconds per
meta-iteration at the MAML paper's settings, this tree against an earlier release installed in
an environment of its own, in fresh processes, alternating, on this machine's cores.

    git archive 04ef695 | tar -x -C /tmp/before && python -m venv /tmp/venv-before
    /tmp/venv-before/bin/pip install -c constraints.txt /tmp/before
    python benchmarks/learner_threads.py --before-python /tmp/venv-before/bin/python

Each process runs `--iterations` meta-iterations and reports the last one's phases (the first
warms caches and allocators). Prints a markdown table: mean and min per phase over `--rounds`
processes per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

# Runs in a fresh process: a few meta-iterations, the last one's times as JSON on stdout.
CHILD = r"""
import json, sys, time
import metarobot
try:
    from metarobot.config import TrainConfig, make_policy
except ImportError:
    from metarobot.train import TrainConfig, make_policy
from metarobot.train import meta_iteration
from metarobot.families import make_family
family_name, iterations = sys.argv[1], int(sys.argv[2])
config = TrainConfig(family=family_name, seed=0)
family = make_family(config.family)
policy = make_policy(config, family)
theta = {n: p.detach().clone() for n, p in policy.params().items()}
try:
    from metarobot.cluster import make_workers
except ImportError:
    from metarobot.workers import make_workers
workers = make_workers(config, family, policy)
for it in range(iterations):
    t0 = time.perf_counter()
    theta, result = meta_iteration(config, family, policy, theta, it, workers=workers)
    total = time.perf_counter() - t0
print(json.dumps(dict(result.times, total=total, post_return=result.post_return)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-python", required=True,
                        help="the python of an environment with the earlier release installed")
    parser.add_argument("--families", nargs="+", default=["HalfCheetahDir", "AntDir"])
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant")
    parser.add_argument("--iterations", type=int, default=2, help="per process (last timed)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as away:  # not the source tree: each its own package
        for family in args.families:
            for r in range(args.rounds):
                # alternate which variant goes first, so drifts of the machine fall on both
                order = [("before", args.before_python), ("after", sys.executable)]
                for name, python in (order if r % 2 == 0 else order[::-1]):
                    out = subprocess.run([python, "-c", CHILD, family, str(args.iterations)],
                                         capture_output=True, text=True, check=False,
                                         cwd=away)
                    if out.returncode != 0:
                        raise SystemExit(out.stderr[-3000:])
                    times = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((family, name), []).append(times)
                    print(family, name, {k: round(v, 2) for k, v in times.items()},
                          flush=True)
    phases = ["sampling", "returns", "inner", "outer", "total"]
    print(f"\nseconds per meta-iteration (mean / min of {args.rounds} processes, iteration "
          f"{args.iterations} of each), before = {args.before_python}:\n")
    print("| family | learner | " + " | ".join(phases) + " | after / before (total) |")
    print("| --- | --- | " + " | ".join("---" for _ in phases) + " | --- |")
    for family in args.families:
        for name in ("before", "after"):
            runs = results[(family, name)]
            cells = [f"{statistics.mean(r[p] for r in runs):.2f} / "
                     f"{min(r[p] for r in runs):.2f}" for p in phases]
            ratio = ""
            if name == "after":
                ratio = (f"{statistics.mean(r['total'] for r in runs) / statistics.mean(r['total'] for r in results[(family, 'before')]):.3f}")
            label = "torch threads (before)" if name == "before" else "one thread per chunk"
            print(f"| {family} | {label} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
