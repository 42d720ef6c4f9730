"""The fixed-rate loop against a robot, with timing statistics, a watchdog, per-cycle logs,
and adaptation on the robot through the meta-learner's own inner step.

    controller = Controller.from_checkpoint("checkpoints/HalfCheetahVel.safetensors")
    report = run(controller, UdpRobot.from_url("udp://127.0.0.1:9870"), episodes=4,
                 adapt_steps=1, report_dir="hil-report")

Before the first command the robot's spec is checked against the policy (sizes, family,
observation and action names in order, control period): a mismatch stops the run naming the
first difference, unless allowed (then recorded in the report). Every cycle, on the
monotonic clock at the control period: read the robot's newest observation, compute the
controls, send them, log the cycle (a Cycle record) to cycles.csv, flushed at once so the
log is whole up to any stop. The watchdog, which wakes on its own deadline as well as every
cycle, stops the robot (STOP until ACK) and ends the run with a reason on a stale or missing
observation, repeated deadline misses, a non-finite observation or control, a joint position
or velocity outside the model's limits, the robot reporting its safe state, or a signal
(SIGINT, SIGTERM, SIGHUP): each ends the run with STOP and a report.

With adapt_steps K the run has K + 1 stages of `episodes` episodes each: stage j runs the
policy of step j, sampling its actions (the data of an inner step), and between stages the
episodes of the stage just run adapt the policy by the inner step training and evaluation
use, with the step size of the one rule (Controller.step_size). The policy is swapped
between episodes, never within one. Returns are the robot's own (its running return in
every observation), so lost observations hide no reward.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .controller import Controller, Episode
from .robot import Reading, Robot, RobotSpec

# why a run ends (report["stopped"])
STOP_REASONS = ("completed", "stale observation", "no first observation", "deadline misses",
                "non-finite observation", "non-finite controls", "joint limit",
                "robot safe state", "no reward to adapt on", "interrupted")


class Stop(Exception):
    """The watchdog's verdict: why the run stops now."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Mismatch(ValueError):
    """The robot is not the one the policy was made for (the first difference, in words)."""


