"""Frames from MuJoCo's offscreen renderer (skipped where no OpenGL context can be made)."""

import subprocess
import sys

import numpy as np
import pytest

import metarobot
from metarobot import render

# a failed OpenGL start can abort the process, so probe in a child first
_PROBE = subprocess.run(
    [sys.executable, "-c", "import metarobot, mujoco; m = mujoco.MjModel.from_xml_string("
     "'<mujoco><worldbody><geom size=\".1\"/></worldbody></mujoco>'); "
     "mujoco.Renderer(m, 8, 8).close()"], capture_output=True, text=True, timeout=120)
pytestmark = pytest.mark.skipif(_PROBE.returncode != 0,
                                reason=f"no offscreen OpenGL here: {_PROBE.stderr[-300:]}")


def _frame(*args, **kwargs):
    return render.frame(*args, **kwargs)


@pytest.mark.parametrize("name", ["AntTerrainDir", "ArmPush", "Walker2DParams"])
def test_frames_show_the_scene(name):
    image = _frame(name, steps=2, width=96, height=72)
    assert image.shape == (72, 96, 3) and image.dtype == np.uint8
    assert image.std() > 5  # not a blank frame


def test_the_goal_marker_moves_with_the_task():
    fam = metarobot.make_family("ArmReach")
    left = _frame(fam, fam.task(goal_x=0.4, goal_y=0.3, goal_z=0.2), width=96, height=72)
    right = _frame(fam, fam.task(goal_x=0.4, goal_y=-0.3, goal_z=0.2), width=96, height=72)
    assert np.abs(left.astype(int) - right.astype(int)).sum() > 0


def test_gymnasium_env_reports_success_and_renders():
    import gymnasium as gym
    env = gym.make("metarobot/ArmReach-v0", render_mode="rgb_array")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert info["success"] in (True, False) and "diverged" in info
    image = env.render()
    assert image.shape == (480, 640, 3)
    env.close()
