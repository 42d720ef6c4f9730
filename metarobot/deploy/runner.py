"""The fixed-rate loop against a robot, with timing statistics, a watchdog, per-cycle logs,
and adaptation on the robot through the meta-learner's own inner step.

    controller = Controller.from_checkpoint("checkpoints/HalfCheetahVel.safetensors")
    report = run(controller, UdpRobot.from_url("udp://127.0.0.1:9870"), episodes=4,
                 adapt_steps=1, report_dir="hil-report")

Before the first command the robot's spec is checked against the controller's deployment
config (family, observation size and names in order, action size and the motors' names in
the robot's order, control period): a mismatch stops the run naming the field, what was
expected and what came, unless allowed (then recorded in the report; sizes never are).
Controls go to the robot in its motor order (the config's policy <-> motor map). Every cycle, on the
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

The watchdog's checks and the agreement check are in watchdog.py; the records a run leaves
(cycles.csv, report.json, report.png, the summary) in report.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .controller import Controller, Episode
from .deployment import Sensors, motor_names, motor_targets, sensors_from_observation
from .mcap_log import MCAP_FILE, McapLog
from .report import (Cycle, CycleLog, json_safe, Tally, check_report_dir, plot_report,
                     summary)
from .robot import Reading, Robot, RobotSpec
from .watchdog import (Limits, Mismatch, Stop, agreement, check_controls, check_misses,
                       check_observation, check_safe, check_stale)

# what callers take from here (the loop's records, limits and verdicts live beside it)
__all__ = ["Cycle", "Interrupted", "Limits", "Mismatch", "STOP_REASONS", "Stop",
           "check_report_dir", "run", "summary"]

# why a run ends (report["stopped"])
STOP_REASONS = ("completed", "stale observation", "no first observation", "deadline misses",
                "non-finite observation", "non-finite controls", "joint limit",
                "robot safe state", "no reward to adapt on", "interrupted")


class Interrupted(BaseException):
    """A signal that ends the run (SIGINT, SIGTERM, SIGHUP): the run stops the robot and
    writes its report. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


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


# --------------------------------------------------------------------------------- logs

class _Logs:
    """Where the cycles go: cycles.csv (every row) and the MCAP file (acted and stale
    cycles, the robot's safety transitions, episodes, swaps); either may be absent."""

    def __init__(self, csv: Optional[CycleLog], mcap: Optional[McapLog], robot: Robot):
        self.csv, self.mcap, self.robot = csv, mcap, robot
        self._transitions = 0  # the robot's safety transitions written so far

    def row(self, row: Cycle, action: Optional[np.ndarray] = None,
            targets: Optional[np.ndarray] = None, sensors: Optional[Sensors] = None,
            cycle: bool = True) -> None:
        """A row of cycles.csv; with cycle (an acted or stale cycle) in the MCAP too."""
        if self.csv:
            self.csv.write(row)
        if self.mcap and cycle:
            self.mcap.cycle(row, action, targets, sensors)
        self.transitions()

    def transitions(self, final: Optional[tuple] = None) -> None:
        """The robot's safety transitions not written yet (a Unitree robot's machine), and
        final: the run's own stop (time, reason), in time order."""
        if not self.mcap:
            return
        new = list(getattr(self.robot, "transitions", ()))[self._transitions:]
        self._transitions += len(new)
        records = [(t.time, t.source.value, t.target.value, t.reason) for t in new]
        if final is not None:
            records.append((final[0], "run", "stopped", final[1]))
        for record in sorted(records, key=lambda r: r[0]):
            self.mcap.transition(*record)

    def close(self) -> None:
        for log in (self.csv, self.mcap):
            if log:
                log.close()


def mcap_path(report_dir: Optional[Union[str, Path]], mcap: Union[str, Path, bool, None],
              overwrite: bool = False) -> Optional[Path]:
    """Where the run's MCAP file goes: mcap True -> beside the report (report_dir/run.mcap;
    none without a report), False or None -> none, a path -> there. ValueError before any
    work for a path whose folder does not exist or that holds a file (unless overwrite)."""
    if mcap is True:
        return Path(report_dir) / MCAP_FILE if report_dir is not None else None
    if mcap is False or mcap is None:
        return None
    path = Path(mcap)
    if path.is_dir():
        raise ValueError(f"the MCAP path {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"the MCAP file {str(path)!r} exists; give --overwrite "
                         f"(overwrite=True) or another path")
    if not path.parent.is_dir():
        raise ValueError(f"the MCAP file's folder {str(path.parent)!r} does not exist")
    return path


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


