"""Reproduces the MAML paper's locomotion results: meta-trains each family at the paper's
settings (or resumes a run), evaluates on 40 held-out tasks after 0..3 adaptation steps, and
prints a table beside the published numbers with the wall-clock of training and the split of one
meta-iteration. The final checkpoints are copied to checkpoints/<Family>.safetensors (or
--checkpoints DIR).

  python benchmarks/reproduce.py --families HalfCheetahDir
  python benchmarks/reproduce.py --families HalfCheetahVel --time-budget 3600   # as far as it gets
  python benchmarks/reproduce.py --evaluate-only --families HalfCheetahDir      # committed ones
  python benchmarks/reproduce.py --families HalfCheetahDir --runs runs/lvc --out runs/lvc \
      --checkpoints runs/lvc --option inner_objective=lvc     # a variant, beside the committed
  python benchmarks/reproduce.py --families HalfCheetahDir --iterations 200 --continue-committed
      # continues the committed run (checkpoints/<Family>.safetensors and its progress CSV)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from metarobot.config import TrainConfig
from metarobot.evaluation import evaluate
from metarobot.runs import run_from_checkpoint
from metarobot.train import train

ROOT = Path(__file__).resolve().parent.parent

# Mean return after 0 / 1 / 2 / 3 steps and the iterations trained, from the result files the
# MAML paper's authors released with its Figure 5.
PUBLISHED = {
    "HalfCheetahVel": ([-129.5, -78.6, -66.6, -60.8], 475),
    "HalfCheetahDir": ([-50.7, 293.2, 313.5, 315.7], 100),
    "AntVel": ([30.6, 96.7, 100.1, 101.4], 375),
    "AntDir": ([8.7, 499.1, 500.7, 499.1], 575),
}

# Adaptation step sizes of the paper's evaluation scripts (VPG: the first step, then the later
# ones): 0.1 then 0.5 x 0.1 for the cheetahs and AntVel, 0.1 then 0.01 x 0.1 for AntDir, whose
# published returns after 2 and 3 steps are hence nearly those after 1.
EVAL_STEP_SIZES = {
    "HalfCheetahVel": (0.1, 0.05),
    "HalfCheetahDir": (0.1, 0.05),
    "AntVel": (0.1, 0.05),
    "AntDir": (0.1, 0.001),
}


def iteration_split(run: Path) -> dict:
    """Mean seconds per meta-iteration of each phase, from progress.csv."""
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ["time_sampling", "time_returns", "time_inner", "time_outer", "time_total"]
    split = {k[5:]: float(np.mean([float(r[k]) for r in rows])) for k in keys}
    split["iterations"] = len(rows)
    split["wall_clock"] = float(rows[-1]["wall_clock"]) if rows else 0.0
    return split


def parse_options(parser: argparse.ArgumentParser, items: list) -> dict:
    """FIELD=VALUE strings -> {field: value} for TrainConfig; an unknown field or a malformed
    item stops with a usage error naming it."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    fixed = {"family", "iterations", "time_budget", "seed", "fisher_fraction"}
    options = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in fields or name in fixed:
            parser.error(f"--option expects FIELD=VALUE with FIELD a TrainConfig field other "
                         f"than {sorted(fixed)} (they have their own flags), got {item!r}")
        try:
            options[name] = json.loads(text)
        except json.JSONDecodeError:
            options[name] = text
    return options


def record_checkpoint_path(json_path: Path, ckpt: Path) -> None:
    """Rewrites the evaluation JSON's checkpoint path relative to the repository when the
    checkpoint lies inside it, so committed results name no machine's directories."""
    try:
        shown = ckpt.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return
    result = json.loads(json_path.read_text())
    result["checkpoint"] = shown
    json_path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["HalfCheetahDir", "HalfCheetahVel"])
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="run directories go here")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training per family (default: the paper's iterations)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-iterations (default: the paper's for the family)")
    parser.add_argument("--fisher-fraction", type=float, default=None,
                        help="fraction of trajectories for Fisher-vector products")
    parser.add_argument("--option", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other TrainConfig field, VALUE as JSON or a string "
                             "(e.g. --option baseline_fit=previous --option max_kl=0.01)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the checkpoints (see --checkpoints) without training")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                        help="final checkpoints are copied here as <Family>.safetensors (and "
                             "--evaluate-only reads them from here)")
    parser.add_argument("--continue-committed", action="store_true",
                        help="a family without a run in --runs starts from its checkpoint in "
                             "--checkpoints (and benchmarks/results/<Family>_progress.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                        help="evaluation JSON and plots go here")
    args = parser.parse_args()
    options = parse_options(parser, args.option)

    out = Path(args.out)
    lines = ["| family | iterations | wall-clock | 0 steps | 1 step | 2 steps | 3 steps | "
             "published 0 / 1 / 2 / 3 (iterations) |", "| --- | --- | --- | --- | --- | --- | "
             "--- | --- |"]
    splits = []
    for family in args.families:
        published, paper_iterations = PUBLISHED.get(family, ([float("nan")] * 4, 0))
        run = Path(args.runs) / family
        ckpt = Path(args.checkpoints) / f"{family}.safetensors"
        if not args.evaluate_only:
            config = TrainConfig(family=family,
                                 iterations=args.iterations or paper_iterations or 100,
                                 time_budget=args.time_budget, seed=args.seed,
                                 **({} if args.fisher_fraction is None
                                    else {"fisher_fraction": args.fisher_fraction}),
                                 **options)
            latest = run / "checkpoints" / "latest.safetensors"
            if args.continue_committed and not latest.exists():
                progress = ROOT / "benchmarks" / "results" / f"{family}_progress.csv"
                run_from_checkpoint(ckpt, run, progress if progress.exists() else None)
            # a run in --runs resumes with its saved settings; train refuses other values
            # of the fixed ones (runs.resumed_config)
            start = time.perf_counter()
            train(config, run, resume=latest.exists())
            print(f"{family}: trained in {time.perf_counter() - start:.0f} s", flush=True)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(latest, ckpt)
            splits.append((family, iteration_split(run)))
        result = evaluate(ckpt, tasks=40, steps=3, seed=args.seed,
                          lr=EVAL_STEP_SIZES.get(family),
                          json_path=out / f"{family}.json", plot_path=out / f"{family}.png")
        record_checkpoint_path(out / f"{family}.json", ckpt)
        wall = splits[-1][1]["wall_clock"] if splits and splits[-1][0] == family else None
        cells = [f"{m:.1f} +- {e:.1f}" for m, e in zip(result["mean_return"], result["stderr"])]
        lines.append(f"| {family} | {result['iteration']} | "
                     f"{'-' if wall is None else f'{wall / 60:.1f} min'} | " + " | ".join(cells)
                     + f" | {' / '.join(f'{p:g}' for p in published)} ({paper_iterations}) |")
    print("\n" + "\n".join(lines))
    if splits:
        print("\nOne meta-iteration (mean seconds):\n")
        print("| family | sampling | returns + baseline | inner step | outer step | total |")
        print("| --- | --- | --- | --- | --- | --- |")
        for family, s in splits:
            print(f"| {family} | {s['sampling']:.2f} | {s['returns']:.2f} | {s['inner']:.2f} | "
                  f"{s['outer']:.2f} | {s['total']:.2f} |")
    table = out / f"table_{'_'.join(args.families)}.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")
    print(json.dumps({f: s for f, s in splits}, indent=2) if splits else "")


if __name__ == "__main__":
    main()
