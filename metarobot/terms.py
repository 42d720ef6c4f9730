"""The vocabulary task families are written in: observation, reward and termination terms, and
model fields written per task (the distributions task parameters are drawn from are
metarobot.parameters, the actuator models metarobot.actuators; both are reachable here as part
of the vocabulary).

Terms are frozen dataclasses. ``compile`` turns one into the plain tuple the C++ core evaluates,
resolving body names against a compiled model and parameter names against the family's parameter
vector. A new family is a new combination of these terms; it rarely needs new C++.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import mujoco

from .actuators import Actuators  # noqa: F401 (part of the vocabulary)
from .parameters import (DYNAMICS_FIELDS, ActuatorRange, Choice, Disc,  # noqa: F401
                         DynamicsScale, Uniform, dynamics_scale, finite)

# Kind numbers shared with csrc/engine.h.
(_OBS_QPOS, _OBS_QVEL, _OBS_CFRC_EXT, _OBS_XMAT, _OBS_SUBTREE_COM, _OBS_XPOS, _OBS_PARAM,
 _OBS_HEIGHT_SCAN, _OBS_ZEROS, _OBS_PROJECTED_GRAVITY, _OBS_BODY_ANGVEL, _OBS_COMMAND,
 _OBS_LAST_ACTION) = range(13)
(_R_CONSTANT, _R_FORWARD_VELOCITY, _R_VELOCITY_ERROR, _R_GOAL_DISTANCE, _R_CONTROL_COST,
 _R_CONTACT_COST, _R_QPOS_RATE, _R_BODY_DISTANCE, _R_TRACK_LIN_VEL, _R_TRACK_YAW_RATE,
 _R_BODY_VEL_SQUARED, _R_TORQUE_COST, _R_JOINT_ACC_COST, _R_ACTION_RATE, _R_BODY_CONTACTS,
 _R_FEET_AIR_TIME, _R_TRACK_LIN_VEL_ERROR, _R_JOINT_LIMIT_COST) = range(18)
(_T_QPOS_OUTSIDE, _T_NON_FINITE, _T_STATE_BOUND, _T_HEIGHT_ABOVE_TERRAIN, _T_BODY_CONTACT,
 _T_TILT) = range(6)


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

def sensor(term: Any) -> Tuple[float, int, float, Tuple[float, ...]]:
    """(noise std, delay in physics steps, scale, offsets) of an observation term, checked:
    the C++ core reads them after the term's own tuple. Element i of the term reads scale *
    (value - offset[i] + noise), then its clip. Terms without the fields are exact, current,
    unscaled and not offset."""
    what = type(term).__name__
    noise = finite(getattr(term, "noise", 0.0), f"{what} noise")
    if not noise >= 0:
        raise ValueError(f"{what}: noise should be a std >= 0, got {noise}")
    delay = getattr(term, "delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"{what}: delay should be an integer >= 0 (physics "
                         f"steps), got {delay!r}")
    scale = finite(getattr(term, "scale", 1.0), f"{what} scale")
    offset = tuple(finite(v, f"{what} offset") for v in getattr(term, "offset", ()) or ())
    return noise, delay, scale, offset


def bodies_padded(compiled: Tuple[Any, ...], size: int) -> Tuple[Any, ...]:
    """A reward (size 11) or termination (size 6) tuple with its list of body ids, empty for
    the terms that name none."""
    return compiled if len(compiled) == size else compiled + ((),)


def _body_ids(model: mujoco.MjModel, bodies: Sequence[str], what: str) -> Tuple[int, ...]:
    if isinstance(bodies, str) or not bodies:
        raise ValueError(f"{what}: bodies should be a non-empty sequence of body names, got "
                         f"{bodies!r}")
    return tuple(_body_id(model, b, what) for b in bodies)


@dataclasses.dataclass(frozen=True)
class Qpos:
    """Joint positions qpos[start:stop] (m, rad; quaternions for free joints), as encoders read
    them: scale * (q - offset + N(0, noise)) per element (the noise times the task's
    noise_scale), and delay physics steps old (the reset state until the episode is that
    old)."""

    start: int = 0
    stop: Optional[int] = None
    noise: float = 0.0
    delay: int = 0
    scale: float = 1.0
    offset: Tuple[float, ...] = ()  # subtracted first: joint angles relative to a default pose

    def compile(self, model, index):
        start, size = _slice(self.start, self.stop, model.nq, "Qpos")
        if self.offset and len(self.offset) != size:
            raise ValueError(f"Qpos: {len(self.offset)} offsets for {size} positions")
        return (_OBS_QPOS, 0, start, size, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class Qvel:
    """Joint velocities qvel[start:stop] (m/s, rad/s), scale * (v + noise) clipped to [-clip,
    clip] when clip is set; noise and delay as Qpos's."""

    start: int = 0
    stop: Optional[int] = None
    clip: Optional[float] = None
    noise: float = 0.0
    delay: int = 0
    scale: float = 1.0

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


