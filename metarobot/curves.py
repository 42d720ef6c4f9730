"""Training curves: a run's return before and after adaptation, per meta-iteration, as a PNG.

    metarobot curves runs/cheetah-dir --out curve.png
    metarobot curves runs/a runs/b --label maml fomaml --x wall-clock --out compare.png
    metarobot curves runs/cheetah-dir --evaluations eval100.json eval500.json --out curve.png

Reads the progress.csv that training writes (a run directory or the CSV itself). The training
returns are means over the meta-batch's tasks (noisy: smoothed by a moving average); held-out
evaluations (the JSON of `metarobot evaluate`) are drawn at their checkpoint's iteration, so
the training curve and what a new task gets can be read on one picture.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

# x axes: the progress.csv column each one reads, and its axis label.
X_AXES = {"iteration": ("iteration", "meta-iteration"),
          "wall-clock": ("wall_clock", "training wall-clock (min)")}
_NEEDED = ("iteration", "pre_return", "post_return", "wall_clock")


def read_progress(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """The columns of a run's progress.csv (path: the run directory or the CSV) as float64
    arrays of length (iterations,); wall_clock in seconds since the run began."""
    path = Path(path)
    csv_path = path / "progress.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise ValueError(f"expected a run directory or its progress.csv, got {str(path)!r} "
                         f"(no file {str(csv_path)!r})")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _NEEDED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{str(csv_path)!r} is not a metarobot progress.csv: expected the "
                             f"columns {', '.join(_NEEDED)}, missing {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{str(csv_path)!r} has no iterations yet")
    columns: Dict[str, np.ndarray] = {}
    for name in reader.fieldnames or []:
        try:
            columns[name] = np.array([float(r[name]) if r[name] not in ("", None) else math.nan
                                      for r in rows])
        except ValueError as exc:
            raise ValueError(f"{str(csv_path)!r}: column {name!r} holds a non-number "
                             f"({exc})") from None
    return columns


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """The mean of each run of `window` consecutive values, shape (len(y) - window + 1,); the
    series itself when it is shorter than the window (or window is 1)."""
    if window < 1:
        raise ValueError(f"expected a smoothing window of at least 1 iteration, got {window}")
    if window == 1 or len(y) < window:
        return np.asarray(y, dtype=np.float64)
    c = np.cumsum(np.concatenate([[0.0], np.asarray(y, dtype=np.float64)]))
    return (c[window:] - c[:-window]) / window


def series(progress: Dict[str, np.ndarray], x: str = "iteration",
           smooth: int = 10) -> Dict[str, np.ndarray]:
    """What a curve draws: x (iterations, or minutes of wall-clock), and the smoothed pre- and
    post-adaptation training returns, each aligned to the last iteration of its window."""
    if x not in X_AXES:
        raise ValueError(f"expected x to be one of {', '.join(X_AXES)}, got {x!r}")
    xs = progress[X_AXES[x][0]] / (60.0 if x == "wall-clock" else 1.0)
    pre = moving_average(progress["pre_return"], smooth)
    post = moving_average(progress["post_return"], smooth)
    return {"x": xs[len(xs) - len(post):], "pre_return": pre, "post_return": post}


def plot_training(runs: Sequence[Union[str, Path]], path: Union[str, Path],
                  labels: Optional[Sequence[str]] = None, x: str = "iteration",
                  smooth: int = 10, evaluations: Sequence[Union[str, Path]] = (),
                  title: Optional[str] = None) -> List[Dict[str, np.ndarray]]:
    """Writes a PNG at path: per run, the smoothed training return after adaptation (solid)
    and before (dotted); per evaluation JSON, the held-out mean return before and after one
    step with standard errors, at its checkpoint's iteration (x="iteration" only). Everything
    is read and checked before anything is drawn. Returns the drawn series, one per run."""
    if not runs:
        raise ValueError("expected at least one run directory or progress.csv")
    labels = list(labels) if labels else [Path(r).stem if Path(r).is_file() else Path(r).name
                                          for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"expected one label per run ({len(runs)}), got {len(labels)}")
    if evaluations and x != "iteration":
        raise ValueError("evaluations are drawn at their iteration: use x='iteration'")
    drawn = [series(read_progress(r), x, smooth) for r in runs]
    evals = [_read_evaluation(e) for e in evaluations]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for i, (label, s) in enumerate(zip(labels, drawn)):
        ax.plot(s["x"], s["post_return"], "-", color=f"C{i}", lw=1.2,
                label=f"{label}: after adaptation")
        ax.plot(s["x"], s["pre_return"], ":", color=f"C{i}", lw=1.2,
                label=f"{label}: before")
    if evals:
        it = [e["iteration"] for e in evals]
        for k, marker, name in ((1, "s", "held-out, after 1 step"), (0, "o", "held-out, before")):
            ax.errorbar(it, [e["mean_return"][k] for e in evals],
                        yerr=[e["stderr"][k] for e in evals], fmt=marker, color="k",
                        ms=4, capsize=3, mfc="k" if k else "none", label=name, zorder=5)
    ax.set_xlabel(X_AXES[x][1])
    ax.set_ylabel(f"mean return ({smooth}-iteration average)" if smooth > 1 else "mean return")
    ax.set_title(title or "training tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    plt.close(fig)
    return drawn


def _read_evaluation(path: Union[str, Path]) -> Dict:
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"expected an evaluation JSON (metarobot evaluate --json), "
                         f"could not read {str(path)!r}: {exc}") from None
    missing = [k for k in ("iteration", "mean_return", "stderr") if k not in result]
    if missing or len(result.get("mean_return", [])) < 2:
        raise ValueError(f"{str(path)!r} is not an evaluation with at least one adaptation "
                         f"step (missing {', '.join(missing) or 'the step-1 return'})")
    return result
