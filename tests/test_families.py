"""Task families as data: listing, overrides, sampling, tasks, gymnasium registration."""

import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metarobot

MAML = {"HalfCheetahVel": (20, 6), "HalfCheetahDir": (20, 6), "AntVel": (125, 8),
        "AntDir": (125, 8), "AntGoal": (125, 8)}
EXPECTED = {**MAML, "HopperParams": (11, 3), "Walker2DParams": (17, 6)}


def test_list_families():
    assert set(metarobot.list_families()) >= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(MAML))
def test_sizes_and_paper_settings(name):
    family = metarobot.make_family(name)
    sim = metarobot.BatchSim(family, family.sample_tasks(1, seed=0))
    assert (sim.observation_dim, sim.action_dim) == EXPECTED[name]
    assert family.frame_skip == 1 and family.horizon == 200
    m = family.load_model()
    if name.startswith("HalfCheetah"):
        assert m.opt.timestep == 0.01 and np.isclose(m.body_mass.sum(), 14.0)
        np.testing.assert_array_equal(m.actuator_gear[:, 0], [120, 90, 60, 120, 60, 30])
    else:
        assert m.opt.timestep == 0.02
        assert m.opt.integrator == 1  # RK4
        np.testing.assert_array_equal(m.actuator_ctrlrange, [[-150, 150]] * 8)
        sim.reset()
        assert abs(sim.get_state()[0][0, 2] - 0.55) < 0.05


@pytest.mark.parametrize("name, nparam", [("HopperParams", 41), ("Walker2DParams", 65)])
def test_rand_param_families(name, nparam):
    family = metarobot.make_family(name)
    sim = metarobot.BatchSim(family, family.sample_tasks(2, seed=0))
    assert (sim.observation_dim, sim.action_dim) == EXPECTED[name]
    assert family.frame_skip == 4 and family.horizon == 200
    assert sim.models[0].opt.timestep == 0.002
    assert len(family.parameter_names) == nparam
    # masses scaled by 1.5 ** U(-3, 3): within [1.5^-3, 1.5^3] of the model's
    base = family.load_model().body_mass[1:]
    ratio = sim.models[0].body_mass[1:] / base
    assert (ratio >= 1.5 ** -3 - 1e-12).all() and (ratio <= 1.5 ** 3 + 1e-12).all()
    assert not np.allclose(sim.models[0].body_mass, sim.models[1].body_mass)
    sim.reset()
    qpos, _ = sim.get_state()
    init = family.load_model().qpos0
    assert np.abs(qpos - init).max() <= 0.005  # uniform reset noise


def test_sample_tasks_deterministic_and_in_range():
    fam = metarobot.make_family("HalfCheetahVel")
    a, b = fam.sample_tasks(50, seed=3), fam.sample_tasks(50, seed=3)
    assert a == b and a != fam.sample_tasks(50, seed=4)
    v = np.array([t["goal_velocity"] for t in a])
    assert (v >= 0).all() and (v <= 2).all() and v.std() > 0.3
    dirs = {t["direction"] for t in metarobot.make_family("AntDir").sample_tasks(40, seed=0)}
    assert dirs == {-1.0, 1.0}
    goals = np.array([[t["goal_x"], t["goal_y"]]
                      for t in metarobot.make_family("AntGoal").sample_tasks(2000, seed=0)])
    r = np.linalg.norm(goals, axis=1)
    assert r.max() <= 3.0 and r.max() > 2.9
    # uniform on the disc: half the points lie within radius 3 / sqrt(2)
    assert abs((r < 3 / np.sqrt(2)).mean() - 0.5) < 0.05


def test_task_is_frozen_printable_and_json_round_trips():
    task = metarobot.make_family("AntGoal").sample_tasks(1, seed=0)[0]
    assert repr(task).startswith("Task(AntGoal, goal_x=")
    assert metarobot.Task.from_json(task.to_json()) == task
    assert json.loads(task.to_json())["family"] == "AntGoal"
    with pytest.raises(Exception):
        task.family = "x"
    hash(task)


def test_overrides_change_the_simulation():
    base = metarobot.make_family("HalfCheetahVel")
    fam = metarobot.make_family("HalfCheetahVel", horizon=7, goal_velocity=(5.0, 6.0),
                                ctrl_cost_weight=0.0, frame_skip=2)
    assert fam.horizon == 7 and fam.frame_skip == 2
    assert all(5 <= t["goal_velocity"] <= 6 for t in fam.sample_tasks(20, seed=0))
    assert base.horizon == 200  # the registered family is unchanged
    sim = metarobot.BatchSim(fam, [fam.task(goal_velocity=5.0)])
    sim.reset()
    _, rew, _, _, _ = sim.step(np.ones((1, 6)))
    ref = metarobot.BatchSim(metarobot.make_family("HalfCheetahVel", frame_skip=2),
                             [base.task(goal_velocity=5.0)])
    ref.reset()
    _, rew_ref, _, _, _ = ref.step(np.ones((1, 6)))
    # no control cost: 0.05 * 6 more reward
    np.testing.assert_allclose(rew - rew_ref, 0.3, rtol=1e-5)
    traj = sim.rollout(metarobot.GaussianMLPPolicy(20, 6))
    assert traj.rewards.shape == (7, 1)


