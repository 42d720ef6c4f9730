"""The safety state machine of a robot on PD servos: what each motor is told, in every phase,
and when to stop. Pure logic, no I/O: the caller feeds it the robot's newest state and the
clock, and sends what it answers (the Unitree link does at its command rate; any PD robot can).

    PASSIVE --start_stand--> STAND --(ramp done)--> HOLD --start_policy--> POLICY
       ^ the start            |  ramp of the targets     targets held    the policy's targets
                              |  from the measured pose  at the default  (each change
                              |  to the default pose     pose            clamped)
    STAND / HOLD / POLICY --start_stand--> STAND (between episodes: back to the default pose)
    HOLD --swap_policy--> HOLD (an adapted policy swapped in, recorded with its reason)
    every phase --stop--> STOP: damping (kp 0, kd > 0), final; a new machine leaves it

Stop triggers, checked at every command (command()):
- the state is older than state_timeout (no word from the robot): in every phase;
- no policy targets for longer than policy_timeout in POLICY (the policy's process hangs
  while whoever sends the commands carries on);
- a non-finite value in the state or the policy's targets: in every phase;
- tilt (the angle between the body's z axis and up, from the projected gravity) beyond
  tilt_max_degrees: in every phase, so a robot lying on its side never stands up;
- a joint outside its range shrunk by joint_margin: in HOLD and POLICY only (a robot lying
  down folds its calves to their limits; it starts in PASSIVE and ramps up through STAND);
- a torque estimate (the robot's own, else kp (q* - q) - kd dq of what was sent) beyond its
  motor's effort limit for longer than over_torque_s: in STAND, HOLD and POLICY (a PD motor
  saturates for a moment on a step; a sustained one fights something);
- the policy's targets jumping: each target moves at most max_target_step (rad) from the
  previous one per policy step (clamped, so the motor never sees a larger step), and
  max_clamped_steps policy steps in a row that needed the clamp stop the run (the policy is
  off its training distribution, not a single spike).
SIGINT / SIGTERM are the caller's to catch (it calls stop()). Every transition is logged
with its time and reason (transitions).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import List, Optional, Sequence

import numpy as np


class Phase(enum.Enum):
    PASSIVE = "passive"  # kp 0, damping only: the robot is limp
    STAND = "stand"      # targets ramp from the measured pose to the default pose
    HOLD = "hold"        # targets at the default pose, waiting for the policy
    POLICY = "policy"    # the policy's targets
    STOP = "stop"        # damping, final


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    """What the machine allows and how it stands up. Arrays are per motor in the robot's
    order (n,): joint_low / joint_high (rad; +-inf where unlimited), effort_limit (Nm).

    state_timeout (s): the newest state may be this old. policy_timeout (s): in POLICY, the
    newest policy targets may be this old. tilt_max_degrees: the body's tilt
    from upright. joint_margin (rad): joints must stay within [low + margin, high - margin]
    in HOLD and POLICY. over_torque_s (s): how long a torque estimate may exceed its effort
    limit. max_target_step (rad): the largest change of a target per policy step;
    max_clamped_steps: consecutive clamped policy steps that stop. passive_kd, stop_kd
    (Nm s/rad): the damping of PASSIVE and STOP. stand_s (s): the ramp to the default pose.
    """

    joint_low: np.ndarray
    joint_high: np.ndarray
    effort_limit: np.ndarray
    state_timeout: float = 0.25
    policy_timeout: float = 0.25
    tilt_max_degrees: float = 60.0
    joint_margin: float = 0.05
    over_torque_s: float = 0.1
    max_target_step: float = 0.5
    max_clamped_steps: int = 5
    passive_kd: float = 1.0
    stop_kd: float = 2.0
    stand_s: float = 2.0

    def __post_init__(self):
        n = len(self.joint_low)
        for name in ("joint_low", "joint_high", "effort_limit"):
            value = np.asarray(getattr(self, name), np.float64)
            if value.shape != (n,) or np.isnan(value).any():
                raise ValueError(f"{name} should be {n} numbers (one per motor), got "
                                 f"{getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if (self.effort_limit <= 0).any():
            raise ValueError(f"effort_limit should be > 0 per motor, got {self.effort_limit}")
        for name in ("state_timeout", "policy_timeout", "tilt_max_degrees", "over_torque_s", "max_target_step",
                     "stand_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} should be a positive number, got {value!r}")
        if not self.tilt_max_degrees <= 180:
            raise ValueError(f"tilt_max_degrees should be at most 180, got "
                             f"{self.tilt_max_degrees}")
        for name in ("joint_margin", "passive_kd", "stop_kd"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"{name} should be a number >= 0, got {value!r}")
        if isinstance(self.max_clamped_steps, bool) or not isinstance(
                self.max_clamped_steps, int) or self.max_clamped_steps < 1:
            raise ValueError(f"max_clamped_steps should be an integer >= 1, got "
                             f"{self.max_clamped_steps!r}")


@dataclasses.dataclass(frozen=True)
class MotorState:
    """The robot's newest state. received (s): when it came, on the caller's monotonic clock.
    q (rad), dq (rad/s), tau_est (Nm, or None when the robot gives none): (n,) in the
    robot's motor order. gravity: the unit gravity vector in the body frame (3,) (upright:
    (0, 0, -1))."""

    received: float
    q: np.ndarray
    dq: np.ndarray
    gravity: np.ndarray
    tau_est: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class MotorCommand:
    """What each motor is told, (n,) each in the robot's motor order: the PD law
    tau = tau_ff + kp (q - q_measured) + kd (dq - dq_measured). q rad, dq rad/s, kp Nm/rad,
    kd Nm s/rad, tau_ff Nm."""

    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau_ff: np.ndarray


@dataclasses.dataclass(frozen=True)
class Transition:
    """A change of phase: when (s, the caller's clock), from, to and why."""

    time: float
    source: Phase
    target: Phase
    reason: str

    def __str__(self) -> str:
        return f"t={self.time:.3f} {self.source.value} -> {self.target.value}: {self.reason}"


def tilt_degrees(gravity: Sequence[float]) -> float:
    """The angle between the body's z axis and up, from the gravity vector in the body
    frame (upright: (0, 0, -1) -> 0 degrees; on its back -> 180)."""
    g = np.asarray(gravity, np.float64)
    norm = float(np.linalg.norm(g))
    if not norm > 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, -g[2] / norm))))


