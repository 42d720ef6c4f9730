"""A simulated robot behind the wire protocol (version 2): one simulation of a task in its own
process, paced to wall-clock time, with the gap to a real robot (each off by default), and
the robot's duties of docs/hil.md: one session at a time, a command timeout into a safe state.

    metarobot sim-robot HalfCheetahVel --task '{"goal_velocity": 1.2}' --port 9870 \\
        --latency-ms 20 --jitter-ms 5 --obs-noise 0.01 --drop 0.01 --key-file robot.key

The gap speaks the family's language: the task's own parameters (--task: command_delay_ms,
kp, kd, strength, payload, noise_scale where drawn) in their names and units, and what the
family does not model (the link's latency_ms and jitter_ms on top of command_delay_ms, extra
obs_noise in each sensor term's units, drops, saturation, a dynamics shift) beside them
(describe_gap; docs/hil.md has the table).

HELLO opens a session (a random id and nonce; with a key, every later packet carries a MAC
under the session's key); while a session holds the robot, another HELLO gets ERROR "busy".
Only packets of the session, from its peer, with a valid MAC (when keyed) and a fresh
sequence number act; everything else is dropped and counted by reason. After a RESET it sends
the episode's first observation every control period until controls come. Then every
control period it applies the newest controls whose (emulated) latency has passed, steps the
simulation and sends the observation with the step's reward, its running return and the done
flags. Without a valid ACTION for the command timeout it goes to its safe state (zero
controls, or damping) and says so in every later observation; STOP does the same at once,
answers ACK and ends the session. Events (sessions, safe state) are printed with the
monotonic time.
"""


from __future__ import annotations

import dataclasses
import json
import socket
import sys
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..batch import BatchSim
from ..families import TaskFamily, make_family
from . import protocol as P
from ..parameters import ActuatorRange
from .deployment import deployment_config
from .policy import action_names, clipped_controls, observation_names
from .robot import RobotSpec


@dataclasses.dataclass(frozen=True)
class RealityGap:
    """What separates the simulated robot from the policy's training simulation, beyond the
    task's own parameters (command_delay_ms, kp, kd, strength, payload, ..., noise_scale
    where the family draws it: those come with the task, in the family's names and units).

    obs_noise_scale: the family's noise_scale, a factor on each sensor term's own noise std
      (1: the noise training saw; 0: exact sensors); None: the task's noise_scale when the
      family draws one, else 1.
    obs_noise: std of extra Gaussian noise on each sensor term, in the term's own units (rad,
      rad/s, m, as a term's noise field), before its scale, on top of the term's own noise.
    latency_ms, jitter_ms: the link's delay: controls take effect latency + U(-jitter,
      jitter) ms after they arrive (at least 0); on top of the task's command_delay_ms (both
      ms from the policy's output to the motor).
    drop: probability that a packet, either way, is lost.
    saturation: controls are clipped to saturation x the actuators' control ranges (1: none);
      torque families only (a servo's controls are joint targets: its torque limits are the
      family's effort_limit and strength).
    dynamics: model fields scaled per robot, as the families' dynamics= override (e.g.
      {"body_mass": [0.8, 1.2]}): a factor per element drawn once, with seed.
    """

    obs_noise: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: float = 0.0
    saturation: float = 1.0
    dynamics: Optional[Dict[str, Any]] = None
    obs_noise_scale: Optional[float] = None

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
        scale = self.obs_noise_scale
        if scale is not None and not (isinstance(scale, (int, float)) and 0 <= scale <= 1e3):
            raise ValueError(f"obs_noise_scale (the family's noise_scale) should be a factor "
                             f"in [0, 1000], got {scale!r}")


def robot_family(family: str, overrides: Optional[Dict[str, Any]] = None,
                 dynamics: Optional[Dict[str, Any]] = None,
                 noise_scale: Optional[float] = None) -> TaskFamily:
    """The family as the robot runs it: it takes controls (the actuators' own values), not
    policy actions, so actions are not normalised; costs see the same applied controls.
    noise_scale: a fixed noise_scale for a family that does not draw one per task (the
    robot's task then holds it, under the family's own name)."""
    extra = dict(overrides or {})
    if dynamics:
        extra["dynamics"] = dynamics
    out = make_family(family, **extra).with_overrides(normalize_actions=False)
    if noise_scale is not None:
        out = dataclasses.replace(out, parameters=out.parameters + (
            ActuatorRange("noise_scale", float(noise_scale), float(noise_scale)),))
    return out


