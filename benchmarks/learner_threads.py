"""The learner on one thread per task chunk against the learner on torch's threads: seconds per
meta-iteration at the MAML paper's settings, this tree against an earlier revision, in fresh
processes, alternating, on this machine's cores.

    python benchmarks/learner_threads.py --before 04ef695 --families HalfCheetahDir AntDir

The earlier revision's Python package is taken from git (`git archive`) and run with this
tree's compiled core (the core did not change). Each process runs `--iterations` meta-
iterations and reports the last one's phases (the first warms caches and allocators). Prints
a markdown table: mean and min per phase over `--rounds` processes per variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process: a few meta-iterations, the last one's times as JSON on stdout.
CHILD = r"""
import json, sys, time
before = sys.argv[1]
if before:  # the earlier package, not the editable install's redirect to this tree
    sys.meta_path[:] = [f for f in sys.meta_path if "metarobot" not in repr(f).lower()]
    sys.path.insert(0, before)
import torch
import metarobot
assert metarobot.__file__.startswith(before) if before else True, metarobot.__file__
try:
    from metarobot.config import TrainConfig, make_policy
except ImportError:
    from metarobot.train import TrainConfig, make_policy
from metarobot.train import meta_iteration
from metarobot.families import make_family
family_name, iterations = sys.argv[2], int(sys.argv[3])
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


def earlier_package(rev: str, into: Path) -> Path:
    """The metarobot package of git revision rev under into, with this tree's compiled core
    and models."""
    archive = subprocess.run(["git", "archive", rev, "metarobot"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into)
    import metarobot._core as core
    shutil.copy(core.__file__, into / "metarobot")
    (into / "envs").symlink_to(ROOT / "envs")  # the models, found beside the package
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="04ef695", help="the earlier git revision")
    parser.add_argument("--families", nargs="+", default=["HalfCheetahDir", "AntDir"])
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant")
    parser.add_argument("--iterations", type=int, default=2, help="per process (last timed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = str(earlier_package(args.before, Path(tmp)))
        results = {}
        for family in args.families:
            for r in range(args.rounds):
                # alternate which variant goes first, so drifts of the machine fall on both
                order = [("before", before), ("after", "")]
                for name, path in (order if r % 2 == 0 else order[::-1]):
                    out = subprocess.run([sys.executable, "-c", CHILD, path, family,
                                          str(args.iterations)], capture_output=True,
                                         text=True, check=False, cwd=ROOT)
                    if out.returncode != 0:
                        raise SystemExit(out.stderr[-3000:])
                    times = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((family, name), []).append(times)
                    print(family, name, {k: round(v, 2) for k, v in times.items()},
                          flush=True)
    phases = ["sampling", "returns", "inner", "outer", "total"]
    print(f"\nseconds per meta-iteration (mean / min of {args.rounds} processes, iteration "
          f"{args.iterations} of each), before = {args.before}:\n")
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
