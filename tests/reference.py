"""Independent references: plain Python MuJoCo loops and the task definitions of the MAML paper's
released code, written out from MjData without metarobot's term machinery."""

import mujoco
import numpy as np


def body_velocity(m, d, body):
    """World-frame linear velocity of the centre of mass of body's subtree, as rllab's
    body_comvels: mass-weighted body COM velocities from mj_objectVelocity, summed up the
    tree."""
    momentum = np.zeros((m.nbody, 3))
    mass = m.body_mass.copy()
    for i in range(m.nbody):
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, i, vel, 0)
        momentum[i] = vel[3:] * mass[i]
    for i in range(m.nbody - 1, 0, -1):
        momentum[m.body_parentid[i]] += momentum[i]
        mass[m.body_parentid[i]] += mass[i]
    return momentum[body] / mass[body]


def derived(m, d):
    """A copy of d with every derived quantity at its state: forward pass and cfrc_ext."""
    scratch = mujoco.MjData(m)
    mujoco.mj_copyData(scratch, m, d)
    mujoco.mj_forward(m, scratch)
    mujoco.mj_rnePostConstraint(m, scratch)
    return scratch


def observation(family, m, d):
    if family in ("HopperParams", "Walker2DParams"):
        return np.concatenate([d.qpos[1:], np.clip(d.qvel, -10, 10)])
    torso = m.body("torso").id
    if family.startswith("HalfCheetah"):
        return np.concatenate([d.qpos[1:], d.qvel, d.subtree_com[torso]])
    return np.concatenate([d.qpos, d.qvel, np.clip(d.cfrc_ext, -1, 1).ravel(),
                           d.xmat[torso], d.subtree_com[torso]])


def applied(family, m, action):
    """The controls an action becomes: the MAML families map [-1, 1] onto the control range
    and clip (rllab's normalize)."""
    if family.startswith(("HalfCheetah", "Ant")):
        lo, hi = m.actuator_ctrlrange[:, 0], m.actuator_ctrlrange[:, 1]
        return np.clip(0.5 * (lo + hi) + np.asarray(action) * (0.5 * (hi - lo)), lo, hi)
    return np.asarray(action)


def reward(family, task, m, d, action, x_before=None):
    if family in ("HopperParams", "Walker2DParams"):
        dt = m.opt.timestep * 4
        return (d.qpos[0] - x_before) / dt + 1.0 - 1e-3 * np.sum(np.square(action))
    torso = m.body("torso").id
    vx = body_velocity(m, d, torso)[0]
    if family.startswith("HalfCheetah"):
        ctrl_cost = 0.05 * np.sum(np.square(np.clip(action, -1.0, 1.0)))
        if family == "HalfCheetahVel":
            return -abs(vx - task["goal_velocity"]) - ctrl_cost
        return task["direction"] * vx - ctrl_cost
    costs = (0.005 * np.sum(np.square(applied(family, m, action) / 150.0))
             + 0.0005 * np.sum(np.square(np.clip(d.cfrc_ext, -1.0, 1.0))))
    if family == "AntVel":
        return -abs(vx - task["goal_velocity"]) + 1.0 - costs + 0.05
    if family == "AntDir":
        return task["direction"] * vx - costs + 0.05
    goal = np.array([task["goal_x"], task["goal_y"]])
    return -np.linalg.norm(d.xpos[torso][:2] - goal) - costs + 0.05


def terminated(family, d):
    if family.startswith("HalfCheetah"):
        return False
    state = np.concatenate([d.qpos, d.qvel])
    height, angle = d.qpos[1], d.qpos[2]
    if family == "HopperParams":
        return not (np.isfinite(state).all() and (np.abs(state[2:]) < 100).all()
                    and height > 0.7 and abs(angle) < 0.2)
    if family == "Walker2DParams":
        return not (0.8 < height < 2.0 and -1.0 < angle < 1.0)
    state = np.concatenate([d.qpos, d.qvel])
    return not (np.isfinite(state).all() and 0.2 <= d.qpos[2] <= 1.0)


def step(m, d, action, frame_skip, family=""):
    """The plain loop: controls, then mj_step frame_skip times."""
    d.ctrl[:] = applied(family, m, action)
    for _ in range(frame_skip):
        mujoco.mj_step(m, d)


def plain_copies(sim):
    """One plain MjData per simulation of a BatchSim, at its current state, on its task's
    model: the start of a reference loop beside the batch."""
    qpos, qvel = sim.get_state()
    return [make_data(sim.models[sim.task_index[i]], qpos[i], qvel[i])
            for i in range(sim.num_envs)]


def make_data(m, qpos, qvel):
    d = mujoco.MjData(m)
    d.qpos[:] = qpos
    d.qvel[:] = qvel
    return d
