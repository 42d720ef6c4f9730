"""The family's reward of a robot's steps, from what is measured on it: the core's own reward
terms (BatchSim.evaluate) read the robot's state as they read a simulated one's, so that
adaptation on the robot optimises the reward training and evaluation optimise.

    reward = MeasuredReward(family)
    reward.reset(qpos, qvel)                                   # the episode's first state
    r, terminated, metrics = reward.step(qpos, qvel, action, command, torques)

A state is the model's full (qpos (nq,), qvel (nv,)): for a legged robot the base's position
(m, world) and orientation quaternion (w, x, y, z) from the IMU and an odometry source
(motion capture, a state estimator), then the joints from the encoders; the base's linear
velocity (m/s, world) and angular velocity (rad/s, base frame) then the joints' velocities.
Torques are the servo motors' (Nm, the policy's order), a robot's torque estimates.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..batch import BatchSim
from ..families import TaskFamily
from ..task_family import Task


class MeasuredReward:
    """The family's reward of measured steps, in order from reset() (the carry: the last
    action, the feet's air time). task: the task whose model the terms read (masses and
    friction matter only to contact forces); default the family's first task of seed 0, the
    one adaptation on a robot labels its episodes with."""

    def __init__(self, family: TaskFamily, task: Optional[Task] = None):
        task = task if task is not None else family.sample_tasks(1, seed=0)[0]
        # actions as the policy gives them: the family's own (normalised where it normalises)
        self.sim = BatchSim(family, [task], seed=0, num_threads=1, autoreset=False)
        self.family = family
        self.nq, self.nv = self.sim.models[0].nq, self.sim.models[0].nv
        self._before: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def reset(self, qpos: Sequence[float], qvel: Sequence[float]) -> None:
        """A new episode starting at (qpos (nq,), qvel (nv,))."""
        self.sim.reset()
        self._before = self._state(qpos, qvel)

    def _state(self, qpos, qvel) -> Tuple[np.ndarray, np.ndarray]:
        q = np.asarray(qpos, np.float64).reshape(1, -1)
        v = np.asarray(qvel, np.float64).reshape(1, -1)
        if q.shape[1] != self.nq or v.shape[1] != self.nv:
            raise ValueError(f"a {self.family.name} state is qpos ({self.nq},) and qvel "
                             f"({self.nv},), got ({q.shape[1]},) and ({v.shape[1]},)")
        return q, v

    def step(self, qpos: Sequence[float], qvel: Sequence[float], action: Sequence[float],
             command: Optional[Sequence[float]] = None,
             torques: Optional[Sequence[float]] = None
             ) -> Tuple[float, bool, Optional[np.ndarray]]:
        """The step from the last state to (qpos, qvel) under action (act_dim,), the policy's,
        with the command in force (the family's command names and units) and the motors'
        torques (act_dim,) Nm at its end: (reward, terminated, metrics (K,) or None)."""
        if self._before is None:
            raise RuntimeError("call reset() with the episode's first state before step()")
        after = self._state(qpos, qvel)
        reward, terminated, metrics = self.sim.evaluate(
            self._before, after, np.asarray(action, np.float64)[None],
            None if command is None else np.asarray(command, np.float64)[None],
            None if torques is None else np.asarray(torques, np.float64)[None])
        self._before = after
        return float(reward[0]), bool(terminated[0]), (None if metrics is None
                                                       else metrics[0].copy())
