"""envs/go2.xml holds the Go2's published numbers (docs/robots.md), in the robot's motor order,
and behaves as a standing quadruped: a plain MuJoCo loop with the published PD gains holds the
default pose upright, and without torques the robot folds to the ground without diverging."""

import mujoco
import numpy as np
import pytest

from metarobot.families import envs_dir

LEGS = ("FR", "FL", "RR", "RL")


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_path(str(envs_dir() / "go2.xml"))


def test_sizes_masses_and_the_robots_motor_order(model):
    assert (model.nq, model.nv, model.nu) == (19, 18, 12)
    assert sum(model.body_mass) == pytest.approx(15.206, abs=1e-3)
    assert model.body("base").mass[0] == pytest.approx(6.921)
    joints = [f"{leg}_{part}_joint" for leg in LEGS for part in ("hip", "thigh", "calf")]
    assert [model.joint(j + 1).name for j in range(12)] == joints
    assert [model.actuator(i).name for i in range(12)] == [j[:-6] for j in joints]
    for i, name in enumerate(joints):  # motor i drives joint i, at qpos 7 + i
        assert model.actuator_trnid[i, 0] == model.joint(name).id
        assert model.jnt_qposadr[model.joint(name).id] == 7 + i
    assert model.opt.timestep == 0.005
    np.testing.assert_allclose(model.site("imu").pos, [-0.02557, 0, 0.04232])


def test_joint_limits_and_motor_properties_are_the_published_ones(model):
    for leg in LEGS:
        front = leg[0] == "F"
        np.testing.assert_allclose(model.joint(f"{leg}_hip_joint").range, [-1.0472, 1.0472])
        np.testing.assert_allclose(model.joint(f"{leg}_thigh_joint").range,
                                   [-1.5708, 3.4907] if front else [-0.5236, 4.5379])
        np.testing.assert_allclose(model.joint(f"{leg}_calf_joint").range, [-2.7227, -0.83776])
        for part, effort in (("hip", 23.7), ("thigh", 23.7), ("calf", 45.43)):
            j = model.joint(f"{leg}_{part}_joint")
            # no passive damping (unitree_rl_gym's URDF): the PD's kd is the only damping
            assert (j.damping[0], j.armature[0], j.frictionloss[0]) == (0.0, 0.01, 0.2)
            np.testing.assert_allclose(model.actuator(f"{leg}_{part}").ctrlrange,
                                       [-effort, effort])
    np.testing.assert_allclose(model.body("FR_hip").pos, [0.1934, -0.0465, 0])
    np.testing.assert_allclose(model.body("RL_hip").pos, [-0.1934, 0.0465, 0])
    np.testing.assert_allclose(model.body("FL_calf").pos, [0, 0, -0.213])


def _run(model, kp, kd, seconds):
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    target = model.key("home").qpos[7:].copy()
    low, high = model.actuator_ctrlrange.T
    for _ in range(int(seconds / model.opt.timestep)):
        torque = kp * (target - data.qpos[7:]) - kd * data.qvel[6:]
        data.ctrl[:] = np.clip(torque, low, high)
        mujoco.mj_step(model, data)
    return data


def test_the_published_gains_hold_the_standing_pose(model):
    data = _run(model, kp=20.0, kd=0.5, seconds=3.0)
    up = data.xmat[model.body("base").id].reshape(3, 3)[:, 2]
    assert up[2] > 0.99  # upright
    assert 0.22 < data.qpos[2] < 0.34  # standing, sagging under kp 20 as the real robot does
    assert np.all(np.abs(data.qvel) < 0.05)  # at rest
    feet = [data.geom(f"{leg}_foot").xpos[2] for leg in LEGS]
    np.testing.assert_allclose(feet, 0.022, atol=3e-3)  # every foot on the ground


def test_without_torques_it_folds_to_the_ground_without_diverging(model):
    data = _run(model, kp=0.0, kd=0.0, seconds=3.0)
    assert np.all(np.isfinite(data.qpos))
    assert 0.0 < data.qpos[2] < 0.2  # down on its belly
    assert np.all(np.abs(data.qvel) < 0.5)


def test_the_terrain_model_is_the_same_robot_on_other_ground(model):
    """envs/go2_terrain.xml is go2.xml with a heightfield for the floor: every body, joint,
    motor and the keyframe are the same."""
    rough = mujoco.MjModel.from_xml_path(str(envs_dir() / "go2_terrain.xml"))
    assert (rough.nq, rough.nv, rough.nu, rough.nbody) == (model.nq, model.nv, model.nu,
                                                           model.nbody)
    for field in ("body_mass", "body_inertia", "body_pos", "body_ipos", "jnt_range",
                  "dof_damping", "dof_armature", "dof_frictionloss", "actuator_ctrlrange",
                  "key_qpos", "opt.timestep"):
        a, b = model, rough
        for part in field.split("."):
            a, b = getattr(a, part), getattr(b, part)
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert rough.geom("terrain").type == mujoco.mjtGeom.mjGEOM_HFIELD
    assert rough.ngeom == model.ngeom
