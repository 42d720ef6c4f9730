"""Families that vary the body dynamics per task: the physics really changes, and matches a plain
MuJoCo loop on the scaled model."""

import mujoco
import numpy as np
import pytest

import metarobot
import reference as ref


def test_twice_the_mass_changes_the_trajectory_and_once_does_not():
    base = metarobot.make_family("HalfCheetahVel", horizon=50)
    heavy = metarobot.make_family("HalfCheetahVel", horizon=50, dynamics={"body_mass": (2, 2)})
    same = metarobot.make_family("HalfCheetahVel", horizon=50, dynamics={"body_mass": (1, 1)})
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 1, 6))
    finals = []
    for fam in (base, heavy, same):
        task = fam.sample_tasks(1, seed=0)[0]
        sim = metarobot.BatchSim(fam, [task], seed=4)
        sim.reset()
        for a in actions:
            sim.step(a)
        finals.append(sim.get_state()[0][0])
    assert not np.allclose(finals[0], finals[1], atol=1e-3)
    np.testing.assert_array_equal(finals[0], finals[2])


def test_scaled_models_match_a_plain_loop():
    fam = metarobot.make_family("HalfCheetahDir", dynamics={
        "body_mass": {"log_base": 1.5, "low": -3, "high": 3},
        "dof_damping": (0.5, 2.0), "geom_friction": (0.5, 1.5)})
    tasks = fam.sample_tasks(3, seed=2)
    sim = metarobot.BatchSim(fam, tasks, envs_per_task=2, seed=1)
    base = fam.load_model()
    sim.reset()
    qpos, qvel = sim.get_state()
    actions = np.random.default_rng(1).uniform(-1, 1, (25, 6, 6))
    models, datas = [], []
    for i in range(sim.num_envs):
        task = tasks[sim.task_index[i]]
        m = fam.load_model()
        factors = 1.5 ** np.array([task[f"body_mass[{b}]"] for b in range(m.nbody)])
        m.body_mass[:] = base.body_mass * factors
        m.dof_damping[:] = base.dof_damping * [task[f"dof_damping[{j}]"] for j in range(m.nv)]
        m.geom_friction[:] = base.geom_friction * np.array(
            [task[f"geom_friction[{j}]"] for j in range(m.ngeom * 3)]).reshape(m.ngeom, 3)
        mujoco.mj_setConst(m, mujoco.MjData(m))
        np.testing.assert_allclose(sim.models[sim.task_index[i]].body_mass, m.body_mass)
        models.append(m)
        datas.append(ref.make_data(m, qpos[i], qvel[i]))
    for a in actions:
        sim.step(a)
        q, v = sim.get_state()
        for i, (m, d) in enumerate(zip(models, datas)):
            ref.step(m, d, a[i], fam.frame_skip, fam.name)
            np.testing.assert_array_equal(q[i], d.qpos)
            np.testing.assert_array_equal(v[i], d.qvel)
    # the tasks' masses differ, so their trajectories do
    assert not np.allclose(q[0], q[2])


def test_dynamics_tasks_round_trip_and_are_deterministic():
    fam = metarobot.make_family("AntDir", horizon=30, dynamics={"body_mass": (0.5, 1.5)})
    tasks = fam.sample_tasks(2, seed=0)
    assert len(tasks[0].params) == 1 + fam.load_model().nbody
    assert metarobot.Task.from_json(tasks[1].to_json()) == tasks[1]
    policy = metarobot.GaussianMLPPolicy(125, 8)
    runs = [metarobot.BatchSim(fam, tasks, envs_per_task=2, num_threads=t, seed=3).rollout(policy)
            for t in (1, 2)]
    np.testing.assert_array_equal(runs[0].observations, runs[1].observations)


@pytest.mark.parametrize("dynamics, words", [
    ({"body_mass": (-1.0, 2.0)}, ["body_mass", "> 0", "-1.0"]),
    ({"body_mass": (2.0, 1.0)}, ["body_mass", "empty"]),
    ({"body_colour": (1.0, 2.0)}, ["body_colour", "body_mass"]),
    ({"dof_damping": 3.0}, ["dof_damping", "(low, high)"]),
    ({"geom_friction": {"log_base": -1.5, "low": -1, "high": 1}}, ["log_base", "> 0"]),
    ({"geom_friction": {"base": 1.5}}, ["geom_friction", "log_base"]),
    ("heavy", ["dynamics", "dict"]),
])
def test_bad_dynamics_raise(dynamics, words):
    with pytest.raises(ValueError) as err:
        metarobot.make_family("HalfCheetahVel", dynamics=dynamics)
    for w in words:
        assert w in str(err.value)


def test_task_with_a_negative_scale_is_refused():
    fam = metarobot.make_family("HalfCheetahVel", dynamics={"body_mass": (0.5, 2.0)})
    params = dict(fam.sample_tasks(1, seed=0)[0].params)
    params["body_mass[2]"] = -1.0
    with pytest.raises(ValueError, match="body_mass.*> 0.*-1.0"):
        metarobot.BatchSim(fam, [fam.task(**params)])