def describe_gap(family: TaskFamily, task: Any, gap: RealityGap,
                 period: float) -> Dict[str, Any]:
    """The robot's gap to training in the family's own names and units (JSON-ready): the
    task's parameters as the robot runs them (command_delay_ms, kp, kd, strength, ...,
    noise_scale), and what the link and the robot add (latency_ms, jitter_ms, obs_noise in
    the sensor terms' units, drop, saturation, dynamics ranges)."""
    values = task.as_dict()
    act = family.actuators
    if "command_delay_ms" in values:
        delay = values["command_delay_ms"]
    else:
        low, high = act.delay_range() if act is not None else (0.0, 0.0)
        delay = low if low == high else [low, high]
    return {
        "task": {k: v for k, v in values.items() if k in family.parameter_names},
        "noise_scale": values.get("noise_scale", 1.0),
        "obs_noise": gap.obs_noise,
        "command_delay_ms": delay,
        "latency_ms": gap.latency_ms, "jitter_ms": gap.jitter_ms,
        "drop": gap.drop, "saturation": gap.saturation,
        "dynamics": gap.dynamics,
        "control_period_ms": period * 1e3,
    }


SAFE_STATES = ("zero", "damping")


@dataclasses.dataclass
class Session:
    """One controller's hold on the robot. established: a packet of the session (not the
    handshake) passed every check, so the peer proved it holds the session; ended: STOP
    ended it (a repeated STOP is still acknowledged)."""

    id: int
    peer: Tuple[Any, ...]
    runner_nonce: bytes
    robot_nonce: bytes
    key: Optional[bytes]
    spec_packet: bytes
    inbound: P.SeqWindow = dataclasses.field(default_factory=P.SeqWindow)
    out_seq: int = 0
    established: bool = False
    ended: bool = False
    last_valid: float = 0.0