@dataclasses.dataclass(frozen=True)
class ProjectedGravity:
    """The direction of gravity in a body's frame, R^T (0, 0, -1) (3, unit; (0, 0, -1) upright),
    as a robot computes it from its IMU's orientation; scale * (g + N(0, noise))."""

    body: str
    noise: float = 0.0
    scale: float = 1.0

    def compile(self, model, index):
        body = _body_id(model, self.body, "ProjectedGravity")
        return (_OBS_PROJECTED_GRAVITY, body, 0, 3, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class BodyAngularVelocity:
    """A body's angular velocity in its own frame (3, rad/s), what a gyroscope fixed to it
    reads; scale * (w + N(0, noise))."""

    body: str
    noise: float = 0.0
    scale: float = 1.0

    def compile(self, model, index):
        body = _body_id(model, self.body, "BodyAngularVelocity")
        return (_OBS_BODY_ANGVEL, body, 0, 3, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class Command:
    """The commands the robot is given (the family's Commands), elements [start:stop], times
    scale: what the operator asks for, which the policy must follow."""

    start: int = 0
    stop: Optional[int] = None
    scale: float = 1.0

    def compile(self, model, index):
        # the slice is checked against the family's commands by the core
        stop = self.start + 1 if self.stop is None else self.stop
        if not 0 <= self.start < stop:
            raise ValueError(f"Command: slice [{self.start}:{self.stop}] is empty")
        return (_OBS_COMMAND, 0, self.start, stop - self.start, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class LastAction:
    """The policy's action of the previous step (one per actuator; zeros after a reset)."""

    def compile(self, model, index):
        return (_OBS_LAST_ACTION, 0, 0, model.nu, 0.0, 0.0, -1, 0)


@dataclasses.dataclass(frozen=True)
class Commands:
    """Commands given to the robot (velocity commands: vx, vy in m/s and a yaw rate in rad/s, in
    the base's frame), drawn per simulation from U[low_i, high_i] at reset and again every
    resample_steps env steps (None: once per episode), from the simulation's random stream.
    The policy sees them through Command terms; the tracking rewards read the first three
    as (vx, vy, yaw rate)."""

    names: Tuple[str, ...]
    low: Tuple[float, ...]
    high: Tuple[float, ...]
    resample_steps: Optional[int] = None

    def __post_init__(self):
        for field in ("names", "low", "high"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if not self.names or not len(self.names) == len(self.low) == len(self.high):
            raise ValueError(f"Commands: names, low and high should have one entry per command, "
                             f"got {len(self.names)}, {len(self.low)}, {len(self.high)}")
        for name, low, high in zip(self.names, self.low, self.high):
            if not finite(low, f"command {name} low") <= finite(high, f"command {name} high"):
                raise ValueError(f"Commands: {name}'s range [{low}, {high}] is empty")
        steps = self.resample_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 1):
            raise ValueError(f"Commands: resample_steps should be an integer >= 1 or None, got "
                             f"{steps!r}")

    def compile(self) -> Tuple[Tuple[float, ...], Tuple[float, ...], int]:
        return (tuple(float(v) for v in self.low), tuple(float(v) for v in self.high),
                int(self.resample_steps or 0))

    def describe(self) -> str:
        each = ("once per episode" if self.resample_steps is None
                else f"every {self.resample_steps} steps")
        ranges = ", ".join(f"{n} ~ U[{lo:g}, {hi:g}]"
                           for n, lo, hi in zip(self.names, self.low, self.high))
        return f"commands {ranges}, drawn {each}"


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


def _tracking(term: Any, kind: int, model: mujoco.MjModel) -> Tuple[Any, ...]:
    """The core's tuple of a velocity tracking term (a body, sigma > 0 in its scale slot)."""
    if not finite(term.sigma, f"{term.name} sigma") > 0:
        raise ValueError(f"{term.name}: sigma should be > 0, got {term.sigma}")
    return (kind, float(term.weight), _body_id(model, term.body, term.name), 0, -1,
            float(term.sigma), 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class TrackLinearVelocity:
    """weight * exp(-((c_vx - v_x)^2 + (c_vy - v_y)^2) / sigma): how closely the body's planar
    velocity in its own frame (m/s) follows the commanded (vx, vy), legged_gym's tracking
    reward (sigma in (m/s)^2)."""

    name: str
    body: str
    sigma: float = 0.25
    weight: float = 1.0

    def compile(self, model, index):
        return _tracking(self, _R_TRACK_LIN_VEL, model)


@dataclasses.dataclass(frozen=True)
class TrackYawRate:
    """weight * exp(-(c_yaw - w_z)^2 / sigma): the body's yaw rate (rad/s, own frame) against
    the commanded one (sigma in (rad/s)^2)."""

    name: str
    body: str
    sigma: float = 0.25
    weight: float = 0.5

    def compile(self, model, index):
        return _tracking(self, _R_TRACK_YAW_RATE, model)


@dataclasses.dataclass(frozen=True)
class VelocityTrackingError:
    """weight * how far the body's velocity (own frame) is from the commanded one, m/s:
    ||(c_vx, c_vy) - (v_x, v_y)||, or |c_vx - v_x| with forward_only. A metric (TaskFamily.
    metrics) more than a reward."""

    name: str
    body: str
    forward_only: bool = False
    weight: float = 1.0

    def compile(self, model, index):
        return (_R_TRACK_LIN_VEL_ERROR, float(self.weight), _body_id(model, self.body, self.name),
                0, -1, 1.0, 0.0, 0.0, int(bool(self.forward_only)), -1)


_VELOCITY_COMPONENTS = ("wx", "wy", "wz", "vx", "vy", "vz")


@dataclasses.dataclass(frozen=True)
class BodyVelocityCost:
    """weight * the sum of squares of the named components of a body's velocity in its own
    frame: 'wx', 'wy', 'wz' (rad/s), 'vx', 'vy', 'vz' (m/s); ('vz',) penalises bouncing,
    ('wx', 'wy') rolling and pitching."""

    name: str
    body: str
    components: Tuple[str, ...]
    weight: float = -1.0

    def compile(self, model, index):
        bad = [c for c in self.components if c not in _VELOCITY_COMPONENTS]
        if bad or not self.components or isinstance(self.components, str):
            raise ValueError(f"{self.name}: components should be a non-empty tuple of "
                             f"{_VELOCITY_COMPONENTS}, got {self.components!r}")
        mask = sum(1 << _VELOCITY_COMPONENTS.index(c) for c in set(self.components))
        return (_R_BODY_VEL_SQUARED, float(self.weight), _body_id(model, self.body, self.name),
                0, -1, 1.0, 0.0, 0.0, mask, -1)


@dataclasses.dataclass(frozen=True)
class TorqueCost:
    """weight * sum(tau^2) over the motors, tau the torque they applied at the last physics
    step (Nm; the servos' clipped PD torque, or the model's actuator forces)."""

    name: str
    weight: float = -1e-4

    def compile(self, model, index):
        return (_R_TORQUE_COST, float(self.weight), 0, 0, -1, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class JointAccelerationCost:
    """weight * sum over dofs start.. of ((qvel - qvel at the step's start) / step duration)^2,
    (rad/s^2)^2: jerky joints (start 6 skips a floating base)."""

    name: str
    start: int = 0
    weight: float = -2.5e-7

    def compile(self, model, index):
        if not 0 <= self.start <= model.nv:
            raise ValueError(f"{self.name}: start {self.start} is not in [0, {model.nv}]")
        return (_R_JOINT_ACC_COST, float(self.weight), 0, self.start, -1, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class JointLimitCost:
    """weight * sum over the model's limited hinge and slide joints of how far each is
    outside its soft range, the middle `soft` fraction of its range (rad or m; legged_gym's
    dof_pos_limits with soft_dof_pos_limit 0.9): joints kept off their stops."""

    name: str
    soft: float = 0.9
    weight: float = -10.0

    def compile(self, model, index):
        soft = finite(self.soft, f"{self.name} soft")
        if not 0 < soft <= 1:
            raise ValueError(f"{self.name}: soft should be in (0, 1], got {soft}")
        return (_R_JOINT_LIMIT_COST, float(self.weight), 0, 0, -1, soft, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class ActionRateCost:
    """weight * sum((a - previous a)^2): actions that jump from step to step."""

    name: str
    weight: float = -0.01

    def compile(self, model, index):
        return (_R_ACTION_RATE, float(self.weight), 0, 0, -1, 1.0, 0.0, 0.0, 0, -1)


@dataclasses.dataclass(frozen=True)
class BodyContactCost:
    """weight * the number of the bodies touching something (net contact force above
    threshold newtons): a base or thighs that hit the ground."""

    name: str
    bodies: Tuple[str, ...]
    threshold: float = 1.0
    weight: float = -1.0

    def compile(self, model, index):
        if not finite(self.threshold, f"{self.name} threshold") >= 0:
            raise ValueError(f"{self.name}: threshold should be >= 0 N, got {self.threshold}")
        return (_R_BODY_CONTACTS, float(self.weight), 0, 0, -1, 1.0, float(self.threshold),
                0.0, 0, -1, _body_ids(model, self.bodies, self.name))


@dataclasses.dataclass(frozen=True)
class FeetAirTime:
    """weight * the sum, over the feet that land at this step, of (seconds they were in the
    air - target): rewards steps longer than target, legged_gym's air-time term. A foot is
    down when its net contact force exceeds threshold newtons, and lands when down now or at
    the previous step after time in the air. 0 while the commanded planar speed is at most
    min_command (m/s): standing still is not stepping. At most one per family."""

    name: str
    feet: Tuple[str, ...]
    target: float = 0.5
    min_command: float = 0.1
    threshold: float = 1.0
    weight: float = 1.0

    def compile(self, model, index):
        for field in ("target", "min_command", "threshold"):
            if not finite(getattr(self, field), f"{self.name} {field}") >= 0:
                raise ValueError(f"{self.name}: {field} should be >= 0, got "
                                 f"{getattr(self, field)}")
        return (_R_FEET_AIR_TIME, float(self.weight), 0, 0, -1, float(self.min_command),
                float(self.threshold), float(self.target), 0, -1,
                _body_ids(model, self.feet, self.name))


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


@dataclasses.dataclass(frozen=True)
class BodyContact:
    """The episode ends when any of the bodies touches something (net contact force above
    threshold newtons): a legged robot's base on the ground."""

    bodies: Tuple[str, ...]
    threshold: float = 1.0

    def compile(self, model, index):
        if not finite(self.threshold, "BodyContact threshold") >= 0:
            raise ValueError(f"BodyContact: threshold should be >= 0 N, got {self.threshold}")
        return (_T_BODY_CONTACT, 0, float(self.threshold), 0.0, -1,
                _body_ids(model, self.bodies, "BodyContact"))


@dataclasses.dataclass(frozen=True)
class Tilt:
    """The episode ends when a body's z axis tilts more than max_degrees from the vertical
    (a fall onto the side)."""

    body: str
    max_degrees: float

    def compile(self, model, index):
        angle = finite(self.max_degrees, "Tilt max_degrees")
        if not 0 < angle <= 180:
            raise ValueError(f"Tilt: max_degrees should be in (0, 180], got {angle}")
        return (_T_TILT, _body_id(model, self.body, "Tilt"), math.cos(math.radians(angle)),
                0.0, -1)


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
        return (bodies_padded(self.distance.compile(model, index), 11), float(self.threshold))


# ------------------------------------------------------------------------- model fields per task

# the values a written field can take: a body's mass > 0, a friction coefficient >= 0
_WRITE_LOWER_BOUND = {"body_mass": (0.0, False), "geom_friction": (0.0, True)}

_WRITABLE = {"body_pos": mujoco.mjtObj.mjOBJ_BODY, "body_mass": mujoco.mjtObj.mjOBJ_BODY,
             "body_ipos": mujoco.mjtObj.mjOBJ_BODY,
             "geom_pos": mujoco.mjtObj.mjOBJ_GEOM, "geom_friction": mujoco.mjtObj.mjOBJ_GEOM,
             "site_pos": mujoco.mjtObj.mjOBJ_SITE, "qpos0": mujoco.mjtObj.mjOBJ_JOINT}


@dataclasses.dataclass(frozen=True)
class WriteField:
    """Writes a task parameter into one element of the task's model: field[element][index] =
    value (with add=True: the model's own value + value), element named in the model (a body,
    geom, site, or for qpos0 a joint, index then counting from the joint's first qpos).
    Places goal markers and objects, sets an object's mass or friction, adds a payload to a
    robot's base or shifts its centre of mass (body_ipos): per-task model variants of
    identical sizes, run in one batch.

    >>> WriteField("object_mass", "body_mass", "object")
    >>> WriteField("payload", "body_mass", "base", add=True)
    """

    param: str
    field: str
    element: str
    index: int = 0
    add: bool = False

    def validate(self, parameter_names: Sequence[str]) -> None:
        if self.field not in _WRITABLE:
            raise ValueError(f"WriteField: field should be one of {sorted(_WRITABLE)}, got "
                             f"{self.field!r}")
        if self.param not in parameter_names:
            raise ValueError(f"WriteField: the family has no task parameter {self.param!r}; it "
                             f"has {list(parameter_names)}")

    def check_value(self, value: float) -> None:
        """Raises ValueError if value cannot go into the field (a mass <= 0, a friction < 0;
        an added value is checked with the model's own when written)."""
        if self.field not in _WRITE_LOWER_BOUND or self.add:
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
            model.qpos0[start + self.index] = (model.qpos0[start + self.index] * self.add
                                                + values[self.param])
            return
        arr = getattr(model, self.field)
        width = 1 if arr.ndim == 1 else arr.shape[1]
        if not 0 <= self.index < width:
            raise ValueError(f"WriteField {self.param}: {self.field} has {width} entries "
                             f"per element, index {self.index} is outside")
        at = (element,) if arr.ndim == 1 else (element, self.index)
        value = float(arr[at]) + values[self.param] if self.add else values[self.param]
        if self.add and self.field in _WRITE_LOWER_BOUND:
            bound, inclusive = _WRITE_LOWER_BOUND[self.field]
            if not (value >= bound if inclusive else value > bound):
                raise ValueError(f"{self.param}={values[self.param]:g} added to {self.field} "
                                 f"of {self.element!r} gives {value:g}, which should be "
                                 f"{'>=' if inclusive else '>'} {bound:g}")
        arr[at] = value
