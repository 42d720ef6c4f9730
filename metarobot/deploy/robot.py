"""What the runner needs of a robot, and a gymnasium.Env as one.

A robot has a spec (observation and action sizes and names, control period), starts an
episode (reset), gives its latest observation with the time it was taken (and reward and done
where the robot side computes them, for instance from motion capture), takes controls, and
stops into a safe state. UdpRobot (metarobot.deploy.protocol) speaks the wire protocol of
docs/hil.md to a robot process; GymRobot drives a gymnasium.Env (labs often wrap their
hardware that way) in the same process.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..families import TaskFamily
from . import policy
from .deployment import Sensors


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """obs_dim and act_dim (sizes of observations and controls), control_period (s),
    optional names of their entries and the task family the robot runs (for the agreement
    check against a policy: "" or () when the robot does not say), and command_timeout (s):
    how long the robot keeps obeying its last controls without a new command before it goes
    to its safe state on its own (inf for a robot in the runner's own process); reality_gap:
    what a simulated robot says of its gap to training (None for others)."""

    obs_dim: int
    act_dim: int
    control_period: float
    observation_names: Tuple[str, ...] = ()
    action_names: Tuple[str, ...] = ()
    family: str = ""
    command_timeout: float = math.inf
    # a simulated robot's gap to training in the family's names (sim_robot.describe_gap)
    reality_gap: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        for name in ("obs_dim", "act_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} should be an integer >= 1, got {value!r}")
        if not (isinstance(self.control_period, (int, float)) and 0 < self.control_period < 10):
            raise ValueError(f"control_period should be in (0, 10) seconds, got "
                             f"{self.control_period!r}")
        if not (isinstance(self.command_timeout, (int, float))
                and self.command_timeout >= self.control_period):
            raise ValueError(f"command_timeout should be at least the control period "
                             f"({self.control_period:g} s), got {self.command_timeout!r}")
        for name, size in (("observation_names", self.obs_dim),
                           ("action_names", self.act_dim)):
            names = getattr(self, name)
            if names and (len(names) != size or not all(isinstance(n, str) for n in names)):
                raise ValueError(f"{name} should be {size} strings (or none), got "
                                 f"{len(names)}")


@dataclasses.dataclass(frozen=True)
class Reading:
    """One observation of the robot.

    obs: (obs_dim,) float32. step: the robot's step count in the episode (0: after reset).
    stamp: when the robot took it, seconds on the robot's monotonic clock. received: when the
    runner got it, on the runner's monotonic clock. reward: of the step that led here, NaN
    when the robot does not compute one; ret: the robot's own return of the episode up to
    here (every step's reward, also of observations that never reached the runner), NaN when
    none. done / terminated: the episode ended here (terminated: in a terminal state, no
    bootstrap). safe: the robot is in its safe state and no longer obeys controls.
    sensors: the robot's own raw readings where it gives them (a Unitree LowState's motors and
    IMU); None: the logs read them back from the observation
    (deployment.sensors_from_observation)."""

    obs: np.ndarray
    step: int
    stamp: float
    received: float
    reward: float = float("nan")
    done: bool = False
    terminated: bool = False
    ret: float = float("nan")
    safe: bool = False
    sensors: Optional[Sensors] = None


class Robot(Protocol):
    """A robot the runner drives: every method and attribute the runner uses.

    rejected: packets (or readings) the robot's side refused, by reason -> count;
    robot_errors: the messages the robot sent back about what it refused (newest last).
    Optional: commanded_targets() -> the joint targets (n,) rad in motor order that the last
    send() put on the motors after the robot's own safety clamp, or None; the logs record
    those where a robot has it (else default_pose + action_scale * controls)."""

    rejected: Dict[str, int]
    robot_errors: List[str]

    def spec(self) -> RobotSpec:
        """Sizes, names, family, control period and command timeout."""

    def reset(self, timeout: float) -> Reading:
        """Starts an episode; the first observation (blocks up to timeout seconds; raises
        TimeoutError when none comes)."""

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        """The newest observation of the episode not read before, waiting up to timeout
        seconds for one; None if none came."""

    def send(self, step: int, controls: np.ndarray) -> None:
        """Controls (act_dim,) answering the observation of step."""

    def stop(self, timeout: float = 1.0) -> bool:
        """Into the safe state (no torque, or the robot's own), now; whether the robot
        acknowledged it within timeout seconds. Safe to call twice."""

    def close(self) -> None:
        """Releases the link (sockets, the env); the robot is not driven any more."""


class GymRobot:
    """A gymnasium.Env as the robot: reset() and step() in the runner's process. step() runs
    when the controls are sent, so read() then has the next observation at once; the env's
    reward and terminated / truncated flags travel with it. The env's action is the controls
    as the runner sends them (export's map), so give an env whose actions are the actuators'
    controls. One of metarobot's own envs (gymnasium.make("metarobot/...")) says what it is:
    its family, names and control period fill what is not given."""

    def __init__(self, env: Any, control_period: Optional[float] = None,
                 observation_names: Sequence[str] = (), action_names: Sequence[str] = (),
                 family: str = ""):
        obs_space, act_space = env.observation_space, env.action_space
        if obs_space.shape is None or len(obs_space.shape) != 1 or act_space.shape is None \
                or len(act_space.shape) != 1:
            raise ValueError(f"GymRobot needs flat Box observation and action spaces, got "
                             f"{obs_space} and {act_space}")
        period = control_period
        inner = getattr(env, "unwrapped", env)
        own = getattr(inner, "family", None)
        if isinstance(own, TaskFamily):  # one of metarobot's envs: the interface it has
            model = own.load_model()
            period = policy.control_period(own, model) if period is None else period
            observation_names = observation_names or policy.observation_names(own, model)
            action_names = action_names or policy.action_names(model)
            family = family or own.name
        if period is None:
            dt = getattr(inner, "dt", None)
            if dt is None:
                raise ValueError("the env has no dt attribute: give control_period")
            period = float(dt)
        self.env = env
        self._spec = RobotSpec(int(obs_space.shape[0]), int(act_space.shape[0]), float(period),
                               tuple(observation_names), tuple(action_names), family)
        self.rejected: Dict[str, int] = {}
        self.robot_errors: List[str] = []
        self._return = 0.0
        self._pending: Optional[Reading] = None
        self._step = 0
        self._episode_seed: Optional[int] = None

    def spec(self) -> RobotSpec:
        return self._spec

    def reset(self, timeout: float = 1.0) -> Reading:
        obs, _ = self.env.reset(seed=self._episode_seed)
        self._step, self._return = 0, 0.0
        now = time.monotonic()
        self._pending = None
        return Reading(np.asarray(obs, np.float32), 0, now, now, ret=0.0)

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        reading, self._pending = self._pending, None
        return reading

    def send(self, step: int, controls: np.ndarray) -> None:
        obs, reward, terminated, truncated, _ = self.env.step(np.asarray(controls))
        self._step += 1
        self._return += float(reward)
        now = time.monotonic()
        self._pending = Reading(np.asarray(obs, np.float32), self._step, now, now,
                                float(reward), bool(terminated or truncated), bool(terminated),
                                self._return)

    def stop(self, timeout: float = 1.0) -> bool:
        """The env has no motors of its own to switch off: no more steps is its safe
        state, at once."""
        self._pending = None
        return True

    def close(self) -> None:
        self.env.close()
