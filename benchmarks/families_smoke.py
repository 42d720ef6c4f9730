"""Short MAML runs on every family beyond the MAML paper's: does adaptation help on held-out tasks?

Meta-trains MAML-TRPO on each family for a fixed wall-clock budget with a small batch (20 tasks x
10 trajectories by default), then evaluates on 40 held-out tasks: mean return +- standard error
after 0, 1 and 2 policy-gradient steps (20 trajectories each by default), and the per-task gain of one step with its
paired standard error; and a control, the same evaluation with step size 0 (the "adapted"
policy is the meta-policy itself), whose "gain" is the evaluation's noise floor. Writes benchmarks/results/families/<Family>.json and prints a table.

  python benchmarks/families_smoke.py                              # every family, 180 s each
  python benchmarks/families_smoke.py --families ArmReach --budget 60
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from metarobot.config import TrainConfig
from metarobot.evaluation import evaluate
from metarobot.train import train

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("HopperParams", "Walker2DParams", "AntTerrainVel", "AntTerrainDir",
            "Walker2DTerrainVel", "Walker2DTerrainDir", "ArmReach", "ArmPush")
# inner step sizes: ProMP's 0.05 for the randomised-dynamics walkers, the MAML paper's 0.1 else
INNER_LR = {"HopperParams": 0.05, "Walker2DParams": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per family")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "families"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "families"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trajectories", type=int, default=10,
                        help="trajectories per task in training")
    parser.add_argument("--eval-trajectories", type=int, default=20,
                        help="trajectories per task and adaptation step in evaluation")
    parser.add_argument("--table", default="table.md", help="file name of the table in --out")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the step-size-0 control evaluation")
    args = parser.parse_args()

    lines = ["| family | iterations | training | 0 steps | 1 step | 2 steps | gain of 1 step "
             "(paired) | gain of 2 steps (paired) | control: gain of 1 step of size 0 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.families:
        lr = INNER_LR.get(name, 0.1)
        config = TrainConfig(family=name, iterations=10_000, time_budget=args.budget,
                             meta_batch_size=20, trajectories_per_task=args.trajectories,
                             inner_lr=lr,
                             seed=args.seed, checkpoint_every=1000)
        run = Path(args.runs) / name
        start = time.perf_counter()
        ckpt = train(config, run, resume=(run / "checkpoints" / "latest.safetensors").exists(),
                     progress=False)
        wall = time.perf_counter() - start
        result = evaluate(ckpt, tasks=40, steps=2, seed=args.seed,
                          trajectories=args.eval_trajectories, lr=lr,
                          json_path=Path(args.out) / f"{name}.json")
        per_task = np.array(result["per_task"])  # (tasks, steps + 1)
        gains = [per_task[:, k] - per_task[:, 0] for k in (1, 2)]
        ses = [g.std(ddof=1) / math.sqrt(len(g)) for g in gains]
        gain, gain_se = gains[0], ses[0]
        control = float("nan"), float("nan")
        if not args.no_control:
            zero = np.array(evaluate(ckpt, tasks=40, steps=1, seed=args.seed,
                                     trajectories=args.eval_trajectories, lr=0.0)["per_task"])
            diff = zero[:, 1] - zero[:, 0]
            control = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))
        cells = [f"{m:.1f} +- {e:.1f}" for m, e in zip(result["mean_return"], result["stderr"])]
        lines.append(f"| {name} | {result['iteration']} | {wall:.0f} s | " + " | ".join(cells)
                     + "".join(f" | {g.mean():+.1f} +- {e:.1f}" for g, e in zip(gains, ses))
                     + f" | {control[0]:+.1f} +- {control[1]:.1f} |")
        print(lines[-1], flush=True)
        summary = dict(result, training_seconds=wall, inner_lr=lr,
                       trajectories_per_task=args.trajectories,
                       eval_trajectories=args.eval_trajectories,
                       gain_one_step=float(gain.mean()), gain_one_step_stderr=float(gain_se),
                       gain_two_steps=float(gains[1].mean()),
                       gain_two_steps_stderr=float(ses[1]),
                       control_gain_step_size_0=control[0],
                       control_gain_step_size_0_stderr=control[1])
        (Path(args.out) / f"{name}.json").write_text(json.dumps(summary, indent=2))
    print("\n" + "\n".join(lines))
    table = Path(args.out) / args.table
    table.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
