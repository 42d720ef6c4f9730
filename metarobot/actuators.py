"""Actuators as family data: how the policy's action reaches the joints (the model's own motors,
with a command delay, or PD position servos with effort and torque-speed limits), simulated by
the C++ core at every physics step.

    Actuators(kind="servo", kp=20.0, kd=0.5, action_scale=0.25, delay_ms=(0, 20))
    actuator_settings(family.actuators, model, rows)   # per simulation, for the core

Per-task values (kp, kd, strength, delay, ...) are task parameters drawn by
parameters.ActuatorRange.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import mujoco
import numpy as np

from .parameters import PER_MOTOR, finite


# modes shared with csrc/engine.h (ActuatorMode)
_ACT_NONE, _ACT_TORQUE, _ACT_SERVO = range(3)
_SERVO_FIELDS = ("kp", "kd", "action_scale", "default_pose", "strength", "feedforward",
                 "effort_limit", "saturation_torque", "max_velocity")
_SERVO_DEFAULTS = {"kp": 0.0, "kd": 0.0, "action_scale": 1.0, "default_pose": None,
                   "strength": 1.0, "feedforward": 0.0, "effort_limit": None,
                   "saturation_torque": None, "max_velocity": None}


def _tuple_or_value(value: Any) -> Any:
    """Lists (from JSON overrides) as tuples, so that equal settings compare equal."""
    return tuple(value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class Actuators:
    """How the policy's action reaches the joints; the C++ core simulates it at every physics
    step. The family's frame_skip is the decimation (physics steps per policy step).

    kind 'torque': the action drives the model's own actuators, as without Actuators, but
    delay_ms later. kind 'servo': one PD position servo per model actuator, on that actuator's
    joint (the model's actuators must be plain motors on hinge or slide joints; they get ctrl
    0): target q* = default_pose + action_scale * a, and before every physics step

        tau = strength (kp (q* - q) - kd qdot) + feedforward,
        clipped to +-min(effort_limit, max(0, saturation_torque (1 - |qdot| / max_velocity)))

    applied as a joint torque (qfrc_applied). A command reaches the motors delay_ms after it
    is issued (rounded to physics steps): a fixed delay, or a (low, high) range drawn per
    episode from each simulation's own random stream; until the first command arrives the
    motors hold the command of action 0. Quantities drawn per task are task parameters
    (parameters.ActuatorRange: command_delay_ms, kp, kd, strength, ...); a task's value
    replaces the one here.

    Per-motor fields take one number for every motor or a tuple of one per model actuator.

    >>> Actuators("servo", kp=60.0, kd=2.0, action_scale=0.5, delay_ms=(0.0, 30.0))
    """

    kind: str = "torque"
    delay_ms: Any = 0.0           # ms: fixed, or (low, high) drawn per episode
    kp: Any = 0.0                 # Nm/rad (N/m on a slide joint)
    kd: Any = 0.0                 # Nm s/rad (N s/m)
    action_scale: Any = 1.0       # target per action unit, rad (m)
    default_pose: Any = None      # target of action 0, rad (m); None: the joints' qpos0
    strength: Any = 1.0           # factor on the PD torque (a weaker or stronger motor)
    feedforward: Any = 0.0        # Nm (N) added to the PD torque
    effort_limit: Any = None      # Nm (N); None: the model actuator's bound (forcerange, else
                                  # gear x ctrlrange; unbounded: none)
    saturation_torque: Any = None  # Nm of the DC motor envelope at rest; None: no envelope
    max_velocity: Any = None      # rad/s (m/s) where the envelope reaches 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _tuple_or_value(getattr(self, field.name)))
        self.validate()

    def validate(self) -> None:
        if self.kind not in ("torque", "servo"):
            raise ValueError(f"actuators: kind should be 'torque' or 'servo', got {self.kind!r}")
        self.delay_range()
        if self.kind == "torque":
            changed = [f for f in _SERVO_FIELDS if getattr(self, f) != _SERVO_DEFAULTS[f]]
            if changed:
                raise ValueError(f"actuators: {changed} are servo settings; kind 'torque' drives "
                                 f"the model's own actuators (use kind='servo')")
            return
        if (self.saturation_torque is None) != (self.max_velocity is None):
            raise ValueError("actuators: the torque-speed envelope needs both saturation_torque "
                             "and max_velocity (or neither), got "
                             f"{self.saturation_torque!r} and {self.max_velocity!r}")
        bounds = {"kp": (0.0, True), "kd": (0.0, True), "strength": (0.0, True),
                  "effort_limit": (0.0, False), "saturation_torque": (0.0, False),
                  "max_velocity": (0.0, False)}
        for field in _SERVO_FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            if not values:
                raise ValueError(f"actuators: {field} should be a number or one per motor, "
                                 f"got ()")
            for v in values:
                # limits may be inf (none); gains, scales and poses are finite
                x = float(v) if field in ("effort_limit", "saturation_torque",
                                          "max_velocity") and v == math.inf \
                    else finite(v, f"actuators {field}")
                if field in bounds:
                    bound, inclusive = bounds[field]
                    if not (x >= bound if inclusive else x > bound):
                        raise ValueError(f"actuators: {field} should be "
                                         f"{'>=' if inclusive else '>'} {bound:g}, got {x:g}")

    def delay_range(self) -> Tuple[float, float]:
        """(low, high) command delay, ms."""
        value = self.delay_ms
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"actuators: delay_ms should be a number or a (low, high) pair "
                                 f"of ms, got {value!r}")
            low, high = (finite(v, "actuators delay_ms") for v in value)
        else:
            low = high = finite(value, "actuators delay_ms")
        if not 0 <= low <= high:
            raise ValueError(f"actuators: delay_ms should be >= 0 with low <= high, got "
                             f"{value!r}")
        return low, high

    def describe(self) -> str:
        low, high = self.delay_range()
        delay = (f"delay {low:g} ms" if low == high else
                 f"delay U[{low:g}, {high:g}] ms per episode")
        if self.kind == "torque":
            return f"the model's motors, {delay}"
        parts = [f"PD servos kp {_show(self.kp)}, kd {_show(self.kd)}, action scale "
                 f"{_show(self.action_scale)}"]
        if self.strength != 1.0:
            parts.append(f"strength {_show(self.strength)}")
        if self.feedforward != 0.0:
            parts.append(f"feedforward {_show(self.feedforward)}")
        parts.append("effort limit " + ("of the model" if self.effort_limit is None
                                        else _show(self.effort_limit)))
        if self.saturation_torque is not None:
            parts.append(f"DC motor {_show(self.saturation_torque)} Nm at rest, 0 at "
                         f"{_show(self.max_velocity)} rad/s")
        parts.append(delay)
        return ", ".join(parts)

    def as_dict(self) -> Dict[str, Any]:
        """The fields that differ from the defaults (the override that rebuilds it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}"


