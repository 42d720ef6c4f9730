"""Go2Walk controllers on held-out conditions: nominal, a 3 kg payload, one leg at 60 %
strength, a 20 ms command delay, low friction and rough ground (Go2WalkTerrain's, the same
robot and observation). For each checkpoint and condition: mean return, forward speed error
|c_vx - v_x| (m/s; the JSON also has the planar tracking error) and falls per minute after 0,
1 and 2 adaptation steps (the checkpoint's step sizes) and the same with step size 0 (the
control: what sampling again alone changes), each over tasks with standard errors; then the
gain of adapting over the control, paired task by task (both runs share tasks, commands and
random streams, so the pairing takes out most of their noise). Every task of a condition has the same
hidden parameters; they differ in the commands drawn and the simulations' streams. The
commands are forward speeds, vx ~ U[-0.5, 1] m/s with vy and the yaw rate 0, drawn at reset
and every 5 s (--commands family: the family's own ranges instead).

    python benchmarks/go2_conditions.py --checkpoint meta=checkpoints/Go2Walk.safetensors \\
        --checkpoint dr=checkpoints/Go2Walk-dr.safetensors --tasks 10 --trajectories 10

Writes benchmarks/results/go2_conditions.json and prints two markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Dict


from metarobot.adaptation import adaptation_curve, step_sizes
from metarobot.config import EVAL_STREAM, stream_seed
from metarobot.evaluation import over_tasks
from metarobot.families import make_family
from metarobot.runs import load_policy

ROOT = Path(__file__).resolve().parent.parent
NOMINAL = {"payload": 0.0, "com_shift_x": 0.0, "friction": 0.8, "kp": 25.0, "kd": 0.5,
           "command_delay_ms": 0.0, **{f"strength[{i}]": 1.0 for i in range(12)}}
CONDITIONS: Dict[str, Dict[str, float]] = {
    "nominal": {},
    "3 kg payload": {"payload": 3.0},
    "front-right leg at 60 %": {f"strength[{i}]": 0.6 for i in range(3)},
    "20 ms delay": {"command_delay_ms": 20.0},
    "low friction (0.4)": {"friction": 0.4},
    "rough ground (difficulty 0.5)": {"terrain": 1.0, "difficulty": 0.5, "terrain_seed": 7.0},
}
MEASURES = ("tracking_error", "forward_error", "terminations_per_minute")
FORWARD = ((-0.5, 0.0, 0.0), (1.0, 0.0, 0.0))  # (low, high) of (vx, vy, yaw rate)


def forward_commands(family):
    """The family with forward-speed commands only (FORWARD), resampled as its own."""
    return dataclasses.replace(family, commands=dataclasses.replace(
        family.commands, low=FORWARD[0], high=FORWARD[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--tasks", type=int, default=10, help="per condition")
    parser.add_argument("--trajectories", type=int, default=10, help="per task and step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--commands", choices=("forward", "family"), default="forward",
                        help="forward: vx ~ U[-0.5, 1] m/s, no sideways or turning command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "go2_conditions.json"))
    args = parser.parse_args()
    results = {"settings": vars(args), "checkpoints": {}}
    steps = range(args.steps + 1)
    print("| checkpoint | condition | step size | " + " | ".join(
        f"return {j} / error {j} (m/s) / falls {j} (/min)" for j in steps) + " |")
    print("| --- " * (3 + len(steps)) + "|")
    for label, path in (item.split("=", 1) for item in args.checkpoint):
        loaded = load_policy(path)
        if loaded.config.family != "Go2Walk":
            raise SystemExit(f"{path} is a {loaded.config.family} checkpoint, not Go2Walk's")
        family = loaded.family
        sizes = step_sizes(loaded.config, loaded.step_sizes)
        out = results["checkpoints"][label] = {"path": path,
                                               "iteration": loaded.info.get("iteration")}
        for c, (name, change) in enumerate(CONDITIONS.items()):
            # terrains are Go2WalkTerrain's: Go2Walk's robot, observation and terms
            where = make_family("Go2WalkTerrain") if "terrain" in change else family
            if args.commands == "forward":
                where = forward_commands(where)
            task = where.task(**dict(NOMINAL, **change))
            per_task = {}
            for lr in (sizes, (0.0,)):
                start = time.monotonic()
                curve = adaptation_curve(
                    loaded.policy, where, [task] * args.tasks, args.steps, args.trajectories,
                    lr, stream_seed(args.seed, EVAL_STREAM, 10 + c), gamma=loaded.config.gamma,
                    gae_lambda=loaded.config.gae_lambda, threads=args.threads,
                    baseline_fit=loaded.config.baseline_fit, update=loaded.config.inner_rule)
                row = {"return": [list(map(float, v)) for v in over_tasks(curve.returns)]}
                for m in MEASURES:
                    row[m] = [list(map(float, v)) for v in over_tasks(curve.measures[m])]
                row["seconds"] = time.monotonic() - start
                control = lr == (0.0,)
                key = "control" if control else "adapted"
                per_task[key] = {"return": curve.returns,
                                 "forward_error": curve.measures["forward_error"]}
                out.setdefault(name, {})[key] = row
                cells = [f"{row['return'][0][j]:.2f} +- {row['return'][1][j]:.2f} / "
                         f"{row['forward_error'][0][j]:.3f} +- {row['forward_error'][1][j]:.3f}"
                         f" / {row['terminations_per_minute'][0][j]:.1f} +- "
                         f"{row['terminations_per_minute'][1][j]:.1f}" for j in steps]
                shown = ("0 (control)" if control else "learned (Meta-SGD)"
                         if isinstance(sizes, dict) else ", ".join(f"{x:g}" for x in sizes))
                print(f"| {label} | {name} | {shown} | " + " | ".join(cells) + " |",
                      flush=True)
            # adapted minus control, task by task: the two share tasks, commands and streams
            out[name]["gain_over_control"] = {
                m: [list(map(float, v)) for v in over_tasks(per_task["adapted"][m]
                                                              - per_task["control"][m])]
                for m in ("return", "forward_error")}
    print("\nAdapted minus control, paired by task (mean +- standard error): return / forward "
          "error (m/s; negative: better)")
    print("| checkpoint | condition | " + " | ".join(f"after {j} step{'s' if j > 1 else ''}"
                                                    for j in steps if j) + " |")
    print("| --- " * (2 + args.steps) + "|")
    for label, out in results["checkpoints"].items():
        for name in CONDITIONS:
            g = out[name]["gain_over_control"]
            cells = [f"{g['return'][0][j]:+.2f} +- {g['return'][1][j]:.2f} / "
                     f"{g['forward_error'][0][j]:+.3f} +- {g['forward_error'][1][j]:.3f}"
                     for j in steps if j]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
