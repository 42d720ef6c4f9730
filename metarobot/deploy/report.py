"""What a run leaves behind: cycles.csv (one Cycle per row, flushed at once), report.json
(strict JSON: null where there is no value) and report.png, and the summary a terminal shows.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .controller import Episode


@dataclasses.dataclass
class Cycle:
    """One cycle of the loop, a row of cycles.csv. Times in seconds on the runner's
    monotonic clock (robot_stamp: on the robot's); jitter_us: tick - scheduled; latency_us:
    observation received -> controls sent; miss: controls sent after the next cycle was due;
    stale: no new observation this cycle; reward, ret: the robot's reward of the step and
    its return so far; safe: the robot reported its safe state. obs (obs_dim,) and controls
    (act_dim,) are None when the cycle had none."""

    stage: int
    episode: int
    cycle: int
    scheduled: float
    tick: float
    read: float
    step: Optional[int] = None
    sent: Optional[float] = None
    robot_stamp: Optional[float] = None
    jitter_us: float = 0.0
    latency_us: Optional[float] = None
    miss: bool = False
    stale: bool = False
    reward: Optional[float] = None
    ret: Optional[float] = None
    done: bool = False
    safe: bool = False
    obs: Optional[np.ndarray] = None
    controls: Optional[np.ndarray] = None


_CYCLE_COLUMNS = [f.name for f in dataclasses.fields(Cycle) if f.name not in ("obs",
                                                                               "controls")]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.9g}" if math.isfinite(value) else ""
    return str(value)


class CycleLog:
    """cycles.csv: a header of Cycle's fields (obs_i, ctrl_i for the vectors), one row per
    cycle, flushed at once (whole up to any stop)."""

    def __init__(self, path: Path, obs_dim: int, act_dim: int):
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.fields = (_CYCLE_COLUMNS + [f"obs_{i}" for i in range(obs_dim)]
                       + [f"ctrl_{i}" for i in range(act_dim)])
        self.writer.writerow(self.fields)
        self.file.flush()
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def write(self, c: Cycle) -> None:
        o = [f"{x:.7g}" for x in c.obs] if c.obs is not None else [""] * self.obs_dim
        u = [f"{x:.7g}" for x in c.controls] if c.controls is not None else [""] * self.act_dim
        self.writer.writerow([_cell(getattr(c, n)) for n in _CYCLE_COLUMNS] + o + u)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if len(values) == 0:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "count": int(a.size)}


def json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has no NaN), numpy scalars as numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_report_dir(report_dir: Optional[Union[str, Path]], overwrite: bool) -> None:
    """Refuses before any work a report folder that is a file, holds an earlier run (unless
    overwrite), or cannot be written (tried: the folder is made and removed again, or a file
    made in it and removed)."""
    if report_dir is None:
        return
    out = Path(report_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the report folder {str(out)!r} is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"the report folder {str(out)!r} holds an earlier run; give "
                         f"--overwrite (overwrite=True) or another folder")
    made = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".metarobot-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write the report folder {str(out)!r}: {exc.strerror}") \
            from None
    finally:
        for p in made:  # innermost first: leave no trace of the probe
            try:
                p.rmdir()
            except OSError:
                pass


def _episode_summary(e: Episode) -> Dict[str, Any]:
    return {"return": e.ret, "steps": e.steps, "acted": len(e.actions),
            "received": e.received, "missed": e.missed, "complete": e.complete,
            "terminated": e.terminated}


def _stage_summary(j: int, eps: Sequence[Episode], step_size: Any) -> Dict[str, Any]:
    complete = [e.ret for e in eps if e.complete]
    rewarded = [r for r in complete if math.isfinite(r)]
    return {"step": j, "step_size": step_size,
            "episodes": [_episode_summary(e) for e in eps],
            "returns": complete,
            "interrupted_returns": [e.ret for e in eps if not e.complete],
            "mean_return": float(np.mean(rewarded)) if rewarded else None}


TRACE_CYCLES = 3000  # a minute at 50 Hz


@dataclasses.dataclass
class Tally:
    """What a run has measured so far: per cycle jitter and read-to-send latency (us), when
    deadlines were missed (s since the start), counts, the episodes by stage and each stage's
    step size (None before adaptation)."""

    jitter: List[float] = dataclasses.field(default_factory=list)
    latency: List[float] = dataclasses.field(default_factory=list)
    misses_at: List[float] = dataclasses.field(default_factory=list)
    counts: Dict[str, int] = dataclasses.field(
        default_factory=lambda: {"cycles": 0, "misses": 0, "stale": 0})
    stages: List[List[Episode]] = dataclasses.field(default_factory=list)
    sizes: List[Any] = dataclasses.field(default_factory=lambda: [None])
    # the last TRACE_CYCLES acted cycles' (s since the start, measured q (n,), target q* (n,)
    # or None) for the report's joint panel
    traces: Deque[Tuple[float, np.ndarray, Optional[np.ndarray]]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=TRACE_CYCLES))

    def summary(self) -> Dict[str, Any]:
        episodes = [e for eps in self.stages for e in eps]
        return {"stages": [_stage_summary(j, eps, self.sizes[j])
                           for j, eps in enumerate(self.stages)],
                "timing": {"period_jitter_us": _percentiles(self.jitter),
                           "read_to_send_us": _percentiles(self.latency),
                           "deadline_misses": self.counts["misses"],
                           "stale_cycles": self.counts["stale"],
                           "cycles": self.counts["cycles"]},
                "observations_missed": sum(e.missed for e in episodes),
                "deadline_miss_times_s": self.misses_at[:1000]}


def _plot_joints(ax: Any, traces: Sequence[Tuple[float, np.ndarray, Optional[np.ndarray]]],
                 names: Sequence[str]) -> None:
    t = np.array([c[0] for c in traces])
    q = np.array([c[1] for c in traces], np.float64)
    for j in range(min(3, q.shape[1])):
        label = names[j] if j < len(names) else f"motor {j}"
        ax.plot(t, q[:, j], color=f"C{j}", lw=1, label=label)
        target = [np.nan if c[2] is None else c[2][j] for c in traces]
        ax.plot(t, target, color=f"C{j}", lw=1, ls="--")
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("rad")
    ax.set_title("joints: measured (solid), targets (dashed)")
    ax.legend(fontsize=7, loc="best")


def _fmt(value: Optional[float], unit: str = "") -> str:
    return "none" if value is None else f"{value:.0f}{unit}"


def summary(report: Dict[str, Any]) -> List[str]:
    """The report in a few lines for a terminal."""
    lines = [f"stopped: {report['stopped']}" + (f" ({report['detail']})" if report["detail"]
                                                  else "")]
    for d in report["agreement"]["differences"]:
        lines.append(f"  allowed mismatch: {d}")
    for stage in report["stages"]:
        n = len(stage["returns"])
        mean = stage["mean_return"]
        text = ("no reward" if mean is None and n else "no complete episode" if not n
                else f"mean return {mean:.2f} over {n} complete episodes")
        cut = len(stage["interrupted_returns"])
        lines.append(f"  after {stage['step']} adaptation steps: {text}"
                     + (f" ({cut} interrupted)" if cut else ""))
    t = report["timing"]
    if t["cycles"] == 0:
        lines.append("  no cycles")
    else:
        j, r = t["period_jitter_us"], t["read_to_send_us"]
        lines.append(f"  period jitter p50 {_fmt(j['p50'], ' us')}, p99 "
                     f"{_fmt(j['p99'], ' us')}; read-to-send p50 {_fmt(r['p50'], ' us')}, "
                     f"p99 {_fmt(r['p99'], ' us')}; {t['deadline_misses']} deadline misses "
                     f"in {t['cycles']} cycles; {report['observations_missed']} observations "
                     f"missed")
    if report["rejected_packets"]:
        lines.append("  rejected packets: " + ", ".join(
            f"{k} {v}" for k, v in sorted(report["rejected_packets"].items())))
    return lines


def plot_report(report: Dict[str, Any], latency_us: Sequence[float], path: Path,
                traces: Sequence[Tuple[float, np.ndarray, Optional[np.ndarray]]] = (),
                names: Sequence[str] = ()) -> None:
    """Returns per episode by stage (complete filled, interrupted hollow), the read-to-send
    latency histogram, deadline misses over the whole run (with the adapted policies' swaps);
    with traces ((s, q, q*) per
    acted cycle) a fourth panel of the first leg's joints (its first three motors, names in
    motor order) measured against their targets, the robot's motion where it gives no
    return."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4 if len(traces) else 3, figsize=(17 if len(traces) else 13,
                                                                   3.6), dpi=110)
    if len(traces):
        _plot_joints(axes[3], traces, names)
    ax = axes[0]
    for stage in report["stages"]:
        eps = stage["episodes"]
        for i, e in enumerate(eps):
            if e["return"] is None:
                continue
            x = stage["step"] + 0.08 * (i - len(eps) / 2)
            ax.scatter([x], [e["return"]], s=18, color=f"C{stage['step'] % 10}",
                       facecolors="none" if not e["complete"] else None)
        if stage["mean_return"] is not None:
            ax.hlines(stage["mean_return"], stage["step"] - 0.3, stage["step"] + 0.3)
    ax.set_xticks([s["step"] for s in report["stages"]])
    ax.set_xlabel("adaptation steps on the robot")
    ax.set_ylabel("episode return (the robot's)")
    ax.set_title(f"{report['family']}: returns per episode")
    ax = axes[1]
    if len(latency_us):
        ax.hist(latency_us, bins=60, color="tab:blue")
        t = report["timing"]["read_to_send_us"]
        ax.set_title(f"p50 {t['p50']:.0f} us, p99 {t['p99']:.0f} us")
    else:
        ax.set_title("no cycles")
    ax.set_xlabel("read-to-send latency (us)")
    ax = axes[2]
    times = report["deadline_miss_times_s"]
    ax.eventplot([times] if times else [[]], colors="tab:red")
    # the run's timeline: where adapted policies came in
    for k, swap in enumerate(report.get("swaps", [])):
        ax.axvline(swap["time_s"], color="tab:green", lw=1.5)
        # staggered, so that swaps close together keep their labels apart
        ax.text(swap["time_s"], 0.97 - 0.1 * (k % 3), f" adapted (step {swap['step'] + 1})",
                transform=ax.get_xaxis_transform(), color="tab:green", fontsize=8, va="top")
    if not times:
        ax.text(0.5, 0.08, "no deadline misses", transform=ax.transAxes, ha="center",
                va="bottom", color="0.4")
    ax.set_xlim(0, max(report["duration_s"], 1e-3))
    ax.set_xlabel("time since the run started (s)")
    j = report["timing"]["period_jitter_us"]
    ax.set_title(f"{report['timing']['deadline_misses']} deadline misses; jitter p99 "
                 f"{_fmt(j['p99'], ' us')}")
    ax.set_yticks([])
    fig.suptitle(f"stopped: {report['stopped']}" + (f" ({report['detail']})"
                                                    if report["detail"] else ""))
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
