"""Frames of a task family's simulations, by MuJoCo's offscreen renderer.

    frame = metarobot.render.frame("AntTerrainDir", task, steps=40)   # (H, W, 3) uint8
    metarobot.render.save_png(frame, "ant.png")
    metarobot.render.record(policy, family, task, "go2.gif", seconds=15)   # a controller

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


def _command_slices(family: TaskFamily, model: mujoco.MjModel):
    """(observation offset, size, scale, first command index) of each Command term."""
    from . import terms as T
    index = {n: i for i, n in enumerate(family.parameter_names)}
    out, offset = [], 0
    for term in family.observation:
        size = term.compile(model, index)[3]
        if isinstance(term, T.Command):
            out.append((offset, size, term.scale, term.start))
        offset += size
    return out


def record(policy, family: TaskFamily, task: Task, path: Union[str, Path], seconds: float = 15.0,
           width: int = 480, height: int = 360, fps: float = 12.5, seed: int = 0,
           distance: Optional[float] = None) -> Path:
    """An animated GIF of policy (a GaussianMLPPolicy, its mean action) running one episode
    of task for seconds (at most the horizon), fps frames per second of simulated time, the
    camera following the robot. For families with commands, each frame says the command in
    force and the robot's velocity in its base frame (vx, vy m/s, yaw rate rad/s). distance:
    the camera's distance to the robot, m (default scene_camera's)."""
    import torch
    from PIL import Image, ImageDraw

    from .batch import BatchSim
    if not seconds > 0 or not fps > 0:
        raise ValueError(f"seconds and fps should be > 0, got {seconds} and {fps}")
    family.check_task(task)
    sim = BatchSim(family, [task], seed=seed)
    model = sim.models[0]
    data = mujoco.MjData(model)
    dt = family.frame_skip * model.opt.timestep
    steps = min(int(round(seconds / dt)), family.horizon)
    every = max(1, int(round(1.0 / (fps * dt))))
    commands = _command_slices(family, model) if family.commands is not None else []
    root = 1 if model.nbody > 1 else 0
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    frames = []
    obs = sim.reset()
    with mujoco.Renderer(model, height, width) as renderer:
        for t in range(steps):
            if t % every == 0:
                qpos, qvel = sim.get_state()
                data.qpos[:], data.qvel[:] = qpos[0], qvel[0]
                mujoco.mj_forward(model, data)
                cam = scene_camera(model, data, family)
                if distance is not None:
                    cam.distance = distance
                renderer.update_scene(data, camera=cam)
                image = Image.fromarray(renderer.render())
                draw = ImageDraw.Draw(image)
                lines = [f"{family.name}  t = {t * dt:5.2f} s"]
                if commands:
                    values = np.zeros(len(family.commands.names))
                    for offset, size, scale, start in commands:
                        values[start:start + size] = obs[0, offset:offset + size] / scale
                    vel = np.zeros(6)
                    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_XBODY, root, vel,
                                             1)
                    measured = (vel[3], vel[4], vel[2])
                    lines.append("command " + "  ".join(
                        f"{n} {v:+.2f}" for n, v in zip(family.commands.names, values)))
                    lines.append("robot   " + "  ".join(
                        f"{n} {v:+.2f}" for n, v in zip(family.commands.names, measured)))
                for k, line in enumerate(lines):
                    draw.text((8, 6 + 14 * k), line, fill=(255, 255, 255))
                frames.append(image.convert("P", palette=Image.Palette.ADAPTIVE))
            with torch.no_grad():
                action = policy.mean(torch.as_tensor(obs)).numpy().astype(np.float64)
            obs, _, terminated, truncated, _ = sim.step(action)
            if terminated[0] or truncated[0]:
                break
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=int(round(1000 * every * dt)), optimize=True)
    return path
