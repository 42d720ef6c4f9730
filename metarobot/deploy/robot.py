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
import time
from typing import Any, Optional, Protocol, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """obs_dim and act_dim (sizes of observations and controls), control_period (s), and
    optional names of their entries."""

    obs_dim: int
    act_dim: int
    control_period: float
    observation_names: Tuple[str, ...] = ()
    action_names: Tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("obs_dim", "act_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} should be an integer >= 1, got {value!r}")
        if not (isinstance(self.control_period, (int, float)) and 0 < self.control_period < 10):
            raise ValueError(f"control_period should be in (0, 10) seconds, got "
                             f"{self.control_period!r}")


@dataclasses.dataclass(frozen=True)
class Reading:
    """One observation of the robot.

    obs: (obs_dim,) float32. step: the step of the episode it follows (0: after reset).
    stamp: when the robot took it, seconds on the robot's monotonic clock. received: when the
    runner got it, on the runner's monotonic clock. reward: of the step that led here, NaN
    when the robot does not compute one. done / terminated: the episode ended here (terminated:
    in a terminal state, no bootstrap)."""

    obs: np.ndarray
    step: int
    stamp: float
    received: float
    reward: float = float("nan")
    done: bool = False
    terminated: bool = False


class Robot(Protocol):
    """A robot the runner drives."""

    def spec(self) -> RobotSpec:
        """Sizes, names and control period."""

    def reset(self, timeout: float) -> Reading:
        """Starts an episode; the first observation (blocks up to timeout seconds)."""

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        """The newest observation not read before, waiting up to timeout seconds for one;
        None if none came."""

    def send(self, step: int, controls: np.ndarray) -> None:
        """Controls (act_dim,) answering the observation of step."""

    def stop(self) -> None:
        """Into the safe state (no torque, or the robot's own), now; safe to call twice."""


class GymRobot:
    """A gymnasium.Env as the robot: reset() and step() in the runner's process. step() runs
    when the controls are sent, so read() then has the next observation at once; the env's
    reward and terminated / truncated flags travel with it. The env's action is the controls
    as the runner sends them (export's map), so give an env whose actions are the actuators'
    controls."""

    def __init__(self, env: Any, control_period: Optional[float] = None,
                 observation_names: Sequence[str] = (), action_names: Sequence[str] = ()):
        obs_space, act_space = env.observation_space, env.action_space
        if obs_space.shape is None or len(obs_space.shape) != 1 or act_space.shape is None \
                or len(act_space.shape) != 1:
            raise ValueError(f"GymRobot needs flat Box observation and action spaces, got "
                             f"{obs_space} and {act_space}")
        period = control_period
        if period is None:
            dt = getattr(getattr(env, "unwrapped", env), "dt", None)
            if dt is None:
                raise ValueError("the env has no dt attribute: give control_period")
            period = float(dt)
        self.env = env
        self._spec = RobotSpec(int(obs_space.shape[0]), int(act_space.shape[0]), float(period),
                               tuple(observation_names), tuple(action_names))
        self._pending: Optional[Reading] = None
        self._step = 0
        self._episode_seed: Optional[int] = None

    def spec(self) -> RobotSpec:
        return self._spec

    def reset(self, timeout: float = 1.0) -> Reading:
        obs, _ = self.env.reset(seed=self._episode_seed)
        self._step = 0
        now = time.monotonic()
        self._pending = None
        return Reading(np.asarray(obs, np.float32), 0, now, now)

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        reading, self._pending = self._pending, None
        return reading

    def send(self, step: int, controls: np.ndarray) -> None:
        obs, reward, terminated, truncated, _ = self.env.step(np.asarray(controls))
        self._step += 1
        now = time.monotonic()
        self._pending = Reading(np.asarray(obs, np.float32), self._step, now, now,
                                float(reward), bool(terminated or truncated), bool(terminated))

    def stop(self) -> None:
        self._pending = None

    def close(self) -> None:
        self.env.close()
