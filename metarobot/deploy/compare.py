"""Two runs of the same policy side by side: per joint the measured position traces on a
shared time axis and their RMS difference (the sim-to-sim check: one run against sim-robot,
one through another robot or another reality gap).

    result = compare_runs("hil-sim", "hil-go2", out="cmp.png")   # folders, report.json or .mcap
    print("\\n".join(rms_table(result)))

A run is read from its MCAP file (/joints, mcap_log.py): an .mcap path, or a report folder /
report.json whose "mcap" names it (else run.mcap beside it). The episode compared is one of
each run (stage and episode numbers, default the first); time runs from its first cycle.
The RMS difference of joint j is sqrt(mean_t (q_a,j(t) - q_b,j(t))^2) over the times of run a
within the span both runs cover, run b linearly interpolated at them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .mcap_log import MCAP_FILE


@dataclasses.dataclass
class Traces:
    """One episode's measured joint positions: t (T,) s from its first cycle, q (T, n) rad,
    names (n,) the motors in the robot's order; family, path: where they came from."""

    t: np.ndarray
    q: np.ndarray
    names: List[str]
    family: str
    path: Path


def mcap_of(run: Union[str, Path]) -> Path:
    """The MCAP file of a run given as an .mcap path, a report folder or its report.json."""
    path = Path(run)
    if path.suffix == ".mcap":
        if not path.is_file():
            raise ValueError(f"no MCAP file at {str(path)!r}")
        return path
    report = path / "report.json" if path.is_dir() else path
    if not report.is_file():
        raise ValueError(f"{str(run)!r} is neither an .mcap file nor a report folder or "
                         f"report.json")
    try:
        named = json.loads(report.read_text()).get("mcap")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(report)!r} is not JSON: {exc}") from None
    for candidate in ([Path(named)] if named else []) + [report.parent / MCAP_FILE]:
        if candidate.is_file():
            return candidate
    raise ValueError(f"the run at {str(run)!r} has no MCAP log (run without --no-mcap to "
                     f"record one; cycles.csv holds no measured joints)")


def load_traces(run: Union[str, Path], stage: int = 0, episode: int = 0) -> Traces:
    """The measured joint positions of one episode of a run (see mcap_of)."""
    from mcap.reader import make_reader
    path = mcap_of(run)
    t, q, names, family = [], [], None, ""
    with open(path, "rb") as f:
        reader = make_reader(f)
        for _, _, message in reader.iter_messages(topics=["/joints"]):
            m = json.loads(message.data)
            if m["stage"] != stage or m["episode"] != episode:
                continue
            names = names or m["name"]
            t.append(message.log_time * 1e-9)
            q.append([math.nan if v is None else v for v in m["position"]])
        for record in reader.iter_metadata():
            if record.name == "metarobot":
                family = record.metadata.get("family", "")
    if len(t) < 2:
        raise ValueError(f"{str(path)!r} holds {len(t)} cycles of stage {stage} episode "
                         f"{episode}: nothing to compare")
    t_arr = np.asarray(t)
    return Traces(t_arr - t_arr[0], np.asarray(q, np.float64), list(names), family, path)


def rms_difference(a: Traces, b: Traces) -> np.ndarray:
    """(n,) rad: per joint the RMS of a - b over a's times within both runs' span (b
    interpolated linearly); NaN for a joint neither measures everywhere."""
    end = min(a.t[-1], b.t[-1])
    at = a.t <= end
    out = np.empty(len(a.names))
    for j in range(len(a.names)):
        diff = a.q[at, j] - np.interp(a.t[at], b.t, b.q[:, j])
        out[j] = math.sqrt(float(np.mean(diff ** 2)))
    return out


def compare_runs(run_a: Union[str, Path], run_b: Union[str, Path], *,
                 out: Union[str, Path], json_path: Optional[Union[str, Path]] = None,
                 stage: int = 0, episode: int = 0) -> Dict[str, Any]:
    """Plots run a and run b's joint traces (a grid of small panels, one per motor) to out
    (PNG) and writes the RMS differences as JSON (json_path, default out with .json); returns
    what the JSON holds. ValueError before any output when the runs are not of the same
    policy's robot (family, motors)."""
    out = Path(out)
    json_path = Path(json_path) if json_path is not None else out.with_suffix(".json")
    for p in (out, json_path):
        if not p.parent.is_dir():
            raise ValueError(f"the folder of {str(p)!r} does not exist")
    a, b = load_traces(run_a, stage, episode), load_traces(run_b, stage, episode)
    if a.family != b.family:
        raise ValueError(f"the runs are of different families: {a.family!r} and "
                         f"{b.family!r}")
    if a.names != b.names:
        raise ValueError(f"the runs' motors differ: {a.names} and {b.names}")
    rms = rms_difference(a, b)
    result = {"family": a.family, "a": str(a.path), "b": str(b.path), "stage": stage,
              "episode": episode, "seconds_compared": float(min(a.t[-1], b.t[-1])),
              "rms_rad": {n: (float(v) if math.isfinite(v) else None)
                          for n, v in zip(a.names, rms)}}
    _plot(a, b, rms, out)
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False))
    return result


def rms_table(result: Dict[str, Any]) -> List[str]:
    """The RMS differences as a Markdown table."""
    lines = [f"{result['family']}: a = {result['a']}, b = {result['b']} (stage "
             f"{result['stage']}, episode {result['episode']}, "
             f"{result['seconds_compared']:.2f} s)",
             "| joint | RMS difference (rad) |", "| --- | --- |"]
    for name, value in result["rms_rad"].items():
        lines.append(f"| {name} | {'none' if value is None else f'{value:.4f}'} |")
    return lines


def _plot(a: Traces, b: Traces, rms: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(a.names)
    cols = 4 if n > 6 else min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), dpi=100,
                             sharex=True, squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.set_visible(False)
            continue
        ax.plot(a.t, a.q[:, j], lw=1, label="a")
        ax.plot(b.t, b.q[:, j], lw=1, label="b")
        ax.set_title(f"{a.names[j]}: RMS {rms[j]:.3f} rad", fontsize=8)
        ax.tick_params(labelsize=7)
        if j % cols == 0:
            ax.set_ylabel("rad", fontsize=7)
        if j >= n - cols:
            ax.set_xlabel("s from the episode's first cycle", fontsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{a.family}: a = {a.path.name} ({a.path.parent.name}), b = {b.path.name} "
                 f"({b.path.parent.name})", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