def gravity_from_quaternion(quaternion: Sequence[float]) -> np.ndarray:
    """The unit gravity vector (0, 0, -1) of the world in the body frame, (3,), from the
    body's orientation quaternion (w, x, y, z), as the ProjectedGravity term reads it."""
    w, x, y, z = (float(v) for v in quaternion)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not n > 0:
        return np.full(3, math.nan)
    w, x, y, z = w / n, x / n, y / n, z / n
    # R^T (0, 0, -1): minus the third row of R
    return -np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])


class SafetyMachine:
    """The phases of a PD robot and their commands (module docstring). default_pose (rad),
    kp (Nm/rad), kd (Nm s/rad): (n,) in the robot's motor order, the deployment config's;
    STAND, HOLD and POLICY use them."""

    def __init__(self, limits: SafetyLimits, default_pose: Sequence[float],
                 kp: Sequence[float], kd: Sequence[float], now: float):
        n = len(limits.joint_low)
        self.limits = limits
        self.default_pose = self._per_motor(default_pose, n, "default_pose")
        self.kp = self._per_motor(kp, n, "kp")
        self.kd = self._per_motor(kd, n, "kd")
        if (self.kp < 0).any() or (self.kd < 0).any():
            raise ValueError("kp and kd should be >= 0 per motor")
        self.n = n
        self.phase = Phase.PASSIVE
        self.transitions: List[Transition] = [Transition(now, Phase.PASSIVE, Phase.PASSIVE,
                                                         "start: passive (damping only)")]
        self.stop_reason = ""
        self._ramp_from: Optional[np.ndarray] = None
        self._ramp_start = now
        self._policy_targets: Optional[np.ndarray] = None
        self._targets = self.default_pose.copy()   # the last targets sent (STAND on)
        self._clamped_steps = 0
        self._over_torque_since: Optional[float] = None
        self._policy_at = now
        self.clamped_total = 0

    @staticmethod
    def _per_motor(value: Sequence[float], n: int, name: str) -> np.ndarray:
        out = np.asarray(value, np.float64)
        if out.shape != (n,) or not np.isfinite(out).all():
            raise ValueError(f"{name} should be {n} finite numbers, got {value!r}")
        return out

    # ---------------------------------------------------------------------- transitions
    def _go(self, now: float, target: Phase, reason: str) -> None:
        self.transitions.append(Transition(now, self.phase, target, reason))
        self.phase = target

    def start_stand(self, now: float, state: MotorState) -> None:
        """Ramp from the measured pose to the default pose over stand_s, then HOLD. From
        PASSIVE, HOLD or POLICY; refused (ValueError) in STOP."""
        if self.phase is Phase.STOP:
            raise ValueError(f"the robot is stopped ({self.stop_reason}): only a new start "
                             f"leaves STOP")
        q = np.asarray(state.q, np.float64)
        if q.shape != (self.n,) or not np.isfinite(q).all():
            self.stop(now, f"non-finite or missing joint positions at the stand: {q}")
            return
        self._ramp_from, self._ramp_start = q.copy(), now
        self._policy_targets = None
        self._clamped_steps = 0
        self._go(now, Phase.STAND, f"ramp to the default pose over {self.limits.stand_s:g} s")

    def start_policy(self, now: float) -> None:
        """The policy takes over from HOLD (ValueError elsewhere: it starts only from the
        default pose, held)."""
        if self.phase is not Phase.HOLD:
            raise ValueError(f"the policy starts from HOLD, the robot is in "
                             f"{self.phase.value.upper()}")
        self._policy_at = now
        self._go(now, Phase.POLICY, "the policy takes over")

    def swap_policy(self, now: float, reason: str) -> None:
        """Records a new policy swapped in (an adapted one) as a transition HOLD -> HOLD
        with the reason. Only in HOLD, where the motors hold the default pose and no policy
        target is in force; ValueError in any other phase."""
        if self.phase is not Phase.HOLD:
            raise ValueError(f"a policy is swapped in HOLD only, the robot is in "
                             f"{self.phase.value.upper()}")
        self._go(now, Phase.HOLD, reason)

    def stop(self, now: float, reason: str) -> None:
        """Into STOP (damping) from any phase; a second stop keeps the first reason."""
        if self.phase is Phase.STOP:
            return
        self.stop_reason = reason
        self._go(now, Phase.STOP, reason)

    @property
    def policy_targets(self) -> Optional[np.ndarray]:
        """The policy's targets as held for the motors (n,) rad, after the clamp; None before
        the policy's first in this POLICY phase."""
        return None if self._policy_targets is None else self._policy_targets.copy()

    def set_policy_targets(self, now: float, targets: Sequence[float]) -> None:
        """The policy's new joint targets (n,) rad in the robot's motor order, held until the
        next; in POLICY only (ignored otherwise). A non-finite target stops; each target
        moves at most max_target_step from the last one sent; max_clamped_steps steps in a
        row that needed it stop."""
        if self.phase is not Phase.POLICY:
            return
        self._policy_at = now
        q = np.asarray(targets, np.float64)
        if q.shape != (self.n,) or not np.isfinite(q).all():
            self.stop(now, f"non-finite policy targets: {q}")
            return
        step = self.limits.max_target_step
        clamped = np.clip(q, self._targets - step, self._targets + step)
        if (clamped != q).any():
            self._clamped_steps += 1
            self.clamped_total += 1
            worst = int(np.argmax(np.abs(q - self._targets)))
            if self._clamped_steps >= self.limits.max_clamped_steps:
                self.stop(now, f"target jumps: {self._clamped_steps} policy steps in a row "
                               f"moved a target by more than {step:g} rad (motor {worst}: "
                               f"{abs(q[worst] - self._targets[worst]):.3f} rad)")
                return
        else:
            self._clamped_steps = 0
        self._policy_targets = clamped

    # -------------------------------------------------------------------------- commands
    def _damping(self, kd: float) -> MotorCommand:
        zero = np.zeros(self.n)
        return MotorCommand(zero.copy(), zero.copy(), zero.copy(), np.full(self.n, kd),
                            zero.copy())

    def _check(self, now: float, state: Optional[MotorState]) -> None:
        lim = self.limits
        if state is None:
            self.stop(now, "no state from the robot")
            return
        age = now - state.received
        if age > lim.state_timeout:
            self.stop(now, f"stale state: the newest is {age * 1e3:.0f} ms old (limit "
                           f"{lim.state_timeout * 1e3:.0f} ms)")
            return
        arrays = [("q", state.q), ("dq", state.dq), ("gravity", state.gravity)]
        if state.tau_est is not None:
            arrays.append(("tau_est", state.tau_est))
        for name, value in arrays:
            if not np.isfinite(np.asarray(value, np.float64)).all():
                self.stop(now, f"non-finite {name} from the robot: {np.asarray(value)}")
                return
        if self.phase is Phase.POLICY and now - self._policy_at > lim.policy_timeout:
            self.stop(now, f"no policy targets for {(now - self._policy_at) * 1e3:.0f} ms "
                           f"(limit {lim.policy_timeout * 1e3:.0f} ms)")
            return
        tilt = tilt_degrees(state.gravity)
        if not tilt <= lim.tilt_max_degrees:
            self.stop(now, f"tilt {tilt:.1f} degrees (limit {lim.tilt_max_degrees:g})")
            return
        q = np.asarray(state.q, np.float64)
        if self.phase in (Phase.HOLD, Phase.POLICY):
            low, high = lim.joint_low + lim.joint_margin, lim.joint_high - lim.joint_margin
            out = np.flatnonzero((q < low) | (q > high))
            if out.size:
                m = int(out[0])
                self.stop(now, f"joint limit: motor {m} at {q[m]:.3f} rad, allowed "
                               f"[{low[m]:.3f}, {high[m]:.3f}] (range minus "
                               f"{lim.joint_margin:g} rad)")
                return
        if self.phase in (Phase.STAND, Phase.HOLD, Phase.POLICY):
            if state.tau_est is not None:
                tau = np.asarray(state.tau_est, np.float64)
            else:
                kp = self.kp
                tau = kp * (self._targets - q) - self.kd * np.asarray(state.dq, np.float64)
            over = np.flatnonzero(np.abs(tau) > lim.effort_limit)
            if over.size:
                if self._over_torque_since is None:
                    self._over_torque_since = now
                elif now - self._over_torque_since > lim.over_torque_s:
                    m = int(over[0])
                    self.stop(now, f"torque: motor {m} at {tau[m]:.1f} Nm beyond its limit "
                                   f"{lim.effort_limit[m]:g} Nm for more than "
                                   f"{lim.over_torque_s * 1e3:.0f} ms")
                    return
            else:
                self._over_torque_since = None

    def command(self, now: float, state: Optional[MotorState]) -> MotorCommand:
        """What the motors are told now, after the stop checks on the newest state (None:
        none has come). Advances STAND to HOLD when the ramp is done."""
        if self.phase is not Phase.STOP:
            self._check(now, state)
        if self.phase is Phase.STOP:
            return self._damping(self.limits.stop_kd)
        if self.phase is Phase.PASSIVE:
            return self._damping(self.limits.passive_kd)
        if self.phase is Phase.STAND:
            fraction = min(1.0, (now - self._ramp_start) / self.limits.stand_s)
            self._targets = self._ramp_from + fraction * (self.default_pose - self._ramp_from)
            if fraction >= 1.0:
                self._go(now, Phase.HOLD, "at the default pose")
        elif self.phase is Phase.HOLD:
            self._targets = self.default_pose.copy()
        elif self._policy_targets is not None:  # POLICY: held between policy steps
            self._targets = self._policy_targets
        zero = np.zeros(self.n)
        return MotorCommand(self._targets.copy(), zero.copy(), self.kp.copy(),
                            self.kd.copy(), zero.copy())
