"""Each task family as a gymnasium environment, registered as ``metarobot/<Name>-v0``.

    env = gymnasium.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0})

One simulation of one task (task=: a Task, a dict of parameter values, or None for the family's
first task drawn with seed 0), run by the same C++ core as BatchSim.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import gymnasium as gym
import numpy as np

from .batch import BatchSim
from .families import Task, list_families, make_family


class MetaRobotEnv(gym.Env):
    """A single-task gymnasium view of a task family. Keyword overrides go to make_family."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, family: str, task: Union[Task, Dict[str, float], None] = None,
                 render_mode: Optional[str] = None, **overrides: Any):
        self.family = make_family(family, **overrides)
        if task is None:
            task = self.family.sample_tasks(1, seed=0)[0]
        elif isinstance(task, dict):
            task = self.family.task(**task)
        self.task = task
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode should be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        self._sim = BatchSim(self.family, [task], num_threads=1, autoreset=False)
        self.observation_space = self._sim.observation_space()
        self.action_space = self._sim.action_space()
        self._renderer = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        obs = self._sim.reset(seed=seed)
        return obs[0], {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._sim.step(
            np.asarray(action, dtype=np.float64).reshape(1, -1))
        out_info = {"diverged": bool(info["diverged"][0])}
        if self.family.success is not None:
            out_info["success"] = bool(info["success"][0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), out_info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        import mujoco
        model = self._sim.models[0]
        if self._renderer is None:
            self._renderer = mujoco.Renderer(model, 480, 640)
            self._data = mujoco.MjData(model)
        qpos, qvel = self._sim.get_state()
        self._data.qpos[:], self._data.qvel[:] = qpos[0], qvel[0]
        mujoco.mj_forward(model, self._data)
        from .render import scene_camera
        camera = scene_camera(model, self._data, self.family)
        self._renderer.update_scene(self._data, camera=camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def register_all() -> None:
    """Registers every family as metarobot/<Name>-v0 (once)."""
    for name in list_families():
        env_id = f"metarobot/{name}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="metarobot.gym_envs:MetaRobotEnv",
                         kwargs={"family": name})
