"""Frames of a task family's simulations, by MuJoCo's offscreen renderer.

    frame = metarobot.render.frame("AntTerrainDir", task, steps=40)   # (H, W, 3) uint8
    metarobot.render.save_png(frame, "ant.png")

Needs an OpenGL context: MUJOCO_GL=egl (a GPU or Mesa's software EGL) or osmesa on machines
without a display. MuJoCo reads MUJOCO_GL when imported; importing metarobot on a machine
without a display sets it to egl unless it is set already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import mujoco
import numpy as np

from .families import Task, TaskFamily, actions_to_controls, make_family


def scene_camera(model: mujoco.MjModel, data: mujoco.MjData,
                 family: TaskFamily) -> mujoco.MjvCamera:
    """The model's camera 'overview' when it has one, else a free camera on the robot."""
    cam = mujoco.MjvCamera()
    overview = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "overview")
    if overview >= 0:
        cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        cam.fixedcamid = overview
        return cam
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    root = 1 if model.nbody > 1 else 0
    cam.lookat[:] = data.subtree_com[root]
    if family.terrain is not None:
        # back and above, so that the terrain ahead shows
        cam.distance, cam.azimuth, cam.elevation = 4.5, 135.0, -25.0
    elif model.nq > 0 and model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
        cam.distance, cam.azimuth, cam.elevation = 3.0, 135.0, -25.0
    else:
        cam.distance, cam.azimuth, cam.elevation = 3.5, 90.0, -10.0
    return cam


def frame(family: Union[str, TaskFamily], task: Optional[Task] = None, steps: int = 0,
          width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """One frame (height, width, 3) uint8 of task (default: the family's first task of
    seed) after steps env steps of uniform random actions in [-0.5, 0.5] from the family's
    initial state."""
    family = make_family(family) if isinstance(family, str) else family
    for name, value, low in (("steps", steps, 0), ("width", width, 1), ("height", height, 1),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} should be an integer >= {low}, got {value!r}")
    task = family.sample_tasks(1, seed=seed)[0] if task is None else task
    family.check_task(task)
    model = family.task_model(family.load_model(), task)
    data = mujoco.MjData(model)
    spec = family.compile(model)
    if spec["init_key"] >= 0:
        mujoco.mj_resetDataKeyframe(model, data, spec["init_key"])
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        data.ctrl[:] = rng.uniform(-0.5, 0.5, model.nu)
        if family.normalize_actions:
            data.ctrl[:] = actions_to_controls(data.ctrl, model.actuator_ctrlrange)
        for _ in range(family.frame_skip):
            mujoco.mj_step(model, data)
    mujoco.mj_forward(model, data)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    try:
        renderer = mujoco.Renderer(model, height, width)
    except mujoco.FatalError as exc:  # the OpenGL driver's limit on offscreen buffers
        raise ValueError(f"cannot render {width} x {height} pixels on this machine's OpenGL: "
                         f"{str(exc).strip()}; ask for a smaller width and height") from None
    with renderer:
        renderer.update_scene(data, camera=scene_camera(model, data, family))
        return renderer.render().copy()


def save_png(image: np.ndarray, path: Union[str, Path]) -> Path:
    """Writes an (H, W, 3) uint8 image as PNG (matplotlib's writer)."""
    import matplotlib.image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, image)
    return path
