"""The vocabulary task families are written in: observation, reward and termination terms, and
model fields written per task (the distributions task parameters are drawn from are
metarobot.parameters, also reachable here as part of the vocabulary).

Terms are frozen dataclasses. ``compile`` turns one into the plain tuple the C++ core evaluates,
resolving body names against a compiled model and parameter names against the family's parameter
vector. A new family is a new combination of these terms; it rarely needs new C++.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import mujoco

import math

import numpy as np

from .parameters import (ACTUATOR_QUANTITIES, DYNAMICS_FIELDS, PER_MOTOR,  # noqa: F401
                         ActuatorRange, Choice, Disc, DynamicsScale, Uniform, dynamics_scale,
                         finite)

# Kind numbers shared with csrc/engine.h.
(_OBS_QPOS, _OBS_QVEL, _OBS_CFRC_EXT, _OBS_XMAT, _OBS_SUBTREE_COM, _OBS_XPOS, _OBS_PARAM,
 _OBS_HEIGHT_SCAN, _OBS_ZEROS) = range(9)
(_R_CONSTANT, _R_FORWARD_VELOCITY, _R_VELOCITY_ERROR, _R_GOAL_DISTANCE, _R_CONTROL_COST,
 _R_CONTACT_COST, _R_QPOS_RATE, _R_BODY_DISTANCE) = range(8)
_T_QPOS_OUTSIDE, _T_NON_FINITE, _T_STATE_BOUND, _T_HEIGHT_ABOVE_TERRAIN = range(4)


def _body_id(model: mujoco.MjModel, body: str, what: str) -> int:
    body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
    if body_id < 0:
        names = [model.body(i).name for i in range(model.nbody)]
        raise ValueError(f"{what}: the model has no body {body!r}; its bodies are {names}")
    return body_id


def _hfield_geom(model: mujoco.MjModel, geom: str, what: str) -> int:
    geom_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
    if geom_id < 0 or model.geom_type[geom_id] != mujoco.mjtGeom.mjGEOM_HFIELD:
        hfields = [model.geom(i).name for i in range(model.ngeom)
                   if model.geom_type[i] == mujoco.mjtGeom.mjGEOM_HFIELD]
        raise ValueError(f"{what}: the model has no heightfield geom {geom!r}; its heightfield "
                         f"geoms are {hfields}")
    return geom_id


def _param(index: Mapping[str, int], name: str, what: str) -> int:
    if name not in index:
        raise ValueError(f"{what}: the family has no task parameter {name!r}; it has "
                         f"{sorted(index)}")
    return index[name]


def _slice(start: int, stop: Optional[int], n: int, what: str) -> Tuple[int, int]:
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise ValueError(f"{what}: slice [{start}:{stop}] does not fit a vector of size {n}")
    return start, stop - start


# ----------------------------------------------------------------------------------- observations

def sensor(term: Any) -> Tuple[float, int]:
    """(noise std, delay in physics steps) of an observation term, checked: the C++ core reads
    them after the term's own tuple. Terms without the fields are exact and current."""
    noise = finite(getattr(term, "noise", 0.0), f"{type(term).__name__} noise")
    if not noise >= 0:
        raise ValueError(f"{type(term).__name__}: noise should be a std >= 0, got {noise}")
    delay = getattr(term, "delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"{type(term).__name__}: delay should be an integer >= 0 (physics "
                         f"steps), got {delay!r}")
    return noise, delay


@dataclasses.dataclass(frozen=True)
class Qpos:
    """Joint positions qpos[start:stop] (m, rad; quaternions for free joints), as encoders read
    them: + N(0, noise) per element (times the task's noise_scale), and delay physics steps
    old (the reset state until the episode is that old)."""

    start: int = 0
    stop: Optional[int] = None
    noise: float = 0.0
    delay: int = 0

    def compile(self, model, index):
        start, size = _slice(self.start, self.stop, model.nq, "Qpos")
        return (_OBS_QPOS, 0, start, size, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class Qvel:
    """Joint velocities qvel[start:stop] (m/s, rad/s), clipped to [-clip, clip] when clip is
    set; noise and delay as Qpos's (the noise is added before the clip)."""

    start: int = 0
    stop: Optional[int] = None
    clip: Optional[float] = None
    noise: float = 0.0
    delay: int = 0

    def compile(self, model, index):
        start, size = _slice(self.start, self.stop, model.nv, "Qvel")
        if self.clip is None:
            return (_OBS_QVEL, 0, start, size, 0.0, 0.0, -1, 0)
        bound = finite(self.clip, "Qvel clip")
        if not bound > 0:
            raise ValueError(f"Qvel: clip should be > 0, got {bound}")
        return (_OBS_QVEL, 0, start, size, -bound, bound, -1, 0)


@dataclasses.dataclass(frozen=True)
class ExternalForces:
    """Contact forces on every body, cfrc_ext (nbody x 6: torque then force), clipped to [low,
    high]; computed at the new state with the controls just applied."""

    low: float = -1.0
    high: float = 1.0

    def compile(self, model, index):
        if not self.low <= self.high:
            raise ValueError(f"ExternalForces: clip range [{self.low}, {self.high}] is empty")
        return (_OBS_CFRC_EXT, 0, 0, 6 * model.nbody, float(self.low), float(self.high), -1, 0)


@dataclasses.dataclass(frozen=True)
class BodyRotation:
    """Rotation matrix of a body's frame in the world, row-major (9); + N(0, noise) per
    element (times the task's noise_scale)."""

    body: str
    noise: float = 0.0

    def compile(self, model, index):
        return (_OBS_XMAT, _body_id(model, self.body, "BodyRotation"), 0, 9, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class SubtreeCom:
    """Centre of mass of a body and its descendants, world frame (3, m); + N(0, noise) per
    element (times the task's noise_scale)."""

    body: str
    noise: float = 0.0

    def compile(self, model, index):
        body = _body_id(model, self.body, "SubtreeCom")
        return (_OBS_SUBTREE_COM, body, 0, 3, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class BodyPosition:
    """Origin of a body's frame, world frame (3, m); + N(0, noise) per element (times the
    task's noise_scale)."""

    body: str
    noise: float = 0.0

    def compile(self, model, index):
        return (_OBS_XPOS, _body_id(model, self.body, "BodyPosition"), 0, 3, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class TaskParameters:
    """The task's own parameters (a goal position, a velocity), for a policy told its task. With
    hidden=True the slot holds zeros: the policy must infer the task from rewards (meta-RL), as
    Meta-World's ML1 benchmarks zero their goal."""

    names: Tuple[str, ...]
    hidden: bool = False

    def compile(self, model, index):
        ids = [_param(index, n, "TaskParameters") for n in self.names]
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError("TaskParameters: names must be consecutive parameters of the family")
        if self.hidden:
            return (_OBS_ZEROS, 0, 0, len(ids), 0.0, 0.0, -1, 0)
        return (_OBS_PARAM, 0, ids[0], len(ids), 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class HeightScan:
    """Heights (m) of a body above the terrain at a grid of columns x rows points around it:
    columns along x, rows along y, spacing metres apart, the grid centred forward metres ahead
    of the body along +x (world axes). Flat ground under a body at 0.5 m reads 0.5 everywhere."""

    body: str
    columns: int
    rows: int = 1
    spacing: float = 0.2
    forward: float = 0.0
    geom: str = "terrain"

    def compile(self, model, index):
        for field in ("columns", "rows"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HeightScan: {field} should be an integer >= 1, got {value!r}")
        if not finite(self.spacing, "HeightScan spacing") > 0:
            raise ValueError(f"HeightScan: spacing should be > 0, got {self.spacing}")
        geom = _hfield_geom(model, self.geom, "HeightScan")
        body = _body_id(model, self.body, "HeightScan")
        return (_OBS_HEIGHT_SCAN, body, 0, self.columns * self.rows, float(self.spacing),
                finite(self.forward, "HeightScan forward"), geom, self.columns)


# ----------------------------------------------------------------------------------------- reward

@dataclasses.dataclass(frozen=True)
class Constant:
    """A constant reward per step (alive or survive bonus)."""

    name: str
    value: float

    @property
    def weight(self) -> float:
        return self.value

    def compile(self, model, index):
        return (_R_CONSTANT, float(self.value), 0, 0, -1, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class ForwardVelocity:
    """weight * direction * v, v the world velocity along axis of the centre of mass of body and
    its descendants (m/s; for the root body, the whole robot's, as the MAML paper's code
    measures it); direction is a task parameter (+-1) or 1 when None."""

    name: str
    body: str
    axis: int = 0
    direction: Optional[str] = None
    weight: float = 1.0

    def compile(self, model, index):
        if self.axis not in (0, 1, 2):
            raise ValueError(f"{self.name}: axis should be 0, 1 or 2, got {self.axis}")
        p = -1 if self.direction is None else _param(index, self.direction, self.name)
        body = _body_id(model, self.body, self.name)
        return (_R_FORWARD_VELOCITY, float(self.weight), body, self.axis, p, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class VelocityError:
    """weight * |v - goal|, v as in ForwardVelocity, goal a task parameter (m/s)."""

    name: str
    body: str
    goal: str
    axis: int = 0
    weight: float = -1.0

    def compile(self, model, index):
        if self.axis not in (0, 1, 2):
            raise ValueError(f"{self.name}: axis should be 0, 1 or 2, got {self.axis}")
        p = _param(index, self.goal, self.name)
        body = _body_id(model, self.body, self.name)
        return (_R_VELOCITY_ERROR, float(self.weight), body, self.axis, p, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class GoalDistance:
    """weight * ||x - goal||, x the first len(goal) coordinates of a body's origin (m)."""

    name: str
    body: str
    goal: Tuple[str, ...]
    weight: float = -1.0

    def compile(self, model, index):
        ids = [_param(index, n, self.name) for n in self.goal]
        if not 1 <= len(ids) <= 3 or ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"{self.name}: goal must name 1 to 3 consecutive parameters")
        body = _body_id(model, self.body, self.name)
        return (_R_GOAL_DISTANCE, float(self.weight), body, len(ids), ids[0], 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class BodyDistance:
    """weight * ||x_body - x_other||, the distance between two bodies' origins (m): the
    fingertip to an object, an object to a goal marker."""

    name: str
    body: str
    other: str
    weight: float = -1.0

    def compile(self, model, index):
        body = _body_id(model, self.body, self.name)
        other = _body_id(model, self.other, self.name)
        return (_R_BODY_DISTANCE, float(self.weight), body, 0, -1, 1.0, 0.0, 0.0, 0, other)


@dataclasses.dataclass(frozen=True)
class ControlCost:
    """weight * sum((a / scale)^2) over actuators; a clipped to the control range first when
    clip is set."""

    name: str
    weight: float
    scale: float = 1.0
    clip: bool = False

    def compile(self, model, index):
        if not self.scale > 0:
            raise ValueError(f"{self.name}: scale should be > 0, got {self.scale}")
        return (_R_CONTROL_COST, float(self.weight), 0, 0, -1, float(self.scale), 0.0, 0.0,
                int(self.clip), -1)


@dataclasses.dataclass(frozen=True)
class ContactCost:
    """weight * sum(clip(cfrc_ext, low, high)^2) over all bodies."""

    name: str
    weight: float
    low: float = -1.0
    high: float = 1.0

    def compile(self, model, index):
        if not self.low <= self.high:
            raise ValueError(f"{self.name}: clip range [{self.low}, {self.high}] is empty")
        return (_R_CONTACT_COST, float(self.weight), 0, 0, -1, 1.0, float(self.low),
                float(self.high), 0, -1)


@dataclasses.dataclass(frozen=True)
class QposRate:
    """weight * (qpos[index] after the env step - before) / its duration: the root's progress
    (m/s), as Gymnasium's and rand_param_envs' locomotion rewards measure it."""

    name: str
    index: int = 0
    weight: float = 1.0

    def compile(self, model, index):
        if not 0 <= self.index < model.nq:
            raise ValueError(f"{self.name}: index {self.index} is not in [0, {model.nq})")
        return (_R_QPOS_RATE, float(self.weight), 0, self.index, -1, 1.0, 0.0, 0.0, 0, -1)


# ------------------------------------------------------------------------------------ termination

@dataclasses.dataclass(frozen=True)
class QposOutside:
    """The episode ends when qpos[index] leaves [low, high] (a height or angle health range)."""

    index: int
    low: float
    high: float

    def compile(self, model, index):
        if not 0 <= self.index < model.nq:
            raise ValueError(f"QposOutside: index {self.index} is not in [0, {model.nq})")
        if not self.low <= self.high:
            raise ValueError(f"QposOutside: range [{self.low}, {self.high}] is empty")
        return (_T_QPOS_OUTSIDE, self.index, float(self.low), float(self.high), -1)


@dataclasses.dataclass(frozen=True)
class NonFiniteState:
    """The episode ends when qpos or qvel holds a NaN or an infinity."""

    def compile(self, model, index):
        return (_T_NON_FINITE, 0, 0.0, 0.0, -1)


@dataclasses.dataclass(frozen=True)
class StateBound:
    """The episode ends when any |s[i]| >= bound, s = (qpos, qvel), i >= start."""

    start: int
    bound: float

    def compile(self, model, index):
        if not 0 <= self.start < model.nq + model.nv:
            raise ValueError(f"StateBound: start {self.start} is not in [0, "
                             f"{model.nq + model.nv})")
        if not finite(self.bound, "StateBound bound") > 0:
            raise ValueError(f"StateBound: bound should be > 0, got {self.bound}")
        return (_T_STATE_BOUND, self.start, 0.0, float(self.bound), -1)


@dataclasses.dataclass(frozen=True)
class HeightAboveTerrain:
    """The episode ends when a body's height above the terrain under it leaves [low, high] (the
    health range of a torso on uneven ground)."""

    body: str
    low: float
    high: float
    geom: str = "terrain"

    def compile(self, model, index):
        if not self.low <= self.high:
            raise ValueError(f"HeightAboveTerrain: range [{self.low}, {self.high}] is empty")
        body = _body_id(model, self.body, "HeightAboveTerrain")
        geom = _hfield_geom(model, self.geom, "HeightAboveTerrain")
        return (_T_HEIGHT_ABOVE_TERRAIN, body, float(self.low), float(self.high), geom)


# ---------------------------------------------------------------------------------------- success

@dataclasses.dataclass(frozen=True)
class Success:
    """A step succeeds when the distance term (a GoalDistance or BodyDistance; its weight is
    ignored) is below threshold metres; reported as info['success'] and Trajectories.success."""

    distance: Any
    threshold: float

    def compile(self, model, index):
        if not isinstance(self.distance, (GoalDistance, BodyDistance)):
            raise ValueError(f"Success: distance should be a GoalDistance or BodyDistance, got "
                             f"{type(self.distance).__name__}")
        if not finite(self.threshold, "Success threshold") > 0:
            raise ValueError(f"Success: threshold should be > 0, got {self.threshold}")
        return (self.distance.compile(model, index), float(self.threshold))


# ------------------------------------------------------------------------- model fields per task

# the values a written field can take: a body's mass > 0, a friction coefficient >= 0
_WRITE_LOWER_BOUND = {"body_mass": (0.0, False), "geom_friction": (0.0, True)}

_WRITABLE = {"body_pos": mujoco.mjtObj.mjOBJ_BODY, "body_mass": mujoco.mjtObj.mjOBJ_BODY,
             "geom_pos": mujoco.mjtObj.mjOBJ_GEOM, "geom_friction": mujoco.mjtObj.mjOBJ_GEOM,
             "site_pos": mujoco.mjtObj.mjOBJ_SITE, "qpos0": mujoco.mjtObj.mjOBJ_JOINT}


@dataclasses.dataclass(frozen=True)
class WriteField:
    """Writes a task parameter into one element of the task's model: field[element][index] =
    value, element named in the model (a body, geom, site, or for qpos0 a joint, index then
    counting from the joint's first qpos). Places goal markers and objects, sets an object's
    mass or friction: per-task model variants of identical sizes, run in one batch.

    >>> WriteField("object_mass", "body_mass", "object")
    """

    param: str
    field: str
    element: str
    index: int = 0

    def validate(self, parameter_names: Sequence[str]) -> None:
        if self.field not in _WRITABLE:
            raise ValueError(f"WriteField: field should be one of {sorted(_WRITABLE)}, got "
                             f"{self.field!r}")
        if self.param not in parameter_names:
            raise ValueError(f"WriteField: the family has no task parameter {self.param!r}; it "
                             f"has {list(parameter_names)}")

    def check_value(self, value: float) -> None:
        """Raises ValueError if value cannot go into the field (a mass <= 0, a friction < 0)."""
        if self.field not in _WRITE_LOWER_BOUND:
            return
        bound, inclusive = _WRITE_LOWER_BOUND[self.field]
        if not (value >= bound if inclusive else value > bound):
            raise ValueError(f"{self.param} is written into {self.field}, which should be "
                             f"{'>=' if inclusive else '>'} {bound:g}; got {value:g}")

    def apply(self, model: mujoco.MjModel, values: Mapping[str, float]) -> None:
        obj = _WRITABLE[self.field]
        element = mujoco.mj_name2id(model, obj, self.element)
        if element < 0:
            raise ValueError(f"WriteField {self.param}: the model has no "
                             f"{obj.name[6:].lower()} {self.element!r}")
        if self.field == "qpos0":
            start = model.jnt_qposadr[element]
            stop = model.jnt_qposadr[element + 1] if element + 1 < model.njnt else model.nq
            if not 0 <= self.index < stop - start:
                raise ValueError(f"WriteField {self.param}: joint {self.element!r} has "
                                 f"{stop - start} qpos, index {self.index} is outside")
            model.qpos0[start + self.index] = values[self.param]
            return
        arr = getattr(model, self.field)
        width = 1 if arr.ndim == 1 else arr.shape[1]
        if not 0 <= self.index < width:
            raise ValueError(f"WriteField {self.param}: {self.field} has {width} entries "
                             f"per element, index {self.index} is outside")
        if arr.ndim == 1:
            arr[element] = values[self.param]
        else:
            arr[element, self.index] = values[self.param]


# -------------------------------------------------------------------------------------- actuators

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