class SimRobot:
    """The robot's side of the protocol over one simulation (serve() runs until stopped).

    key: the shared key (bytes, read_key_file) or None; command_timeout: seconds without a
    valid ACTION after which a running episode goes to the safe state (default 5 control
    periods, at least 50 ms); safe_state: "zero" (zero controls: no torque) or "damping"
    (controls -damping x the actuated joint's velocity, clipped to the control range)."""

    def __init__(self, family: str, task: Dict[str, float], port: int = 0,
                 host: str = "127.0.0.1", gap: RealityGap = RealityGap(), seed: int = 0,
                 overrides: Optional[Dict[str, Any]] = None, rate: Optional[float] = None,
                 key: Optional[bytes] = None, command_timeout: Optional[float] = None,
                 safe_state: str = "zero", damping: float = 1.0, verbose: bool = True):
        if safe_state not in SAFE_STATES:
            raise ValueError(f"safe_state should be one of {SAFE_STATES}, got {safe_state!r}")
        base = make_family(family, **(overrides or {}))
        draws_noise = "noise_scale" in base.parameter_names
        if gap.obs_noise_scale is not None and draws_noise:
            raise ValueError(f"{base.name} draws noise_scale per task: give it in the task "
                             f"('noise_scale' in --task), not as obs_noise_scale "
                             f"(--obs-noise-scale)")
        servo = base.actuators is not None and base.actuators.kind == "servo"
        if servo and gap.saturation != 1.0:
            raise ValueError(f"{base.name} drives position servos: its controls are joint "
                             f"targets, not torques, so saturation (--saturation) has no "
                             f"meaning; weaken the motors with the task's strength or "
                             f"effort_limit (--task, --set actuators=...)")
        # the training's noise unless told otherwise (then the family's own noise_scale)
        noise_scale = None if gap.obs_noise_scale is None else float(gap.obs_noise_scale)
        self.family = robot_family(family, overrides, gap.dynamics, noise_scale)
        self.gap = gap
        self.rng = np.random.default_rng(seed)
        values = dict(task)
        if "noise_scale" in values and not draws_noise:
            raise ValueError(f"{base.name} does not draw noise_scale per task; the robot's "
                             f"is obs_noise_scale (--obs-noise-scale)")
        if noise_scale is not None:
            values["noise_scale"] = noise_scale
        dyn_names = [n for n in self.family.parameter_names
                     if n not in base.parameter_names and n != "noise_scale"]
        if dyn_names:  # the dynamics shift: factors drawn once for this robot
            drawn = self.family.sample_tasks(1, seed=seed)[0].as_dict()
            values.update({n: drawn[n] for n in dyn_names})
        self.task = self.family.task(**values)
        self.sim = BatchSim(self.family, [self.task], seed=seed, num_threads=1, autoreset=False)
        model = self.sim.models[0]
        # the observation's terms as the deployment config gives them (the same rule the
        # runner and a robot program read): extra sensor noise goes where the family's does
        self.deploy = deployment_config(self.family, model=model)
        self._sensor_terms = [t for t in self.deploy["observation"]["terms"] if t["sensor"]]
        # the robot's control period: the family's env step, or 1 / rate (loop benchmarks)
        self.period = 1.0 / rate if rate else float(model.opt.timestep * self.family.frame_skip)
        timeout = max(5 * self.period, 0.05) if command_timeout is None else command_timeout
        if not timeout >= self.period:
            raise ValueError(f"the command timeout ({timeout * 1e3:g} ms) should be at least "
                             f"a control period ({self.period * 1e3:g} ms)")
        self.command_timeout = timeout
        lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * gap.saturation
        # as the simulator: a servo's controls are actions (targets), never clipped
        limited = clipped_controls(self.family, model)
        self.ctrl_low = np.where(limited, centre - half, -np.inf)
        self.ctrl_high = np.where(limited, centre + half, np.inf)
        # the safe state's damping acts on each actuator's joint velocity
        joint = model.actuator_trnid[:, 0]
        self._damped_dof = np.where(model.actuator_trntype == 0, model.jnt_dofadr[joint], -1)
        self.safe_state, self.damping = safe_state, float(damping)
        self.reality_gap = describe_gap(base, self.task, gap, self.period)
        self.spec = RobotSpec(self.sim.observation_dim, self.sim.action_dim, self.period,
                              observation_names(self.family, model), action_names(model),
                              self.family.name, timeout, self.reality_gap)
        self.key = key
        self.handshake_key = P.handshake_key(key) if key is not None else None
        self.verbose = verbose
        family_af = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family_af, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ValueError(f"cannot listen on udp://{host}:{port}: {exc.strerror} (another "
                             f"robot on that port? --port 0 picks a free one)") from None
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.session: Optional[Session] = None
        self.counts = {"received": 0, "dropped_in": 0, "dropped_out": 0, "sent": 0,
                       "steps": 0, "episodes": 0, "sessions": 0, "timeouts": 0}
        self.rejected: Dict[str, int] = {}
        self._error_tokens, self._error_time = 20.0, time.monotonic()
        self._episode_id = 0
        self._running = False   # an episode is being stepped
        self._waiting = False   # for the episode's first controls
        self.safe = True        # no controls obeyed (before any episode, too)
        self._first: Optional[P.Observation] = None
        self._last: Optional[P.Observation] = None
        self._last_command = 0.0
        self._pending: list = []  # (release time, controls)
        self._controls = np.zeros(self.spec.act_dim)
        self.step_index, self.episode_return = 0, 0.0
        # what the robot itself did, for whoever runs it in-process (tests, benchmarks):
        # every ended episode (session, episode, steps, its return), and with trace a list,
        # every step's (episode, step, applied controls, safe)
        self.finished: list = []
        self.trace: Optional[list] = None
        self._shutdown = False

    def shutdown(self) -> None:
        """Ends serve() (from another thread) at its next turn."""
        self._shutdown = True

    def event(self, text: str) -> None:
        """A line on stdout with the monotonic time (what a robot's log would hold)."""
        if self.verbose:
            print(f"t={time.monotonic():.6f} {text}", flush=True)

    # ------------------------------------------------------------------------- the wire
    def _send_session(self, kind: int, payload: bytes) -> None:
        """A packet of the session to its peer."""
        s = self.session
        if s is None:
            return
        if self.gap.drop and kind == P.OBS and self.rng.random() < self.gap.drop:
            self.counts["dropped_out"] += 1
            return
        s.out_seq += 1
        data = P.encode(kind, session=s.id, episode=self._episode_id, seq=s.out_seq,
                        payload=payload, key=s.key)
        self._sendto(data, s.peer)

    def _sendto(self, data: bytes, to) -> None:
        try:
            self.sock.sendto(data, to)
            self.counts["sent"] += 1
        except OSError:
            pass

    def _error_to(self, to, text: str) -> None:
        """ERROR outside any session (session 0; with a key, under the handshake key),
        at most about 20 a second: a robot must not amplify a flood of junk."""
        now = time.monotonic()
        self._error_tokens = min(20.0, self._error_tokens + 20.0 * (now - self._error_time))
        self._error_time = now
        if self._error_tokens < 1.0:
            return
        self._error_tokens -= 1.0
        self._sendto(P.encode(P.ERROR, payload=text.encode(), key=self.handshake_key), to)

    def _reject(self, reason: str, sender=None, reply: Optional[str] = None) -> None:
        P.count(self.rejected, reason)
        if sender is not None and reply is not None:
            self._error_to(sender, reply)

    def _observation(self, obs: np.ndarray, reward: float, done: bool,
                     terminated: bool) -> P.Observation:
        if self.gap.obs_noise:
            obs = obs.copy()
            for t in self._sensor_terms:  # the term's units: noise before the scale, then clip
                at = slice(t["start"], t["start"] + t["size"])
                obs[at] += t["scale"] * self.rng.normal(0.0, self.gap.obs_noise, t["size"])
                if t["clip"] is not None:
                    obs[at] = np.clip(obs[at], *t["clip"])
        return P.Observation(self.step_index, obs.astype(np.float32), reward,
                             self.episode_return, done, terminated, self.safe)

    def _send_obs(self, o: P.Observation) -> None:
        self._send_session(P.OBS, P.obs_payload(dataclasses.replace(o, safe=self.safe)))

    def session_alive(self, now: float) -> bool:
        """A session holds the robot: established, not ended, heard within the command
        timeout."""
        s = self.session
        return (s is not None and s.established and not s.ended
                and now - s.last_valid < self.command_timeout)

    def _handle(self, data: bytes, sender, now: float) -> Optional[float]:
        """Acts on one datagram; returns the time of the next physics tick when the packet
        restarts the clock (a new episode starts one control period after its reset)."""
        self.counts["received"] += 1
        try:
            packet = P.decode(data)
        except P.ProtocolError as exc:
            self._reject("malformed", sender, f"rejected: {exc}")
            return None
        if packet.session == 0:
            return self._handshake(packet, sender, now)
        s = self.session
        if s is None or packet.session != s.id:
            self._reject("unknown session", sender,
                         "rejected: no such session (it ended, or another controller took "
                         "the robot): send HELLO")
            return None
        if self.key is None and sender != s.peer:
            self._reject("not the session's peer")  # silently: a stranger learns nothing
            return None
        why = P.authentic(packet, s.key)
        if why is not None:
            self._reject("bad MAC")
            return None
        why = s.inbound.accept(packet.seq)
        if why is not None:
            self._reject(why)
            return None
        # the packet passed every check: it alone may move the peer (with a key: a
        # controller whose address changed), and it keeps the session alive
        s.peer, s.last_valid = sender, now
        if not s.established:
            s.established = True
            self.event(f"session {s.id:016x} established by {sender[0]}:{sender[1]}")
        if s.ended and packet.kind != P.STOP:
            self._reject("ended session")
            return None
        if packet.kind == P.RESET:
            return self._reset(packet, now)
        if packet.kind == P.ACTION:
            self._action(packet, now)
        elif packet.kind == P.STOP:
            self._stop("STOP from the controller")
            if not s.ended:
                s.ended = True
                self.event(f"session {s.id:016x} ended")
            self._send_session(P.ACK, b"")
        else:
            self._reject("wrong type")
            self._send_session(P.ERROR, f"rejected: a robot takes no {packet.name} "
                                        f"packets".encode())
        return None

    def _handshake(self, packet: P.Packet, sender, now: float) -> Optional[float]:
        if packet.kind != P.HELLO:
            self._reject("no session", sender, f"rejected: a {packet.name} packet needs a "
                                               f"session (send HELLO first)")
            return None
        why = P.authentic(packet, self.handshake_key)
        if why is not None:
            self._reject("bad MAC", sender, f"rejected: {why}")
            return None
        try:
            nonce = P.parse_hello(packet.payload)
        except P.ProtocolError as exc:
            self._reject("malformed", sender, f"rejected: {exc}")
            return None
        s = self.session
        if self.session_alive(now):
            self._reject("busy", sender, "busy: another controller holds this robot")
            return None
        if s is not None and not s.established and not s.ended and s.peer == sender \
                and s.runner_nonce == nonce:
            self._sendto(s.spec_packet, sender)  # the same HELLO again: the same answer
            return None
        if s is not None and not s.ended and s.established:
            self.event(f"session {s.id:016x} expired (nothing valid for "
                       f"{(now - s.last_valid) * 1e3:.0f} ms)")
        session_id, robot_nonce = P.new_session_id(), P.new_nonce()
        key = (P.session_key(self.key, session_id, nonce, robot_nonce)
               if self.key is not None else None)
        spec = P.encode(P.SPEC, payload=P.spec_payload(self.spec, session_id, nonce,
                                                        robot_nonce), key=self.handshake_key)
        self.session = Session(session_id, sender, nonce, robot_nonce, key, spec,
                               last_valid=now)
        self.counts["sessions"] += 1
        self._episode_id = 0
        self._stop(None)  # a new controller starts from the safe state
        self.event(f"session {session_id:016x} offered to {sender[0]}:{sender[1]}")
        self._sendto(spec, sender)
        return None

    def _reset(self, packet: P.Packet, now: float) -> Optional[float]:
        if packet.episode < self._episode_id:
            self._reject("old episode")
            return None
        if packet.episode == self._episode_id:  # a repeated RESET: its first observation
            if self._first is not None:
                self._send_obs(self._first)
            return None
        self._episode_id = packet.episode
        obs = self.sim.reset()[0]
        self.step_index, self.episode_return = 0, 0.0
        self._pending.clear()
        self._controls[:] = 0.0
        self._running, self._waiting, self.safe = True, True, False
        self._last_command = now
        self.counts["episodes"] += 1
        # step 0: no step led here, reward 0 and return 0
        self._first = self._last = self._observation(obs, 0.0, False, False)
        self._send_obs(self._first)
        return time.monotonic() + self.period

    def _action(self, packet: P.Packet, now: float) -> None:
        if packet.episode != self._episode_id:
            self._reject("other episode")
            return
        if self.gap.drop and self.rng.random() < self.gap.drop:
            self.counts["dropped_in"] += 1
            return
        try:
            _, controls = P.parse_action(packet.payload, self.spec.act_dim)
        except P.ProtocolError as exc:
            self._reject("malformed")
            self._send_session(P.ERROR, f"rejected: {exc}".encode())
            return
        if not np.isfinite(controls).all():
            self._reject("non-finite controls")
            self._send_session(P.ERROR, b"rejected: non-finite controls")
            return
        if self.safe:  # only a new episode leaves the safe state
            self._reject("in the safe state")
            return
        self._last_command = now
        delay = self.gap.latency_ms
        if self.gap.jitter_ms:
            delay += self.rng.uniform(-self.gap.jitter_ms, self.gap.jitter_ms)
        self._pending.append((now + max(delay, 0.0) * 1e-3, controls))

    def _stop(self, why: Optional[str]) -> None:
        """Into the safe state: no controls obeyed (a STOP also halts the episode)."""
        if why is not None and not self.safe:
            self.event(f"safe state ({self.safe_state}): {why}")
        self.safe = True
        self._pending.clear()
        self._controls[:] = 0.0
        if why is None or why.startswith("STOP"):
            self._running = False

    def _safe_controls(self) -> np.ndarray:
        if self.safe_state == "zero":
            return np.zeros(self.spec.act_dim)
        qvel = self.sim.get_state()[1][0]
        vel = np.where(self._damped_dof >= 0, qvel[np.maximum(self._damped_dof, 0)], 0.0)
        return np.clip(-self.damping * vel, self.ctrl_low, self.ctrl_high)

    # ------------------------------------------------------------------------ the physics
    def _tick(self, now: float) -> None:
        if not self._running:
            if self._last is not None and self.session is not None \
                    and not self.session.ended and self._episode_id:
                self._send_obs(self._last)  # an ended episode repeats its last word
            return
        if not self.safe and now - self._last_command > self.command_timeout:
            self.counts["timeouts"] += 1
            self._stop(f"no command for {(now - self._last_command) * 1e3:.0f} ms (command "
                       f"timeout {self.command_timeout * 1e3:g} ms)")
        due = [p for p in self._pending if p[0] <= now]
        if self._waiting and not self.safe:  # a robot holds still until the controller answers
            if not due:
                self._send_obs(self._last)
                return
            self._waiting = False
        if self.safe:
            applied = self._safe_controls()
        else:
            if due:
                self._controls = due[-1][1]
                self._pending = [p for p in self._pending if p[0] > now]
            applied = np.clip(self._controls, self.ctrl_low, self.ctrl_high)
        obs, reward, terminated, truncated, info = self.sim.step(applied[None])
        self.step_index += 1
        if self.trace is not None:
            self.trace.append((self._episode_id, self.step_index, applied.copy(), self.safe))
        self.counts["steps"] += 1
        self.episode_return += float(reward[0])
        done = bool(terminated[0] or truncated[0])
        final = info["final_obs"][0] if info["_final_obs"][0] else obs[0]
        self._last = self._observation(final, float(reward[0]), done, bool(terminated[0]))
        if done:
            self._running = False
            self.finished.append({"session": self.session.id if self.session else 0,
                                  "episode": self._episode_id, "steps": self.step_index,
                                  "return": self.episode_return, "safe": self.safe})
        self._send_obs(self._last)

    def serve(self, duration: Optional[float] = None) -> None:
        """Runs the robot: packets as they come, a physics step every control period on the
        monotonic clock (sleeping between), until duration seconds pass or Ctrl-C."""
        start = time.monotonic()
        next_tick = start + self.period
        try:
            while (duration is None or time.monotonic() - start < duration) \
                    and not self._shutdown:
                now = time.monotonic()
                while True:
                    try:
                        data, sender = self.sock.recvfrom(P.MAX_PACKET)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionResetError:
                        continue
                    restart = self._handle(data, sender[:2], now)
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
              ready=None, rate: Optional[float] = None, key: Optional[bytes] = None,
              command_timeout: Optional[float] = None, safe_state: str = "zero",
              damping: float = 1.0) -> int:
    """The sim-robot command: serve until stopped; prints the port it listens on."""
    try:
        task = json.loads(task_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--task should be JSON such as '{{\"goal_velocity\": 1.0}}': "
                         f"{exc}") from None
    if not isinstance(task, dict):
        raise ValueError(f"--task should be a JSON object, got {task_json!r}")
    robot = SimRobot(family, task, port, host, gap, seed, overrides, rate, key,
                     command_timeout, safe_state, damping)
    shown = f"[{host}]" if ":" in host else host
    print(f"sim-robot {robot.family.name} {robot.task!r} on udp://{shown}:{robot.port}, "
          f"control period {robot.period * 1e3:g} ms, command timeout "
          f"{robot.command_timeout * 1e3:g} ms, "
          f"{'authenticated' if key is not None else 'no key'}", flush=True)
    g = robot.reality_gap
    print(f"reality gap: command_delay_ms {g['command_delay_ms']} (task) + latency_ms "
          f"{g['latency_ms']:g} +- jitter_ms {g['jitter_ms']:g} (link); noise_scale "
          f"{g['noise_scale']:g}, obs_noise {g['obs_noise']:g}; drop {g['drop']:g}; "
          f"saturation {g['saturation']:g}; dynamics {json.dumps(g['dynamics'])}", flush=True)
    if key is None and not _loopback(host):
        print(f"warning: sim-robot listens on {host} without a key: anyone who can reach the "
              f"port can drive it (--key-file)", file=sys.stderr, flush=True)
    if ready is not None:
        ready(robot)
    robot.serve(duration)
    return 0


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
