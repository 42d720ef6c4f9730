"""A simulated robot behind the wire protocol: one simulation of a task in its own process,
paced to wall-clock time, with the gap to a real robot (each off by default).

    metarobot sim-robot HalfCheetahVel --task '{"goal_velocity": 1.2}' --port 9870 \\
        --latency-ms 20 --jitter-ms 5 --obs-noise 0.01 --drop 0.01 --dynamics '{"body_mass": [0.8, 1.2]}'

After a RESET it sends the episode's first observation every control period until controls
come. Then every control period it applies the newest controls whose (emulated) latency has
passed, holding the previous ones otherwise, steps the simulation and sends the observation
with the step's reward and done flags. After an episode ends it repeats its last observation until the
next RESET; STOP zeroes the controls and halts the episode (its safe state). Malformed packets
get an ERROR reply saying why; the robot carries on.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..batch import BatchSim
from ..families import TaskFamily, make_family
from . import protocol as P
from .robot import RobotSpec


@dataclasses.dataclass(frozen=True)
class RealityGap:
    """What separates the simulated robot from the policy's training simulation.

    obs_noise: std of Gaussian noise added to every observation entry (its units).
    latency_ms, jitter_ms: controls take effect latency + U(-jitter, jitter) ms after they
      arrive (at least 0).
    drop: probability that a packet, either way, is lost.
    saturation: controls are clipped to saturation x the actuators' control ranges (1: none).
    dynamics: model fields scaled per robot, as the families' dynamics= override (e.g.
      {"body_mass": [0.8, 1.2]}): a factor per element drawn once, with seed.
    """

    obs_noise: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: float = 0.0
    saturation: float = 1.0
    dynamics: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        for name, low, high in (("obs_noise", 0, 1e6), ("latency_ms", 0, 1e5),
                                ("jitter_ms", 0, 1e5), ("drop", 0, 1), ("saturation", 0, 1)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise ValueError(f"{name} should be a number in [{low}, {high}], got {value!r}")
        if self.saturation == 0:
            raise ValueError("saturation should be > 0 (1: no saturation)")
        if self.drop == 1:
            raise ValueError("drop should be < 1: a robot that drops every packet is silent")
        if self.dynamics is not None and not isinstance(self.dynamics, dict):
            raise ValueError(f"dynamics should be a dict of field -> range, got "
                             f"{self.dynamics!r}")


def robot_family(family: str, overrides: Optional[Dict[str, Any]] = None,
                 dynamics: Optional[Dict[str, Any]] = None) -> TaskFamily:
    """The family as the robot runs it: it takes controls (the actuators' own values), not
    policy actions, so actions are not normalised; costs see the same applied controls."""
    extra = dict(overrides or {})
    if dynamics:
        extra["dynamics"] = dynamics
    return make_family(family, **extra).with_overrides(normalize_actions=False)


class SimRobot:
    """The robot's side of the protocol over one simulation (serve() runs until stopped)."""

    def __init__(self, family: str, task: Dict[str, float], port: int = 0,
                 host: str = "127.0.0.1", gap: RealityGap = RealityGap(), seed: int = 0,
                 overrides: Optional[Dict[str, Any]] = None, rate: Optional[float] = None):
        self.family = robot_family(family, overrides, gap.dynamics)
        self.gap = gap
        self.rng = np.random.default_rng(seed)
        values = dict(task)
        base = make_family(family, **(overrides or {}))
        dyn_names = [n for n in self.family.parameter_names if n not in base.parameter_names]
        if dyn_names:  # the dynamics shift: factors drawn once for this robot
            drawn = self.family.sample_tasks(1, seed=seed)[0].as_dict()
            values.update({n: drawn[n] for n in dyn_names})
        self.task = self.family.task(**values)
        self.sim = BatchSim(self.family, [self.task], seed=seed, num_threads=1, autoreset=False)
        model = self.sim.models[0]
        # the robot's control period: the family's env step, or 1 / rate (loop benchmarks)
        self.period = 1.0 / rate if rate else float(model.opt.timestep * self.family.frame_skip)
        lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * gap.saturation
        limited = model.actuator_ctrllimited.astype(bool)
        self.ctrl_low = np.where(limited, centre - half, -np.inf)
        self.ctrl_high = np.where(limited, centre + half, np.inf)
        self.spec = RobotSpec(self.sim.observation_dim, self.sim.action_dim, self.period,
                              action_names=tuple(model.actuator(i).name
                                                 for i in range(model.nu)))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.peer: Optional[Tuple[str, int]] = None
        self.seq = 0
        self.counts = {"received": 0, "rejected": 0, "dropped_in": 0, "dropped_out": 0,
                       "sent": 0, "steps": 0, "episodes": 0}
        self._episode_id: Optional[int] = None
        self._running = False
        self._waiting = False
        self._last_obs: Optional[bytes] = None
        self._pending: list = []  # (release time, controls)
        self._controls = np.zeros(self.spec.act_dim)

    # ------------------------------------------------------------------------- the wire
    def _send(self, kind: int, payload: bytes, to: Optional[Tuple[str, int]] = None) -> None:
        to = to or self.peer
        if to is None:
            return
        if self.gap.drop and kind == P.OBS and self.rng.random() < self.gap.drop:
            self.counts["dropped_out"] += 1
            return
        self.seq += 1
        try:
            self.sock.sendto(P.encode(kind, self.seq, payload), to)
            self.counts["sent"] += 1
        except OSError:
            pass

    def _obs_packet(self, obs: np.ndarray, step: int, reward: float, done: bool,
                    terminated: bool) -> bytes:
        if self.gap.obs_noise:
            obs = obs + self.rng.normal(0.0, self.gap.obs_noise, obs.shape)
        return P.obs_payload(step, obs.astype(np.float32), reward, done, terminated)

    def _handle(self, data: bytes, sender: Tuple[str, int], now: float) -> Optional[float]:
        """Acts on one datagram; returns the time of the next physics tick when the packet
        restarts the clock (a new episode starts one control period after its reset)."""
        self.counts["received"] += 1
        try:
            packet = P.decode(data)
        except P.ProtocolError as exc:
            self.counts["rejected"] += 1
            self._send(P.ERROR, f"rejected: {exc}".encode(), to=sender)
            return
        if self.gap.drop and packet.kind == P.ACTION and self.rng.random() < self.gap.drop:
            self.counts["dropped_in"] += 1
            return
        self.peer = sender
        if packet.kind == P.HELLO:
            self._send(P.SPEC, P.spec_payload(self.spec))
        elif packet.kind == P.RESET:
            if len(packet.payload) != 4:
                self._send(P.ERROR, b"rejected: RESET takes a u32 episode id")
                return
            (episode,) = struct.unpack("<I", packet.payload)
            if episode != self._episode_id:
                self._episode_id = episode
                obs = self.sim.reset()[0]
                self.step_index, self.episode_return = 0, 0.0
                self._pending.clear()
                self._controls[:] = 0.0
                self._running = True
                self._waiting = True  # for the controller's first controls
                self.counts["episodes"] += 1
                self._last_obs = self._obs_packet(obs, 0, float("nan"), False, False)
                self._send(P.OBS, self._last_obs)
                return time.monotonic() + self.period
            if self._last_obs is not None:
                self._send(P.OBS, self._last_obs)
        elif packet.kind == P.ACTION:
            try:
                _, controls = P.parse_action(packet.payload, self.spec.act_dim)
            except P.ProtocolError as exc:
                self.counts["rejected"] += 1
                self._send(P.ERROR, f"rejected: {exc}".encode())
                return
            if not np.isfinite(controls).all():
                self.counts["rejected"] += 1
                self._send(P.ERROR, b"rejected: non-finite controls")
                return
            delay = self.gap.latency_ms
            if self.gap.jitter_ms:
                delay += self.rng.uniform(-self.gap.jitter_ms, self.gap.jitter_ms)
            self._pending.append((now + max(delay, 0.0) * 1e-3, controls))
        elif packet.kind == P.STOP:
            self._running = False  # the safe state: no controls, no stepping
            self._controls[:] = 0.0
            self._pending.clear()
            self._send(P.ACK, b"")
        else:
            self.counts["rejected"] += 1
            self._send(P.ERROR, f"rejected: a robot takes no {P.TYPE_NAMES[packet.kind]} "
                                f"packets".encode())

    # ------------------------------------------------------------------------ the physics
    def _tick(self, now: float) -> None:
        if not self._running:
            if self._last_obs is not None and self._episode_id is not None:
                self._send(P.OBS, self._last_obs)  # an ended episode repeats its last word
            return
        due = [p for p in self._pending if p[0] <= now]
        if self._waiting:  # a robot holds still until the controller answers
            if not due:
                self._send(P.OBS, self._last_obs)
                return
            self._waiting = False
        if due:
            self._controls = due[-1][1]
            self._pending = [p for p in self._pending if p[0] > now]
        applied = np.clip(self._controls, self.ctrl_low, self.ctrl_high)
        obs, reward, terminated, truncated, info = self.sim.step(applied[None])
        self.step_index += 1
        self.counts["steps"] += 1
        done = bool(terminated[0] or truncated[0])
        final = info["final_obs"][0] if info["_final_obs"][0] else obs[0]
        self._last_obs = self._obs_packet(final, self.step_index, float(reward[0]), done,
                                          bool(terminated[0]))
        if done:
            self._running = False
        self._send(P.OBS, self._last_obs)

    def serve(self, duration: Optional[float] = None) -> None:
        """Runs the robot: packets as they come, a physics step every control period on the
        monotonic clock (sleeping between), until duration seconds pass or Ctrl-C."""
        start = time.monotonic()
        next_tick = start + self.period
        try:
            while duration is None or time.monotonic() - start < duration:
                now = time.monotonic()
                while True:
                    try:
                        data, sender = self.sock.recvfrom(P.MAX_PACKET)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionResetError:
                        continue
                    restart = self._handle(data, sender, now)
                    if restart is not None:
                        next_tick = restart
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick += self.period
                    if next_tick < now:  # fell behind (a busy machine): resynchronise
                        next_tick = now + self.period
                else:
                    time.sleep(min(next_tick - now, 0.0005))
        except KeyboardInterrupt:
            pass
        finally:
            self.sock.close()


def main_args(family: str, task_json: str, port: int, host: str, gap: RealityGap, seed: int,
              overrides: Optional[Dict[str, Any]] = None, duration: Optional[float] = None,
              ready=None, rate: Optional[float] = None) -> int:
    """The sim-robot command: serve until stopped; prints the port it listens on."""
    try:
        task = json.loads(task_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--task should be JSON such as '{{\"goal_velocity\": 1.0}}': "
                         f"{exc}") from None
    if not isinstance(task, dict):
        raise ValueError(f"--task should be a JSON object, got {task_json!r}")
    robot = SimRobot(family, task, port, host, gap, seed, overrides, rate)
    print(f"sim-robot {robot.family.name} {robot.task!r} on udp://{host}:{robot.port}, "
          f"control period {robot.period * 1e3:g} ms", flush=True)
    if ready is not None:
        ready(robot)
    robot.serve(duration)
    return 0