def _per_motor(value: Any, n: int, what: str) -> np.ndarray:
    """A number or one per motor -> (n,) float64."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ValueError(f"actuators: {what} should be one number or {n} (one per model "
                             f"actuator), got {len(value)}")
        return np.array(value, np.float64)
    return np.full(n, float(value))


def servo_joints(model: mujoco.MjModel) -> Tuple[np.ndarray, np.ndarray]:
    """(qpos index, dof index) of each model actuator's joint, (nu,) each; ValueError unless
    every actuator is a plain motor on a hinge or slide joint (servos replace them)."""
    qpos, dof = [], []
    for i in range(model.nu):
        name = model.actuator(i).name or f"#{i}"
        joint = model.actuator_trnid[i, 0]
        if int(model.actuator_trntype[i]) != int(mujoco.mjtTrn.mjTRN_JOINT) or \
                int(model.jnt_type[joint]) not in (int(mujoco.mjtJoint.mjJNT_HINGE),
                                                   int(mujoco.mjtJoint.mjJNT_SLIDE)):
            raise ValueError(f"actuators: servo {name} should act on a hinge or slide joint; "
                             f"the model's actuator {name} has another transmission")
        if int(model.actuator_biastype[i]) != int(mujoco.mjtBias.mjBIAS_NONE) or \
                int(model.actuator_dyntype[i]) != int(mujoco.mjtDyn.mjDYN_NONE):
            raise ValueError(f"actuators: servos replace the model's actuators, which should be "
                             f"plain motors (no bias, no dynamics); actuator {name} is not")
        qpos.append(int(model.jnt_qposadr[joint]))
        dof.append(int(model.jnt_dofadr[joint]))
    return np.array(qpos, np.int64), np.array(dof, np.int64)


def model_effort_limits(model: mujoco.MjModel) -> np.ndarray:
    """(nu,) the force bound of each model actuator on its joint, Nm (N): forcerange when
    force-limited, else |gear| x the control range's larger end, inf when unbounded."""
    out = np.full(model.nu, math.inf)
    for i in range(model.nu):
        if model.actuator_forcelimited[i]:
            out[i] = np.abs(model.actuator_forcerange[i]).max()
        elif model.actuator_ctrllimited[i]:
            out[i] = abs(model.actuator_gear[i, 0]) * np.abs(model.actuator_ctrlrange[i]).max()
    return out