class Interrupted(BaseException):
    """A signal that ends the run (SIGINT, SIGTERM, SIGHUP): the run stops the robot and
    writes its report. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclasses.dataclass
class Limits:
    """What the watchdog allows. stale_after: seconds without a new observation while an
    episode runs; max_misses: consecutive deadline misses; joint_margin: how far (rad or m)
    a limited joint may pass its range (MuJoCo's limits are soft: in simulation the committed
    AntDir policy overshoots its hips by up to 0.33 rad, the cheetah its joints by 0.06);
    max_velocity: |joint velocity| bound (rad/s or m/s) for observed velocities."""

    stale_after: float = 0.25
    max_misses: int = 5
    joint_margin: float = 0.5
    max_velocity: float = 100.0

    def __post_init__(self):
        for name in ("stale_after", "max_velocity"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} should be a positive number, got {value!r}")
        if not (isinstance(self.joint_margin, (int, float)) and self.joint_margin >= 0):
            raise ValueError(f"joint_margin should be >= 0, got {self.joint_margin!r}")
        if isinstance(self.max_misses, bool) or not isinstance(self.max_misses, int) \
                or self.max_misses < 1:
            raise ValueError(f"max_misses should be an integer >= 1, got {self.max_misses!r}")


# ------------------------------------------------------------------------------ the log

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


# ----------------------------------------------------------------------------- the watchdog

def check_stale(now: float, last_fresh: float, limits: Limits) -> None:
    """Stop when no new observation came for longer than limits.stale_after."""
    if now - last_fresh > limits.stale_after:
        raise Stop("stale observation", f"no new observation for {(now - last_fresh) * 1e3:.0f}"
                                        f" ms (limit {limits.stale_after * 1e3:.0f} ms)")


def check_safe(reading: Reading, spec: RobotSpec) -> None:
    """Stop when the robot says it is in its safe state (it obeys no controls)."""
    if reading.safe:
        raise Stop("robot safe state", f"the robot reports its safe state at step "
                                       f"{reading.step} (it had no command within its "
                                       f"command timeout of {spec.command_timeout * 1e3:g} ms)")


def check_observation(reading: Reading, joints: Sequence[tuple], limits: Limits) -> None:
    """Stop on a non-finite observation, or a joint outside its range or velocity bound."""
    obs = reading.obs
    if not np.isfinite(obs).all():
        raise Stop("non-finite observation", f"at step {reading.step}")
    for index, kind, name, lo, hi in joints:
        v = obs[index]
        if kind == "qvel" and abs(v) > limits.max_velocity:
            raise Stop("joint limit", f"{name} velocity {v:.3g} beyond "
                                      f"+-{limits.max_velocity:g}")
        if kind == "qpos" and not lo - limits.joint_margin <= v <= hi + limits.joint_margin:
            raise Stop("joint limit", f"{name} at {v:.3g}, range [{lo:.3g}, {hi:.3g}] +- "
                                      f"{limits.joint_margin:g}")


def check_controls(controls: np.ndarray, step: int) -> None:
    if not np.isfinite(controls).all():
        raise Stop("non-finite controls", f"at step {step}")


def check_misses(consecutive: int, limits: Limits) -> None:
    if consecutive >= limits.max_misses:
        raise Stop("deadline misses", f"{consecutive} cycles in a row finished past their "
                                      f"deadline")


def agreement(spec: RobotSpec, controller: Controller) -> List[str]:
    """The differences between the robot's spec and the policy's interface, most basic
    first: family, observation names in order, action names in order, control period. A
    robot that names nothing differs (nothing shows it is the policy's robot)."""
    want = controller.interface()
    out = []
    if spec.family != want["family"]:
        out.append(f"the robot runs family {spec.family or '(none named)'!r}, the policy was "
                   f"trained on {want['family']!r}")
    for what, got, expected in (("observation", spec.observation_names,
                                 want["observation_names"]),
                                ("action", spec.action_names, want["action_names"])):
        if not got:
            out.append(f"the robot names no {what} entries (the policy's: "
                       f"{', '.join(expected[:3])}, ...)")
            continue
        for i, (a, b) in enumerate(zip(got, expected)):
            if a != b:
                out.append(f"{what} {i} is {a!r} on the robot, {b!r} for the policy")
                break
    period = want["control_period"]
    if not math.isclose(spec.control_period, period, rel_tol=1e-6):
        out.append(f"the robot's control period is {spec.control_period * 1e3:g} ms, the "
                   f"policy's {period * 1e3:g} ms")
    return out


# ----------------------------------------------------------------------------- signals

class _Signals:
    """While armed, SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread; once
    disarmed (the robot is being stopped) they are only noted, so that nothing cuts the
    STOP short. Restores the previous handlers on exit. Off the main thread: no handlers
    (Python delivers signals to the main thread only)."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.armed = True
        self.received: List[str] = []
        self._old: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.armed:
            self.armed = False
            raise Interrupted(name)

    @contextlib.contextmanager
    def installed(self) -> Iterator["_Signals"]:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)


# ---------------------------------------------------------------------------------- run

def _wait_until(deadline: float) -> float:
    """Sleeps to about a millisecond before deadline, then spins (time.sleep alone
    overshoots by tens to hundreds of microseconds); returns the time it woke."""
    while True:
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return now
        if left > 0.0015:
            time.sleep(left - 0.001)


def _percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if len(values) == 0:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "count": int(a.size)}


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has no NaN), numpy scalars as numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
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


def run(controller: Controller, robot: Robot, *, episodes: int = 1, adapt_steps: int = 0,
        report_dir: Optional[Union[str, Path]] = None, rate: Optional[float] = None,
        limits: Limits = Limits(), sample: Optional[bool] = None, lr: Any = None,
        max_cycles: Optional[int] = None, reset_timeout: float = 2.0,
        allow_mismatch: bool = False, overwrite: bool = False,
        progress: bool = False) -> Dict[str, Any]:
    """Runs the controller on the robot; returns the report (also report.json, report.png
    and cycles.csv in report_dir). rate: the loop's frequency (Hz), default the robot's
    control period. sample: sample actions (default: when adapting). lr: the inner steps'
    size (default the controller's rule). max_cycles: end each episode after so many cycles
    (loop benchmarks). allow_mismatch: run a robot whose spec differs from the policy's
    interface (the differences go into the report). Bad arguments, a mismatch or an
    unusable report folder raise ValueError before any command reaches the robot."""
    spec = robot.spec()
    for name, value, low in (("episodes", episodes, 1), ("adapt_steps", adapt_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} should be an integer >= {low}, got {value!r}")
    if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate <= 10_000):
        raise ValueError(f"rate should be a frequency in (0, 10000] Hz, got {rate!r}")
    period = 1.0 / rate if rate else spec.control_period
    if period >= limits.stale_after:
        raise ValueError(f"the loop's period ({period:g} s) should be shorter than the stale "
                         f"limit ({limits.stale_after:g} s): every cycle would be stale")
    if period >= spec.command_timeout:
        raise ValueError(f"the loop's period ({period * 1e3:g} ms) should be shorter than "
                         f"the robot's command timeout ({spec.command_timeout * 1e3:g} ms): "
                         f"the robot would go to its safe state between two commands")
    if spec.obs_dim != controller.policy.obs_dim or spec.act_dim != controller.model.nu:
        raise Mismatch(f"the robot has {spec.obs_dim} observations and {spec.act_dim} "
                       f"controls; the policy takes {controller.policy.obs_dim} and gives "
                       f"{controller.model.nu}")
    differences = agreement(spec, controller)
    if differences and not allow_mismatch:
        raise Mismatch(f"the robot does not match the policy: {differences[0]}"
                       + (f" (and {len(differences) - 1} more)" if len(differences) > 1
                          else "") + "; --allow-mismatch (allow_mismatch=True) runs anyway")
    check_report_dir(report_dir, overwrite)
    sample = adapt_steps > 0 if sample is None else sample
    out = Path(report_dir) if report_dir is not None else None
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = CycleLog(out / "cycles.csv", spec.obs_dim, spec.act_dim)
    joints = controller.joint_checks()
    tally = _Tally()
    stages = tally.stages
    reason, detail = "completed", ""
    cycle = 0
    started = time.monotonic()
    signals = _Signals()
    acknowledged = False
    with signals.installed():
        try:
            for stage in range(adapt_steps + 1):
                if stage > 0:
                    size = controller.step_size(stage - 1) if lr is None else lr
                    tally.sizes.append("learned" if isinstance(size, dict) else float(size))
                    try:
                        controller.adapt(stages[-1], stage - 1, lr)
                    except ValueError as exc:
                        raise Stop("no reward to adapt on", str(exc)) from None
                stages.append([])
                for ep in range(episodes):
                    episode = Episode()
                    stages[-1].append(episode)
                    cycle = _episode(controller, robot, spec, episode, stage=stage, ep=ep,
                                     cycle=cycle, period=period, limits=limits, joints=joints,
                                     sample=sample, max_cycles=max_cycles,
                                     reset_timeout=reset_timeout, log=log, tally=tally,
                                     started=started)
                    if progress:
                        ret = f"{episode.ret:.2f}" if math.isfinite(episode.ret) else "none"
                        print(f"stage {stage} episode {ep}: return {ret} ({episode.steps} "
                              f"steps, {episode.missed} observations missed)", flush=True)
        except Stop as stop:
            reason, detail = stop.reason, stop.detail
        except Interrupted as sig:
            reason, detail = "interrupted", sig.name
        except KeyboardInterrupt:
            reason, detail = "interrupted", "SIGINT"
        finally:
            signals.armed = False
            acknowledged = robot.stop()
            if log:
                log.close()
        # the report is written while the handlers still hold signals (only noted now), so
        # that a second SIGTERM cannot cut it short
        report = _json_safe({
            "stopped": reason, "detail": detail, "robot_acknowledged_stop": acknowledged,
            "signals": list(signals.received),
            "agreement": {"differences": differences, "allowed": bool(differences)},
            "family": controller.family.name,
            "robot": {"family": spec.family, "control_period_s": spec.control_period,
                      "command_timeout_s": spec.command_timeout},
            "control_period_s": period, "duration_s": time.monotonic() - started,
            "episodes_per_stage": episodes, "adapt_steps": adapt_steps,
            "sampled_actions": sample, **tally.summary(),
            "rejected_packets": dict(robot.rejected),
            "robot_errors": list(robot.robot_errors)[-5:],
        })
        if out is not None:
            (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
            plot_report(report, tally.latency, out / "report.png")
    return report


@dataclasses.dataclass
class _Tally:
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


def _episode(controller: Controller, robot: Robot, spec: RobotSpec, episode: Episode, *,
             stage: int, ep: int, cycle: int, period: float, limits: Limits,
             joints: Sequence[tuple], sample: bool, max_cycles: Optional[int],
             reset_timeout: float, log: Optional[CycleLog], tally: _Tally,
             started: float) -> int:
    """One episode of the loop; returns the next cycle number. Raises Stop."""
    counts, jitter, latency = tally.counts, tally.jitter, tally.latency
    try:
        reading: Optional[Reading] = robot.reset(reset_timeout)
    except TimeoutError as exc:
        raise Stop("no first observation", str(exc)) from None
    t0 = reading.received
    last_fresh, last_tick = reading.received, None
    consecutive = 0
    last_sent = None
    k = 0
    while True:
        scheduled = t0 + k * period
        # the watchdog's own deadline: it wakes for it even when the next cycle is later
        watchdog = last_fresh + limits.stale_after
        tick = _wait_until(min(scheduled, watchdog))
        check_stale(tick, last_fresh, limits)
        if tick < scheduled:
            tick = _wait_until(scheduled)
        if last_tick is not None:
            jitter.append(abs(tick - last_tick - period) * 1e6)
        last_tick = tick
        if reading is None:
            # the robot's observation of this period: wait for it up to half a period (the
            # robot's clock and this loop's tick at the same rate; waiting locks this loop's
            # phase to just after the robot's), never past the watchdog's deadline
            wait = min(scheduled + 0.5 * period, watchdog) - time.monotonic()
            reading = robot.read(timeout=max(wait, 0.0))
        read_at = time.monotonic()
        row = Cycle(stage, ep, cycle, scheduled, tick, read_at,
                    jitter_us=(tick - scheduled) * 1e6)
        cycle += 1
        if reading is None:  # nothing new since the last controls
            counts["stale"] += 1
            row.stale = True
            if last_sent is not None:  # they may have been lost: again
                robot.send(*last_sent)
            if log:
                log.write(row)
            check_stale(read_at, last_fresh, limits)
            k += 1
            continue
        last_fresh = reading.received
        episode.observe(reading.step, reading.ret)
        row.step, row.robot_stamp, row.reward, row.ret = (reading.step, reading.stamp,
                                                          reading.reward, reading.ret)
        row.done, row.safe, row.obs = reading.done, reading.safe, reading.obs
        if reading.done:
            episode.terminated, episode.complete = reading.terminated, True
            if log:
                log.write(row)
            return cycle
        try:
            check_safe(reading, spec)
            check_observation(reading, joints, limits)
        except Stop:
            if log:  # the observation that stopped the run is in the log
                log.write(row)
            raise
        action, controls = controller.act(reading.obs, sample)
        check_controls(controls, reading.step)
        robot.send(reading.step, controls)
        sent = time.monotonic()
        last_sent = (reading.step, controls)
        episode.obs.append(reading.obs)
        episode.actions.append(action)
        latency.append((sent - reading.received) * 1e6)
        row.sent, row.latency_us, row.controls = sent, latency[-1], controls
        if sent - scheduled > period:
            counts["misses"] += 1
            consecutive += 1
            tally.misses_at.append(sent - started)
            row.miss = True
        else:
            consecutive = 0
        if log:
            log.write(row)
        counts["cycles"] += 1
        reading = None
        check_misses(consecutive, limits)
        if max_cycles is not None and len(episode.actions) >= max_cycles:
            return cycle
        # the next tick; after a stall, skip the ticks already past
        k += 1
        now = time.monotonic()
        if now > t0 + (k + 1) * period:
            skipped = int((now - t0) / period) - k
            k += skipped
            counts["misses"] += skipped


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


def plot_report(report: Dict[str, Any], latency_us: Sequence[float], path: Path) -> None:
    """Returns per episode by stage (complete filled, interrupted hollow), the read-to-send
    latency histogram, deadline misses over the whole run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
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
