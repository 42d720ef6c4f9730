"""Bad input raises ValueError naming what was expected and what came, and changes nothing."""

import numpy as np
import pytest

import metarobot


@pytest.fixture
def sim():
    family = metarobot.make_family("HalfCheetahVel")
    s = metarobot.BatchSim(family, family.sample_tasks(2, seed=0), envs_per_task=2)
    s.reset()
    return s


def _state(sim):
    q, v = sim.get_state()
    return q.copy(), v.copy()


@pytest.mark.parametrize("actions, words", [
    (np.zeros((4, 5)), ["actions", "(4, 6)", "(4, 5)"]),
    (np.zeros((6,)), ["actions", "shape"]),
    (np.zeros((4, 6), np.int64), ["actions", "float", "int64"]),
    (np.zeros((4, 6), np.complex128), ["actions", "complex128"]),
    (np.array([["a"] * 6] * 4), ["actions", "dtype"]),
    (np.full((4, 6), np.nan), ["actions", "finite", "nan"]),
    (np.where(np.eye(4, 6) > 0, np.inf, 0.0), ["actions", "finite", "inf", "[0, 0]"]),
])
def test_bad_actions_raise_and_leave_state(sim, actions, words):
    before = _state(sim)
    with pytest.raises(ValueError) as err:
        sim.step(actions)
    for w in words:
        assert w in str(err.value)
    after = _state(sim)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    sim.step(np.zeros((4, 6)))  # still usable


def test_step_before_reset_raises():
    family = metarobot.make_family("HalfCheetahDir")
    s = metarobot.BatchSim(family, family.sample_tasks(1, seed=0))
    with pytest.raises(RuntimeError, match="reset"):
        s.step(np.zeros((1, 6)))


def test_tasks_of_another_family_raise():
    ant_task = metarobot.make_family("AntVel").sample_tasks(1, seed=0)[0]
    with pytest.raises(ValueError, match="AntVel.*HalfCheetahVel"):
        metarobot.BatchSim("HalfCheetahVel", [ant_task])


def test_task_with_wrong_parameters_raises():
    with pytest.raises(ValueError, match="goal_velocity"):
        metarobot.BatchSim("HalfCheetahVel", [metarobot.Task("HalfCheetahVel",
                                                             (("speed", 1.0),))])
    with pytest.raises(ValueError, match="finite"):
        metarobot.make_family("HalfCheetahVel").task(goal_velocity=float("nan"))
    with pytest.raises(ValueError, match="missing"):
        metarobot.make_family("AntGoal").task(goal_x=1.0)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown task family 'Cheetah'.*HalfCheetahVel"):
        metarobot.make_family("Cheetah")
    with pytest.raises(ValueError, match="no field 'horizn'.*horizon"):
        metarobot.make_family("AntDir", horizn=10)


@pytest.mark.parametrize("overrides, words", [
    ({"horizon": 0}, ["horizon", ">= 1", "0"]),
    ({"horizon": 2.5}, ["horizon", "integer", "2.5"]),
    ({"frame_skip": -1}, ["frame_skip", "-1"]),
    ({"reset_qpos_noise": -0.1}, ["reset_qpos_noise", ">= 0", "-0.1"]),
    ({"goal_velocity": (2.0, 1.0)}, ["goal_velocity", "empty"]),
    ({"goal_velocity": (0.0, float("inf"))}, ["goal_velocity", "finite"]),
    ({"goal_velocity": 3.0}, ["goal_velocity", "(low, high)"]),
    ({"model_file": "no_such.xml"}, ["model_file", "no_such.xml", "does not exist"]),
    ({"ctrl_cost_weight": "heavy"}, ["ctrl_cost_weight", "number"]),
])
def test_out_of_range_family_fields_raise(overrides, words):
    with pytest.raises(ValueError) as err:
        metarobot.make_family("HalfCheetahVel", **overrides)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"envs_per_task": 0}, ["envs_per_task", ">= 1", "0"]),
    ({"seed": -1}, ["seed", "[0, 18446744073709551615]", "-1"]),
    ({"seed": 2 ** 70}, ["seed", "[0, 18446744073709551615]", str(2 ** 70)]),
    ({"num_threads": -2}, ["num_threads", "-2"]),
    ({"tasks": []}, ["tasks", "at least one"]),
])
def test_bad_batch_arguments_raise(kwargs, words):
    family = metarobot.make_family("HalfCheetahVel")
    args = dict(family=family, tasks=family.sample_tasks(1, seed=0))
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        metarobot.BatchSim(**args)
    for w in words:
        assert w in str(err.value)


def test_rollout_bad_horizon_and_policy_raise(sim):
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    with pytest.raises(ValueError, match="horizon.*>= 1.*0"):
        sim.rollout(policy, horizon=0)
    wrong = metarobot.GaussianMLPPolicy(sim.observation_dim + 1, sim.action_dim)
    with pytest.raises(ValueError, match="21 -> 6.*20 -> 6"):
        sim.rollout(wrong)
    import torch
    with torch.no_grad():
        policy.log_std.fill_(float("nan"))
    with pytest.raises(ValueError, match="log_std"):
        sim.rollout(policy)


def test_bad_set_state_raises_and_leaves_state(sim):
    before = _state(sim)
    with pytest.raises(ValueError, match="qpos.*finite"):
        q = before[0].copy()
        q[0, 0] = np.nan
        sim.set_state(q, before[1])
    with pytest.raises(ValueError, match=r"qvel.*\(4, 9\).*\(4, 8\)"):
        sim.set_state(before[0], before[1][:, :8])
    with pytest.raises(ValueError, match="ids"):
        sim.set_state(before[0][:1], before[1][:1], ids=[7])
    after = _state(sim)
    np.testing.assert_array_equal(before[0], after[0])


def test_task_json_errors():
    with pytest.raises(ValueError, match="not a task"):
        metarobot.Task.from_json('{"family": "AntVel"}')
    with pytest.raises(ValueError, match="not a task"):
        metarobot.Task.from_json("nonsense")
