"""A task family as data, and the task it draws: a model, the distributions of task parameters,
and the observation, reward and termination terms the C++ core evaluates.

    family = TaskFamily(name="MyCheetah", model_file="half_cheetah.xml", ...)
    task = family.task(goal_velocity=1.0)          # frozen, printable, JSON round-trippable
    family.sample_tasks(40, seed=1)                # [Task(...), ...]

The built-in families and the registry that make_family reads are metarobot.families.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import mujoco
import numpy as np

from . import actuators as A
from . import parameters as P
from . import terms as T
from .terrain import Terrain

_HERE = Path(__file__).resolve().parent


def envs_dir() -> Path:
    """Folder of the packaged MJCF models (installed beside the package, or the source tree's)."""
    for candidate in (_HERE / "envs", _HERE.parent / "envs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("metarobot's envs/ folder of MJCF models is missing")


def actions_to_controls(actions: np.ndarray, ctrlrange: np.ndarray) -> np.ndarray:
    """Policy actions in [-1, 1] (..., nu) -> controls on the actuators' ranges ctrlrange
    (nu, 2): centre + a * half-range, clipped to the range (the C++ core's mapping, to the
    bit). Exact (controls == actions) where the range is [-1, 1]."""
    lo, hi = ctrlrange[:, 0], ctrlrange[:, 1]
    return np.clip(0.5 * (lo + hi) + np.asarray(actions, np.float64) * (0.5 * (hi - lo)), lo, hi)


class OutOfDistributionWarning(UserWarning):
    """A task's parameter lies outside the family's training distribution."""


_WARNED_OUTSIDE: set = set()  # (family, description) pairs already warned about


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a family: its name and the values of the family's task parameters.

    >>> Task("HalfCheetahVel", (("goal_velocity", 1.5),))
    Task(HalfCheetahVel, goal_velocity=1.5)
    """

    family: str
    params: Tuple[Tuple[str, float], ...]

    def __getitem__(self, name: str) -> float:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"task of {self.family} has no parameter {name!r}; it has "
                       f"{[k for k, _ in self.params]}")

    def as_dict(self) -> Dict[str, float]:
        return dict(self.params)

    def to_json(self) -> str:
        return json.dumps({"family": self.family, "params": self.as_dict()})

    @classmethod
    def from_json(cls, text: str) -> "Task":
        try:
            data = json.loads(text)
            family, params = data["family"], data["params"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a task in JSON ({exc}): {text[:200]!r}") from None
        if not isinstance(family, str) or not isinstance(params, dict):
            raise ValueError(f"not a task in JSON: {text[:200]!r}")
        return cls(family, tuple((str(k), float(v)) for k, v in params.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.6g}" for k, v in self.params)
        return f"Task({self.family}{', ' if inner else ''}{inner})"


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """A family of tasks on one robot.

    Fields that make_family(name, **overrides) accepts by name (family.overrides() lists
    them with their current values): horizon, frame_skip, model_file, reset_qpos_noise,
    reset_qvel_noise, reset_noise, init_keyframe (None: the model's qpos0; a model of your
    own, such as Gymnasium's ant.xml, may have no keyframe 'init'), normalize_actions; each
    task parameter by its name (a (low, high) pair for a uniform one, a sequence of values for
    a choice, the radius for a disc as '<prefix>radius', e.g. AntGoal's goal_radius, terrain
    kinds or {'kinds': ..., 'difficulty': (low, high)} for a terrain); each
    reward term's weight as '<term>_weight'; dynamics, a dict of model fields to vary per task
    (body_mass, body_inertia, geom_friction, dof_damping, actuator_gear) with their ranges of
    scale factors (see parameters.DynamicsScale); and observe_task (True shows the task parameters
    that the observation otherwise holds as zeros, e.g. the arm families' goal).
    """

    name: str
    model_file: str            # MJCF path; relative paths are under metarobot's envs/ folder
    frame_skip: int            # mj_step calls per env step
    horizon: int               # env steps per episode (then truncated)
    observation: Tuple[Any, ...]
    reward: Tuple[Any, ...]
    termination: Tuple[Any, ...]
    parameters: Tuple[P.TaskParameter, ...]   # distributions of the task parameters
    reset_qpos_noise: float = 0.0  # std of the Gaussian noise added to qpos at reset (m, rad)
    reset_qvel_noise: float = 0.0  # std of the Gaussian noise added to qvel at reset
    init_keyframe: Optional[str] = None  # keyframe of the initial state; None: qpos0
    reset_noise: str = "normal"  # reset noise N(0, s) ('normal') or U(-s, s) ('uniform')
    # actions in [-1, 1] mapped onto the control ranges (rllab's normalize(), as the MAML
    # paper's runs); control costs then see the applied controls
    normalize_actions: bool = False
    # task parameters written into each task's model (goal markers, object placement, mass)
    writes: Tuple[T.WriteField, ...] = ()
    success: Optional[T.Success] = None  # per-step success condition (info['success'])
    description: str = ""
    # how actions reach the joints (PD servos, command delay); None: the model's actuators
    # take the action at once
    actuators: Optional[A.Actuators] = None
    # commands given to the robot (velocity commands), observed by Command terms
    commands: Optional[T.Commands] = None
    # quantities measured at every step beside the reward, reported by evaluate (reward
    # terms whose weight is ignored, e.g. a velocity tracking error in m/s)
    metrics: Tuple[Any, ...] = ()
    # the robot's motors in its own order (its SDK's indices), by the model's actuator names;
    # the policy's actions are in the model's actuator order, and the deployment config maps
    # one onto the other. None: the robot's order is the model's
    motor_order: Optional[Tuple[str, ...]] = None
    # a step's reward is max(sum of the reward terms, reward_floor); None: no floor. 0 is
    # legged_gym's only_positive_rewards: while a clumsy policy's penalties outweigh its
    # rewards, ending the episode early (falling) would otherwise pay
    reward_floor: Optional[float] = None

    def __post_init__(self):
        for field in ("frame_skip", "horizon"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self.name}: {field} should be an integer >= 1, got {value!r}")
        for field in ("reset_qpos_noise", "reset_qvel_noise"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.name}: {field} should be a finite number >= 0, got "
                                 f"{value!r}")
        if self.init_keyframe is not None and not isinstance(self.init_keyframe, str):
            raise ValueError(f"{self.name}: init_keyframe should be a keyframe name or None, "
                             f"got {self.init_keyframe!r}")
        if not isinstance(self.normalize_actions, bool):
            raise ValueError(f"{self.name}: normalize_actions should be True or False, got "
                             f"{self.normalize_actions!r}")
        if self.reward_floor is not None and (
                isinstance(self.reward_floor, bool)
                or not isinstance(self.reward_floor, (int, float))
                or not math.isfinite(self.reward_floor)):
            raise ValueError(f"{self.name}: reward_floor should be a finite number or None, "
                             f"got {self.reward_floor!r}")
        if self.reset_noise not in ("normal", "uniform"):
            raise ValueError(f"{self.name}: reset_noise should be 'normal' or 'uniform', got "
                             f"{self.reset_noise!r}")
        for dist in self.parameters:
            dist.validate()
        self._check_actuators()
        names = self.parameter_names
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: task parameter names repeat: {names}")
        by_name = {n: dist for dist in self.parameters for n in dist.names}
        for write in self.writes:
            write.validate(names)
            # every value the distribution can draw must fit the field
            for value in by_name[write.param].extremes():
                write.check_value(value)
        if not self.model_path.is_file():
            raise ValueError(f"{self.name}: model_file {str(self.model_path)!r} does not exist")

    def _check_actuators(self) -> None:
        act = self.actuators
        if act is not None and not isinstance(act, A.Actuators):
            raise ValueError(f"{self.name}: actuators should be a metarobot.actuators.Actuators or "
                             f"None, got {type(act).__name__}")
        if act is not None and act.kind == "servo" and self.normalize_actions:
            raise ValueError(f"{self.name}: servo actions are joint targets, they cannot also be "
                             f"normalized onto control ranges; set normalize_actions=False")
        for dist in self.parameters:
            if not isinstance(dist, P.ActuatorRange) or dist.quantity == "noise_scale":
                continue
            if act is None or (dist.quantity in P.PER_MOTOR and act.kind != "servo"):
                need = "actuators" if dist.quantity == "command_delay_ms" else "servo actuators"
                raise ValueError(f"{self.name}: the task parameter {dist.quantity} needs "
                                 f"{need} (actuators=...), the family has "
                                 f"{'none' if act is None else act.kind + ' actuators'}")
        for term in self.observation:
            T.sensor(term)

    @property
    def model_path(self) -> Path:
        path = Path(os.path.expanduser(self.model_file))
        return path if path.is_absolute() else envs_dir() / path

    @property
    def parameter_names(self) -> Tuple[str, ...]:
        return tuple(n for dist in self.parameters for n in dist.names)

    def load_model(self) -> mujoco.MjModel:
        """The family's compiled model (a new MjModel each call)."""
        try:
            return mujoco.MjModel.from_xml_path(str(self.model_path))
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot load model {str(self.model_path)!r}: {exc}") \
                from None

    def model_digest(self, model: Optional[mujoco.MjModel] = None) -> str:
        """A digest (16 hex digits) of the compiled model in MuJoCo's binary form (default
        load_model()'s): it changes with the model file, anything it includes, or MuJoCo's
        version; what a run records to tell whether its model changed under it."""
        model = self.load_model() if model is None else model
        buffer = np.empty(mujoco.mj_sizeModel(model), np.uint8)
        mujoco.mj_saveModel(model, None, buffer)
        return hashlib.sha256(buffer.tobytes()).hexdigest()[:16]

    @property
    def dynamics(self) -> Tuple[P.DynamicsScale, ...]:
        return tuple(d for d in self.parameters if isinstance(d, P.DynamicsScale))

    @property
    def changes_model(self) -> bool:
        """Whether tasks run their own model variants (dynamics, terrain, written fields)."""
        return bool(self.writes) or any(d.changes_model for d in self.parameters)

    def task_model(self, base: mujoco.MjModel, task: Task) -> mujoco.MjModel:
        """The model a task runs: base itself when the family's tasks do not change the
        model, else a copy with the task's dynamics scales, terrain and written fields applied
        and mj_setConst run on it (derived constants such as subtree masses follow)."""
        if not self.changes_model:
            return base
        model = copy.copy(base)
        values = task.as_dict()
        try:
            for dist in self.parameters:
                dist.apply(model, values)
            for write in self.writes:
                write.apply(model, values)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        mujoco.mj_setConst(model, mujoco.MjData(model))
        return model

    def with_dynamics(self, **ranges: Any) -> "TaskFamily":
        """A copy that also varies model fields per task, e.g. body_mass=(0.5, 2.0) or
        geom_friction={"log_base": 1.5, "low": -3, "high": 3}; see parameters.DynamicsScale."""
        model = self.load_model()
        params = [d for d in self.parameters
                  if not (isinstance(d, P.DynamicsScale) and d.field in ranges)]
        for field, value in ranges.items():
            if field not in P.DYNAMICS_FIELDS:
                raise ValueError(f"{self.name}: dynamics field should be one of "
                                 f"{P.DYNAMICS_FIELDS}, got {field!r}")
            params.append(P.dynamics_scale(field, value, getattr(model, field).size))
        return dataclasses.replace(self, parameters=tuple(params))

    def task(self, **params: Any) -> Task:
        """A task with the given parameter values, e.g. family.task(goal_velocity=1.0). A
        parameter drawn per element (strength per motor: strength[0], strength[1], ...) also
        takes one number for every element or a list of one per element, by its name."""
        for dist in self.parameters:
            group = getattr(dist, "name", None)
            if len(dist.names) > 1 and group in params and group not in dist.names:
                value = params.pop(group)
                values = list(value) if isinstance(value, (list, tuple)) else \
                    [value] * len(dist.names)
                if len(values) != len(dist.names):
                    raise ValueError(f"{self.name}: {group} takes one number or "
                                     f"{len(dist.names)} (one per element), got {len(values)}")
                params.update(zip(dist.names, values))
        names = self.parameter_names
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in names]
        if missing or extra:
            raise ValueError(f"{self.name} tasks take parameters {list(names)}; missing "
                             f"{missing}, unknown {extra}")
        values = []
        for n in names:
            values.append((n, P.finite(params[n], f"{self.name} task parameter {n}")))
        return Task(self.name, tuple(values))

    def sample_tasks(self, n: int, seed: int) -> List[Task]:
        """n tasks drawn from the family's distributions with numpy's Generator(seed)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n should be an integer >= 0, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed should be an integer >= 0, got {seed!r}")
        rng = np.random.default_rng(int(seed))
        columns = [dist.sample(rng, int(n)) for dist in self.parameters]
        values = np.concatenate(columns, axis=1) if columns else np.zeros((int(n), 0))
        names = self.parameter_names
        return [Task(self.name, tuple((k, float(v)) for k, v in zip(names, row)))
                for row in values]

    def check_task(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise ValueError(f"tasks should be metarobot.Task, got {type(task).__name__}")
        if task.family != self.name:
            raise ValueError(f"task {task!r} belongs to family {task.family!r}, expected "
                             f"{self.name!r}")
        if tuple(k for k, _ in task.params) != self.parameter_names:
            raise ValueError(f"task {task!r} has parameters {[k for k, _ in task.params]}, "
                             f"{self.name} expects {list(self.parameter_names)}")
        for k, v in task.params:
            P.finite(v, f"task parameter {k}")
        values = task.as_dict()
        for dist in self.parameters:
            dist.check_values(values)
        for write in self.writes:
            write.check_value(values[write.param])
        for dist in self.parameters:
            why = dist.outside(values)
            key = (self.name, why)
            if why is not None and key not in _WARNED_OUTSIDE:
                # out-of-distribution tasks are a fair test of adaptation: allowed, said once
                _WARNED_OUTSIDE.add(key)
                warnings.warn(f"{self.name}: task {task!r}: {why}; the policy was not trained "
                              f"on such tasks", OutOfDistributionWarning, stacklevel=2)

    def compile(self, model: mujoco.MjModel) -> Dict[str, Any]:
        """The family's terms as the C++ core's tuples, resolved against model."""
        index = {n: i for i, n in enumerate(self.parameter_names)}
        init_key = -1
        if self.init_keyframe is not None:
            init_key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, self.init_keyframe)
            if init_key < 0:
                raise ValueError(f"{self.name}: the model {self.model_file!r} has no keyframe "
                                 f"{self.init_keyframe!r}; override init_keyframe=None to "
                                 f"start from the model's qpos0, or name one of its keyframes")
        for dist in self.parameters:
            if isinstance(dist, P.ActuatorRange) and dist.motors not in (None, model.nu):
                raise ValueError(f"{self.name}: {dist.quantity} is drawn for {dist.motors} "
                                 f"motors, the model has {model.nu} actuators")
        return dict(
            obs_terms=[t.compile(model, index) + T.sensor(t) for t in self.observation],
            reward_terms=[T.bodies_padded(t.compile(model, index), 11) for t in self.reward],
            termination_terms=[T.bodies_padded(t.compile(model, index), 6)
                               for t in self.termination],
            commands=None if self.commands is None else self.commands.compile(),
            metric_terms=[T.bodies_padded(t.compile(model, index), 11) for t in self.metrics],
            frame_skip=int(self.frame_skip),
            horizon=int(self.horizon),
            qpos_noise=float(self.reset_qpos_noise),
            qvel_noise=float(self.reset_qvel_noise),
            uniform_noise=self.reset_noise == "uniform",
            normalized_actions=bool(self.normalize_actions),
            reward_floor=-math.inf if self.reward_floor is None else float(self.reward_floor),
            init_key=init_key,
            nparam=len(index),
            success=None if self.success is None else self.success.compile(model, index),
        )

    def actuator_settings(self, model: mujoco.MjModel, tasks: List[Task]) -> Dict[str, Any]:
        """The actuator model of one simulation per task for the C++ core (terms.Actuators,
        with the tasks' ActuatorRange draws)."""
        return A.actuator_settings(self.actuators, model, [t.as_dict() for t in tasks])

    @property
    def terrain(self) -> Optional[Any]:
        """The family's terrain distribution (metarobot.terrain.Terrain), or None."""
        hits = [d for d in self.parameters if isinstance(d, Terrain)]
        return hits[0] if hits else None

    def observation_dim(self, model: Optional[mujoco.MjModel] = None) -> int:
        model = model or self.load_model()
        return sum(t.compile(model, {n: i for i, n in enumerate(self.parameter_names)})[3]
                   for t in self.observation)

    def with_overrides(self, **overrides: Any) -> "TaskFamily":
        """A copy with the documented fields changed; an unknown field raises ValueError."""
        top = set(_TOP_OVERRIDES)
        if "observe_task" in overrides:
            shown = overrides.pop("observe_task")
            if not isinstance(shown, bool):
                raise ValueError(f"observe_task should be True or False, got {shown!r}")
            if not any(isinstance(t, T.TaskParameters) for t in self.observation):
                raise ValueError(f"{self.name} has no task parameters in its observation; "
                                 f"observe_task does not apply")
            obs = tuple(dataclasses.replace(t, hidden=not shown)
                        if isinstance(t, T.TaskParameters) else t for t in self.observation)
            return dataclasses.replace(self, observation=obs).with_overrides(**overrides)
        if "dynamics" in overrides:
            ranges = overrides.pop("dynamics")
            if not isinstance(ranges, dict):
                raise ValueError(f"dynamics should be a dict of field -> range, got {ranges!r}")
            return self.with_overrides(**overrides).with_dynamics(**ranges)
        changes: Dict[str, Any] = {}
        params = list(self.parameters)
        reward = list(self.reward)
        for key, value in overrides.items():
            if key == "actuators":
                changes[key] = _actuators(self.name, value)
                continue
            if key in top:
                changes[key] = value
                continue
            hit = [i for i, d in enumerate(params) if d.name == key]
            if hit:
                params[hit[0]] = params[hit[0]].with_range(value)
                continue
            hit = [i for i, r in enumerate(reward) if f"{r.name}_weight" == key]
            if hit:
                term = reward[hit[0]]
                value = P.finite(value, key)
                field = "value" if isinstance(term, T.Constant) else "weight"
                reward[hit[0]] = dataclasses.replace(term, **{field: value})
                continue
            raise ValueError(f"{self.name} has no field {key!r}; it takes "
                             f"{sorted(self.override_names())}")
        return dataclasses.replace(self, parameters=tuple(params), reward=tuple(reward), **changes)

    def override_names(self) -> List[str]:
        """Every field make_family(self.name, **overrides) accepts."""
        return list(self.overrides())

    def overrides(self) -> Dict[str, Tuple[str, Any]]:
        """Every override this family accepts -> (what it sets, its current value)."""
        out: Dict[str, Tuple[str, Any]] = {
            name: (doc, getattr(self, name)) for name, doc in _TOP_OVERRIDES.items()}
        out["actuators"] = (out["actuators"][0],
                            None if self.actuators is None else self.actuators.as_dict())
        out["dynamics"] = ("model fields varied per task: {field: (low, high)} or {field: "
                           "{'log_base': b, 'low': l, 'high': h}}, fields "
                           + ", ".join(P.DYNAMICS_FIELDS),
                           {d.field: (d.low, d.high) for d in self.dynamics} or None)
        if any(isinstance(t, T.TaskParameters) for t in self.observation):
            shown = [not t.hidden for t in self.observation if isinstance(t, T.TaskParameters)]
            out["observe_task"] = ("True shows the task parameters the observation otherwise "
                                   "holds as zeros", all(shown))
        for d in self.parameters:
            if not isinstance(d, P.DynamicsScale):  # those are under dynamics
                out[d.name] = d.override()
        for r in self.reward:
            value = r.value if isinstance(r, T.Constant) else r.weight
            out[f"{r.name}_weight"] = (f"weight of the reward term {r.name}", value)
        return out


# Overrides of TaskFamily's own fields -> what they set.
_TOP_OVERRIDES = {
    "horizon": "env steps per episode",
    "frame_skip": "mj_step calls per env step",
    "model_file": "MJCF path (relative: under metarobot's envs/ folder)",
    "reset_qpos_noise": "std (normal) or half-width (uniform) of the qpos noise at reset",
    "reset_qvel_noise": "std (normal) or half-width (uniform) of the qvel noise at reset",
    "reset_noise": "'normal' or 'uniform' reset noise",
    "init_keyframe": "the model keyframe episodes start from; None: the model's qpos0",
    "normalize_actions": "True maps actions in [-1, 1] onto the actuators' control ranges",
    "reward_floor": "a step's reward is max(sum of the reward terms, this); None: no floor",
    "actuators": "how actions reach the joints: None (the model's actuators, at once) or "
                 "{'kind': 'torque' or 'servo', 'delay_ms', 'kp', 'kd', 'action_scale', ...} "
                 "(metarobot.actuators.Actuators)",
}


def _actuators(family: str, value: Any) -> Optional[A.Actuators]:
    """An actuators override (None, an Actuators, or a dict of its fields) as Actuators."""
    if value is None or isinstance(value, A.Actuators):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{family}: actuators should be None or a dict of "
                         f"metarobot.actuators.Actuators fields, got {value!r}")
    known = [f.name for f in dataclasses.fields(A.Actuators)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{family}: actuators take {known}; unknown {unknown}")
    return A.Actuators(**value)


# ----------------------------------------------------------------------------------- the families
