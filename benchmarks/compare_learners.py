"""MAML-TRPO, FO-MAML, Reptile and the domain-randomised TRPO baseline (trpo, no
meta-learning, adapted with MAML's step sizes) side by side at equal wall-clock, on held-out
tasks:

    python benchmarks/compare_learners.py --families HalfCheetahVel HalfCheetahDir ArmReach \\
        --minutes 30 --runs runs/compare

Each (family, learner) trains in RUNS/<Family>-<learner> until its wall-clock (the run's own,
summed over resumptions) reaches the budget: stopped midway (a session's end, Ctrl-C), the
same command resumes it exactly. Then each is evaluated on 40 held-out tasks after 0..3
adaptation steps of its own inner update (evaluate's defaults: MAML the paper's 0.1 then 0.05,
Reptile its training step size) and with step size 0 (the control: what resampling alone
changes), with returns and the gains paired per task (standard errors over tasks). Writes
benchmarks/results/compare/<Family>.json, a training-curve PNG per family (return before and
after adaptation against wall-clock) and the markdown table; --commit copies the FO-MAML and
Reptile checkpoints to checkpoints/<Family>-fomaml.safetensors and -reptile.safetensors.
Run nothing else on the machine meanwhile: the budget is wall-clock.
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np

from metarobot import checkpoint
from metarobot.curves import plot_training
from metarobot.config import TrainConfig
from metarobot.evaluation import evaluate
from metarobot.train import train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compare"

# The learners' settings (beyond the family's paper defaults). Reptile's: see BENCHMARKS.md,
# "Reptile", for the settings tried and what mattered.
LEARNERS: Dict[str, Dict[str, Any]] = {
    "maml": {"algo": "maml-trpo"},
    "fomaml": {"algo": "fomaml-trpo"},
    "reptile": {"algo": "reptile", "inner_steps": 1, "inner_lr": 0.1, "reptile_epsilon": 0.1},
    "trpo": {"algo": "trpo"},
}


def paired(values) -> tuple:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0)


def trained(run: Path, family: str, learner: str, budget: float) -> Path:
    """Trains or resumes run until its wall-clock reaches budget seconds; the checkpoint."""
    latest = run / "checkpoints" / "latest.safetensors"
    done = 0.0
    if latest.exists():
        done = float(checkpoint.load(latest)[1].get("wall_clock", 0.0))
    if done >= budget:
        return latest
    config = TrainConfig(family=family, iterations=100000, checkpoint_every=10,
                         time_budget=budget - done, **LEARNERS[learner])
    print(f"{family} {learner}: {'resuming at' if done else 'from'} {done / 60:.1f} of "
          f"{budget / 60:.0f} min", file=sys.stderr, flush=True)
    return train(config, run, resume=latest.exists())


def evaluation(path: Path, tasks: int, steps: int) -> Dict[str, Any]:
    """Returns after 0..steps of the checkpoint's own adaptation, and with step size 0."""
    adapted = evaluate(path, tasks=tasks, steps=steps)
    control = evaluate(path, tasks=tasks, steps=steps, lr=0.0)
    out = {"iteration": adapted["iteration"], "step_sizes": adapted["step_sizes"],
           "mean_return": adapted["mean_return"], "stderr": adapted["stderr"],
           "control_mean_return": control["mean_return"], "control_stderr": control["stderr"]}
    a, c = np.asarray(adapted["per_task"]), np.asarray(control["per_task"])
    out["gain"] = [paired(a[:, k] - a[:, 0]) for k in range(1, steps + 1)]
    out["control_gain"] = [paired(c[:, k] - c[:, 0]) for k in range(1, steps + 1)]
    # adaptation beyond what resampling alone does: paired per task against the control
    out["gain_over_control"] = [paired((a[:, k] - a[:, 0]) - (c[:, k] - c[:, 0]))
                                for k in range(1, steps + 1)]
    return out


def curves(family: str, runs: Dict[str, Path], path: Path) -> None:
    plot_training(list(runs.values()), path, labels=list(runs), x="wall-clock", smooth=5,
                  title=f"{family}: training tasks (2 cores)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["HalfCheetahVel", "HalfCheetahDir",
                                                     "ArmReach"])
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock per run")
    p.add_argument("--runs", default="runs/compare")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--commit", action="store_true",
                   help="copy the FO-MAML and Reptile checkpoints to checkpoints/")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        runs = {}
        result: Dict[str, Any] = {"family": family, "minutes": args.minutes,
                                  "tasks": args.tasks, "learners": {}}
        earlier = RESULTS / f"{family}.json"
        if earlier.exists():  # learners evaluated before, at the same budget, stay
            kept = json.loads(earlier.read_text())
            if kept.get("minutes") == args.minutes and kept.get("tasks") == args.tasks:
                result["learners"] = kept["learners"]
                runs = {name: Path(args.runs) / f"{family}-{name}" for name in kept["learners"]
                        if (Path(args.runs) / f"{family}-{name}").exists()}
        for learner in args.learners:
            run = Path(args.runs) / f"{family}-{learner}"
            path = trained(run, family, learner, args.minutes * 60)
            runs[learner] = run
            info = checkpoint.load(path)[1]
            result["learners"][learner] = dict(
                evaluation(path, args.tasks, args.steps), settings=LEARNERS[learner],
                wall_clock=info.get("wall_clock"), iterations=int(info["iteration"]) + 1)
            if args.commit and learner in ("fomaml", "reptile"):
                shutil.copyfile(path, ROOT / "checkpoints" / f"{family}-{learner}.safetensors")
        (RESULTS / f"{family}.json").write_text(json.dumps(result, indent=1))
        curves(family, runs, RESULTS / f"{family}.png")
        print(f"\n{family}, {args.minutes:g} min of training each, {args.tasks} held-out tasks:")
        print("| learner | iterations | 0 steps | 1 step | 2 steps | 3 steps | gain 1 | gain 2 | "
              "control gain 1 | control gain 2 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for learner, r in result["learners"].items():
            cells = [f"{m:.1f} +- {e:.1f}" for m, e in zip(r["mean_return"], r["stderr"])]
            gains = [f"{m:+.1f} +- {e:.1f}" for m, e in r["gain"][:2]]
            control = [f"{m:+.1f} +- {e:.1f}" for m, e in r["control_gain"][:2]]
            print(f"| {learner} | {r['iterations']} | " + " | ".join(cells + gains + control)
                  + " |")


if __name__ == "__main__":
    main()