def run(controller: Controller, robot: Robot, *, episodes: int = 1, adapt_steps: int = 0,
        report_dir: Optional[Union[str, Path]] = None, rate: Optional[float] = None,
        limits: Limits = Limits(), sample: Optional[bool] = None, lr: Any = None,
        max_cycles: Optional[int] = None, reset_timeout: float = 2.0,
        allow_mismatch: bool = False, overwrite: bool = False,
        mcap: Union[str, Path, bool, None] = True,
        progress: bool = False) -> Dict[str, Any]:
    """Runs the controller on the robot; returns the report (also report.json, report.png
    and cycles.csv in report_dir, and the cycles as MCAP: mcap True beside them as
    run.mcap, a path there, False none; mcap_log.py has its topics). rate: the loop's
    frequency (Hz), default the robot's control period. sample: sample actions (default:
    when adapting). lr: the inner steps' size (default the controller's rule). max_cycles:
    end each episode after so many cycles (loop benchmarks). allow_mismatch: run a robot whose spec differs from the policy's
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
    differences = agreement(spec, controller)
    sizes = [d for d in differences if d.startswith(("observation size", "action size"))]
    if sizes:  # no policy runs on vectors of another size, allowed or not
        raise Mismatch(f"the robot does not match the policy: {'; '.join(sizes)}")
    if differences and not allow_mismatch:
        raise Mismatch(f"the robot does not match the policy: {differences[0]}"
                       + (f" (and {len(differences) - 1} more)" if len(differences) > 1
                          else "") + "; --allow-mismatch (allow_mismatch=True) runs anyway")
    check_report_dir(report_dir, overwrite)
    mcap_file = mcap_path(report_dir, mcap, overwrite)
    sample = adapt_steps > 0 if sample is None else sample
    out = Path(report_dir) if report_dir is not None else None
    csv_log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        csv_log = CycleLog(out / "cycles.csv", spec.obs_dim, spec.act_dim)
    log = _Logs(csv_log, McapLog(mcap_file, controller.deploy, spec)
                if mcap_file is not None else None, robot)
    joints = controller.joint_checks()
    tally = Tally()
    stages = tally.stages
    reason, detail = "completed", ""
    swaps: List[Dict[str, Any]] = []  # adapted policies swapped in
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
                    # between episodes; a robot with a safety machine takes it in HOLD only
                    # and records it among its transitions
                    swapped = getattr(robot, "policy_swapped", None)
                    phase = None
                    if swapped is not None:
                        try:
                            phase = swapped(f"adapted policy swapped in (adaptation step "
                                            f"{stage})")
                        except ValueError as exc:
                            raise Stop("robot safe state", str(exc)) from None
                    at = time.monotonic()
                    swaps.append({"step": stage - 1, "time_s": at - started,
                                  "robot_phase": phase})
                    if log.mcap:
                        log.mcap.swap(at, stage - 1, tally.sizes[-1], phase)
                stages.append([])
                for ep in range(episodes):
                    episode = Episode()
                    stages[-1].append(episode)
                    cycle = _episode(controller, robot, spec, episode, stage=stage, ep=ep,
                                     cycle=cycle, period=period, limits=limits, joints=joints,
                                     sample=sample, max_cycles=max_cycles,
                                     reset_timeout=reset_timeout, log=log, tally=tally,
                                     started=started)
                    if log.mcap:
                        log.mcap.episode(time.monotonic(), stage, ep, {
                            "return": episode.ret, "steps": episode.steps,
                            "complete": episode.complete, "terminated": episode.terminated})
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
            stopped_at = time.monotonic()
            acknowledged = robot.stop()
            log.transitions(final=(stopped_at, f"{reason}: {detail}" if detail else reason))
            log.close()
        # the report is written while the handlers still hold signals (only noted now), so
        # that a second SIGTERM cannot cut it short
        report = json_safe({
            "stopped": reason, "detail": detail, "robot_acknowledged_stop": acknowledged,
            "signals": list(signals.received),
            "agreement": {"differences": differences, "allowed": bool(differences),
                          "checked_against": {
                              "format": controller.deploy["format"],
                              "version": controller.deploy["version"],
                              "motors": motor_names(controller.deploy),
                              "motor_from_policy": controller.motor_from_policy.tolist(),
                              "control_period_s":
                                  controller.deploy["rates"]["control_period_s"]}},
            "family": controller.family.name,
            "robot": {"family": spec.family, "control_period_s": spec.control_period,
                      "command_timeout_s": spec.command_timeout,
                      "reality_gap": spec.reality_gap},
            "control_period_s": period, "duration_s": time.monotonic() - started,
            "episodes_per_stage": episodes, "adapt_steps": adapt_steps,
            "sampled_actions": sample, **tally.summary(), "swaps": swaps,
            "rejected_packets": dict(robot.rejected),
            "robot_errors": list(robot.robot_errors)[-5:],
            # what the robot's side logged (a Unitree robot's safety transitions), if any
            "robot_log": list(getattr(robot, "events", []))[-50:],
            "mcap": str(mcap_file) if mcap_file is not None else None,
        })
        if out is not None:
            (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
            plot_report(report, tally.latency, out / "report.png", tally.traces,
                        motor_names(controller.deploy))
    return report


def _episode(controller: Controller, robot: Robot, spec: RobotSpec, episode: Episode, *,
             stage: int, ep: int, cycle: int, period: float, limits: Limits,
             joints: Sequence[tuple], sample: bool, max_cycles: Optional[int],
             reset_timeout: float, log: _Logs, tally: Tally,
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
            log.row(row)
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
            log.row(row, cycle=False)
            return cycle
        try:
            check_safe(reading, spec)
            check_observation(reading, joints, limits)
        except Stop:
            log.row(row, cycle=False)  # the observation that stopped the run is in the log
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
        sensors = (reading.sensors if reading.sensors is not None
                   else sensors_from_observation(controller.deploy, reading.obs))
        # what the motors were given: the robot's own clamped targets where it reports them
        commanded = getattr(robot, "commanded_targets", None)
        targets = commanded() if commanded is not None else None
        if targets is None:
            targets = motor_targets(controller.deploy, controls)
        log.row(row, action, targets, sensors)
        tally.traces.append((sent - started, np.asarray(sensors.q, np.float64), targets))
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