def test_goal_moves_the_reward():
    fam = metarobot.make_family("AntGoal")
    tasks = [fam.task(goal_x=0.0, goal_y=0.0), fam.task(goal_x=3.0, goal_y=0.0)]
    sim = metarobot.BatchSim(fam, tasks, seed=0)
    sim.reset()
    q, v = sim.get_state()
    sim.set_state(np.repeat(q[:1], 2, 0), np.repeat(v[:1], 2, 0))
    _, rew, _, _, _ = sim.step(np.zeros((2, 8)))
    assert rew[0] - rew[1] > 2.5  # about 3 m closer to the first goal


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gymnasium_registration_and_env_checker(name):
    env = gym.make(f"metarobot/{name}-v0")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (EXPECTED[name][0],) and obs.dtype == np.float32
    obs2, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs, obs2)
    steps = 0
    while True:
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        steps += 1
        if term or trunc:
            break
    assert steps <= 200 and (term or steps == 200)
    env.close()
    assert env.unwrapped.family.name == name


def test_gymnasium_task_argument():
    env = gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.25}, horizon=10)
    assert env.unwrapped.task["goal_velocity"] == 1.25
    assert env.unwrapped.family.horizon == 10


def test_custom_family_registers():
    fam = metarobot.make_family("AntDir").with_overrides(horizon=50)
    import dataclasses
    custom = dataclasses.replace(fam, name="ShortAntDir")
    metarobot.register_family(custom)
    assert "ShortAntDir" in metarobot.list_families()
    assert metarobot.make_family("ShortAntDir").horizon == 50


def test_import_with_another_mujoco_version_names_both():
    code = ("import mujoco; mujoco.__version__ = '3.9.9'\n"
            "try:\n    import metarobot\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "4.0.0" in out and "3.9.9" in out


@pytest.mark.parametrize("name", metarobot.list_families())
def test_every_listed_override_takes_its_current_value(name):
    """What `metarobot families` lists is accepted: each override set to its current value
    gives the same family."""
    family = metarobot.make_family(name)
    listed = family.overrides()
    assert listed.keys() == set(family.override_names())
    for key, (what, value) in listed.items():
        assert what, key
        if key == "dynamics":
            continue
        if isinstance(value, tuple):
            value = list(value)
        assert metarobot.make_family(name, **{key: value}) == family, key


def test_disc_radius_override_has_a_plain_name():
    family = metarobot.make_family("AntGoal", goal_radius=1.5)
    tasks = family.sample_tasks(200, seed=0)
    radii = [math.hypot(t["goal_x"], t["goal_y"]) for t in tasks]
    assert max(radii) <= 1.5 and max(radii) > 1.4


def test_a_missing_keyframe_says_how_to_do_without():
    import gymnasium.envs.mujoco as gym_mujoco
    import os
    xml = os.path.join(os.path.dirname(gym_mujoco.__file__), "assets", "ant.xml")
    family = metarobot.make_family("AntVel", model_file=xml, frame_skip=5)
    with pytest.raises(ValueError, match="no keyframe 'init'.*init_keyframe=None"):
        metarobot.BatchSim(family, family.sample_tasks(1, seed=0))
    family = metarobot.make_family("AntVel", model_file=xml, frame_skip=5, init_keyframe=None)
    assert metarobot.BatchSim(family, family.sample_tasks(1, seed=0)).reset().shape[0] == 1
    with pytest.raises(ValueError, match="init_keyframe should be a keyframe name or None"):
        metarobot.make_family("AntVel", init_keyframe=3)


def test_bundled_models_match_the_gymnasium_models_docs_name():
    """docs/families.md says which Gymnasium asset each bundled model is; check it."""
    import gymnasium.envs.mujoco as gym_mujoco
    import mujoco
    import os
    assets = os.path.join(os.path.dirname(gym_mujoco.__file__), "assets")
    fields = ("body_mass", "body_inertia", "geom_friction", "dof_damping", "dof_armature",
              "actuator_gear", "actuator_ctrlrange", "jnt_range", "geom_size")

    def differing(ours, theirs):
        a = mujoco.MjModel.from_xml_path(str(metarobot.families.envs_dir() / ours))
        b = mujoco.MjModel.from_xml_path(os.path.join(assets, theirs))
        # to rounding: the cheetah's masses come from a density here, from Gymnasium's
        # deprecated settotalmass there (14 kg both, 4e-16 apart)
        out = [f for f in fields
               if not np.allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=0)]
        if a.opt.timestep != b.opt.timestep:
            out.append("timestep")
        return out
    assert differing("half_cheetah.xml", "half_cheetah.xml") == []
    assert differing("hopper.xml", "hopper.xml") == []
    assert differing("walker2d.xml", "walker2d.xml") == []
    assert differing("walker2d.xml", "walker2d_v5.xml") == ["geom_friction"]
    assert differing("ant.xml", "ant.xml") == ["actuator_gear", "actuator_ctrlrange", "timestep"]


def test_every_task_parameter_distribution_answers_the_protocol():
    """Each built-in family's distributions (terrain and dynamics scales included) are
    TaskParameters: the calls a family makes of them exist and answer in kind."""
    import numpy as np
    from metarobot.parameters import TaskParameter
    for name in metarobot.list_families():
        for dist in metarobot.make_family(name).parameters:
            assert isinstance(dist, TaskParameter), (name, dist)
            assert isinstance(dist.changes_model, bool) and isinstance(dist.describe(), str)
            values = dist.sample(np.random.default_rng(0), 3)
            assert values.shape == (3, len(dist.names))
            task = dict(zip(dist.names, values[0]))
            assert dist.outside(task) is None  # a drawn value lies inside its own range
            dist.check_values(task)
