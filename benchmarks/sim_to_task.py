"""Sim-to-task adaptation through the whole robot path: committed checkpoints on held-out tasks
behind the simulated robot (its own process, paced to wall-clock time) with a reality gap, run
by `metarobot hil`: K episodes before adaptation and after each of S inner steps on the
robot's own episodes, and the same with a step size of 0 (the control). Returns before and
after, gains paired per task with standard errors over tasks.

    python benchmarks/sim_to_task.py --families HalfCheetahVel AntDir --tasks 10 --episodes 5
    python benchmarks/sim_to_task.py --checkpoint delay-trained=runs/hcvs-maml \
        --checkpoint domain-randomised=runs/hcvs-dr --robot-task command_delay_ms=0

--checkpoint LABEL=PATH runs the checkpoint at PATH (its own family) instead of the committed
checkpoints of --families; --robot-task NAME=VALUE fixes a task parameter on the robot (e.g. a
servo family's command_delay_ms=0, so that the link's latency is the whole delay).

The default gap: 20 ms action latency with 5 ms jitter, observation noise of std 0.01, every
body mass scaled by a factor in U[0.8, 1.2] (drawn per task). Writes
benchmarks/results/sim_to_task.json and prints a markdown table.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metarobot.families import make_family
from metarobot.config import EVAL_STREAM, stream_seed
from metarobot.runs import load_policy

ROOT = Path(__file__).resolve().parent.parent


def job(checkpoint, family, task, lr, args, seed, folder, label):
    task = dict(task, **args.robot_task)
    """(robot process, runner process, report path) of one task at one step size."""
    gap = ["--latency-ms", str(args.latency_ms), "--jitter-ms", str(args.jitter_ms),
           "--obs-noise", str(args.obs_noise), "--dynamics",
           json.dumps({"body_mass": list(args.mass)}), "--seed", str(seed)]
    robot = subprocess.Popen([sys.executable, "-m", "metarobot.cli", "sim-robot", family,
                              "--task", json.dumps(task), "--port", "0", *gap],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = robot.stdout.readline().split(" on ")[1].split(",")[0]
    report = folder / f"{label}-{seed}-lr{lr}"
    runner = subprocess.Popen([sys.executable, "-m", "metarobot.cli", "hil", checkpoint,
                               "--robot", url, "--episodes", str(args.episodes),
                               "--adapt-steps", str(args.steps), "--lr", str(lr),
                               "--report", str(report), "--seed", str(seed)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return robot, runner, report


def paired(values):
    """mean and standard error over tasks."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["HalfCheetahVel", "AntDir"])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=PATH",
                        help="a checkpoint to run instead of the committed ones (repeatable)")
    parser.add_argument("--robot-task", action="append", default=[], metavar="NAME=VALUE",
                        help="a task parameter fixed on the robot (repeatable)")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5, help="per stage")
    parser.add_argument("--steps", type=int, default=2, help="inner steps on the robot")
    parser.add_argument("--parallel", type=int, default=3, help="robot/runner pairs at once")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--jitter-ms", type=float, default=5.0)
    parser.add_argument("--obs-noise", type=float, default=0.01)
    parser.add_argument("--mass", type=float, nargs=2, default=(0.8, 1.2))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "sim_to_task.json"))
    args = parser.parse_args()
    args.robot_task = {k: float(v) for k, v in (item.split("=", 1) for item in args.robot_task)}
    runs = ([tuple(item.split("=", 1)) for item in args.checkpoint] if args.checkpoint else
            [(f, str(ROOT / "checkpoints" / f"{f}.safetensors")) for f in args.families])
    results = {"settings": vars(args), "families": {}}
    print("| checkpoint | tasks | step size | before | "
          + " | ".join(f"after {j} step{'s' * (j > 1)}" for j in range(1, args.steps + 1))
          + " | " + " | ".join(f"gain {j}" for j in range(1, args.steps + 1))
          + " | stopped early |")
    print("| --- " * (4 + 2 * args.steps + 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, checkpoint in runs:
            config = load_policy(checkpoint).config
            family = config.family
            tasks = make_family(family, **config.family_overrides).sample_tasks(
                args.tasks, stream_seed(args.seed, EVAL_STREAM, 0))
            todo = [(i, t.as_dict(), lr) for i, t in enumerate(tasks)
                    for lr in (config.inner_lr, 0.0)]
            running, done = [], {}
            start = time.monotonic()
            while todo or running:
                while todo and len(running) < args.parallel:
                    i, task, lr = todo.pop(0)
                    running.append((i, lr, *job(checkpoint, family, task, lr, args,
                                                args.seed * 1000 + i, folder, label)))
                for entry in list(running):
                    i, lr, robot, runner, report = entry
                    if runner.poll() is None:
                        continue
                    robot.kill()
                    robot.wait()
                    err = runner.stderr.read()
                    runner.stderr.close()
                    robot.stdout.close()
                    path = report / "report.json"
                    done[(i, lr)] = (json.loads(path.read_text()) if path.exists()
                                     else {"stopped": f"failed: {err[-300:]}", "stages": []})
                    running.remove(entry)
                time.sleep(0.05)
            fam_out = {}
            for lr in (config.inner_lr, 0.0):
                reports = [done[(i, lr)] for i in range(len(tasks))]
                ok = [r for r in reports if len(r["stages"]) == args.steps + 1
                      and r["stopped"] == "completed"]
                early = [f"{r['stopped']} ({r.get('detail', '')})" for r in reports
                         if r not in ok]
                if not ok:
                    print(f"| {label} | 0 | {lr:g} | all runs stopped early: {early[:2]} |")
                    fam_out[f"lr={lr}"] = {"step_size": lr, "tasks": 0, "stopped_early": early}
                    continue
                means = np.array([[s["mean_return"] for s in r["stages"]] for r in ok])
                row = {"step_size": lr, "tasks": len(ok), "stopped_early": early,
                       "per_task": means.tolist()}
                cells = []
                for j in range(args.steps + 1):
                    row[f"after_{j}"] = paired(means[:, j])
                    cells.append("%.1f +- %.1f" % row[f"after_{j}"])
                gains = []
                for j in range(1, args.steps + 1):
                    row[f"gain_{j}"] = paired(means[:, j] - means[:, 0])
                    gains.append("%+.1f +- %.1f" % row[f"gain_{j}"])
                fam_out[f"lr={lr}"] = row
                print(f"| {label} | {len(ok)} | {lr:g}{' (control)' if lr == 0 else ''} | "
                      + " | ".join(cells) + " | " + " | ".join(gains) + f" | {len(early)} |",
                      flush=True)
            fam_out["seconds"] = time.monotonic() - start
            fam_out.update(family=family, checkpoint=checkpoint)
            results["families"][label] = fam_out
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