def delay_steps(ms: float, timestep: float) -> int:
    """A delay in ms as whole physics steps of timestep seconds (nearest)."""
    return int(math.floor(ms / (1000.0 * timestep) + 0.5))


def actuator_settings(actuators: Optional[Actuators], model: mujoco.MjModel,
                      rows: Sequence[Mapping[str, float]]) -> Dict[str, List]:
    """The actuator model of len(rows) simulations for the C++ core (BatchEngine's actuators):
    rows are their task parameter values; ActuatorRange values replace the family's. Per
    simulation arrays come out flat, row-major (simulation, motor)."""
    n, nu = len(rows), model.nu
    out: Dict[str, List] = {}
    if any("noise_scale" in r for r in rows):
        out["noise_scale"] = [float(r.get("noise_scale", 1.0)) for r in rows]
    if actuators is None:
        if any("command_delay_ms" in r or any(k.split("[")[0] in PER_MOTOR for k in r)
               for r in rows):
            raise ValueError("actuators: the family draws actuator quantities per task but has "
                             "no Actuators (set actuators=...)")
        return out
    low, high = actuators.delay_range()
    dt = model.opt.timestep
    lo = [delay_steps(r.get("command_delay_ms", low), dt) for r in rows]
    hi = [delay_steps(r.get("command_delay_ms", high), dt) for r in rows]
    out.update(mode=_ACT_TORQUE, delay_lo=lo, delay_hi=hi)
    if actuators.kind == "torque":
        if any(k.split("[")[0] in PER_MOTOR for r in rows for k in r):
            raise ValueError("actuators: kp, kd, strength and the limits are servo quantities; "
                             "the family's actuators are of kind 'torque'")
        return out
    qpos, dof = servo_joints(model)
    default = (model.qpos0[qpos] if actuators.default_pose is None
               else _per_motor(actuators.default_pose, nu, "default_pose"))
    base = {
        "kp": _per_motor(actuators.kp, nu, "kp"),
        "kd": _per_motor(actuators.kd, nu, "kd"),
        "strength": _per_motor(actuators.strength, nu, "strength"),
        "feedforward": _per_motor(actuators.feedforward, nu, "feedforward"),
        "effort_limit": (model_effort_limits(model) if actuators.effort_limit is None
                         else _per_motor(actuators.effort_limit, nu, "effort_limit")),
        "saturation_torque": (np.full(nu, math.inf) if actuators.saturation_torque is None
                              else _per_motor(actuators.saturation_torque, nu,
                                              "saturation_torque")),
        "max_velocity": (np.full(nu, math.inf) if actuators.max_velocity is None
                         else _per_motor(actuators.max_velocity, nu, "max_velocity")),
    }
    for quantity, values in base.items():
        table = np.tile(values, (n, 1))
        for s, r in enumerate(rows):
            if quantity in r:
                table[s, :] = r[quantity]
            for i in range(nu):
                if f"{quantity}[{i}]" in r:
                    table[s, i] = r[f"{quantity}[{i}]"]
        out[quantity] = table.ravel().tolist()
    out.update(mode=_ACT_SERVO, qpos_adr=qpos.tolist(), dof_adr=dof.tolist(),
               q_default=np.asarray(default, np.float64).tolist(),
               action_scale=_per_motor(actuators.action_scale, nu, "action_scale").tolist())
    return out
