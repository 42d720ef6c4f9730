"""The same results on any machine: one small run computed four ways, each in a fresh process
(torch's threads and the workers as a user on another machine would have them), its returns
before and after adaptation per iteration and its parameters' checksum.

    python benchmarks/same_bits.py

Rows: this process's default threads; OMP_NUM_THREADS=1; Ray with 2 workers of 1 thread;
Ray with 2 workers of 2 threads. They should be equal to the last digit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import csv, hashlib, json, sys, warnings
warnings.simplefilter("ignore")
from metarobot import checkpoint
from metarobot.config import TrainConfig
from metarobot.train import train
out, extra = sys.argv[1], json.loads(sys.argv[2])
config = TrainConfig(family="HalfCheetahVel", algo="maml-trpo", iterations=2, meta_batch_size=4,
                     trajectories_per_task=4, seed=31337, chunk_samples=800, **extra)
path = train(config, out, progress=False)
params, _ = checkpoint.load(path)
digest = hashlib.sha256(b"".join(params[k].numpy().tobytes() for k in sorted(params)))
with open(f"{out}/progress.csv", newline="") as f:
    rows = [(float(r["pre_return"]), float(r["post_return"])) for r in csv.DictReader(f)]
print(json.dumps({"rows": rows, "checksum": digest.hexdigest()[:16]}))
"""

WAYS = [
    ("local, default threads", {}, {}),
    ("local, OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, {}),
    ("Ray, 2 workers x 1 thread", {}, {"cluster": "ray", "workers": 2}),
    ("Ray, 2 workers x 2 threads", {}, {"cluster": "ray", "workers": 2,
                                         "threads_per_worker": 2}),
]


def main() -> None:
    lines = ["| run | iteration 0 pre / post | iteration 1 pre / post | parameters (sha256) |",
             "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, env, extra) in enumerate(WAYS):
            done = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/{i}",
                                   json.dumps(extra)], env=dict(os.environ, **env),
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{name}: {done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            cells = [f"{pre:.4f} / {post:.4f}" for pre, post in result["rows"]]
            lines.append(f"| {name} | {' | '.join(cells)} | {result['checksum']} |")
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
