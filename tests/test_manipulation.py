"""Arm families: goals move the reward, the puck's start, mass and friction are the task's, the
success flag is the distance test, all against plain MuJoCo on the task's model."""

import numpy as np
import pytest
import torch

import metarobot
import reference as ref


def run(sim, actions):
    """Steps sim through actions (T, N, act); returns rewards (T, N), success (T, N) and the
    final qpos (N, nq)."""
    sim.reset()
    rewards, success = [], []
    for a in actions:
        _, r, _, _, info = sim.step(a)
        rewards.append(r)
        success.append(info["success"])
    return np.array(rewards), np.array(success), sim.get_state()[0]


def test_reach_reward_and_success_follow_the_goal():
    fam = metarobot.make_family("ArmReach")
    near = fam.task(goal_x=0.45, goal_y=0.0, goal_z=0.2)
    far = fam.task(goal_x=0.3, goal_y=0.3, goal_z=0.1)
    sim = metarobot.BatchSim(fam, [near, far], seed=3)
    sim.reset()
    qpos, qvel = sim.get_state()
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 2, 4))
    datas = [ref.make_data(sim.models[i], qpos[i], qvel[i]) for i in range(2)]
    tip = sim.models[0].body("fingertip").id
    for a in actions:
        _, r, _, _, info = sim.step(a)
        for i, (task, d) in enumerate(zip((near, far), datas)):
            m = sim.models[i]
            ref.step(m, d, a[i], fam.frame_skip)
            at = ref.derived(m, d)  # positions at the new state
            goal = np.array([task["goal_x"], task["goal_y"], task["goal_z"]])
            dist = np.linalg.norm(at.xpos[tip] - goal)
            assert r[i] == pytest.approx(-dist - 0.01 * np.sum(np.square(a[i])), rel=1e-5)
            assert info["success"][i] == (dist < 0.05)
            # the goal marker is where the task puts it
            np.testing.assert_allclose(m.site("goal").pos, goal)
    # the same actions earn different rewards under different goals
    assert r[0] != pytest.approx(r[1], abs=1e-3)


def test_reach_goal_is_hidden_unless_asked_for():
    hidden = metarobot.make_family("ArmReach")
    shown = metarobot.make_family("ArmReach", observe_task=True)
    task = hidden.task(goal_x=0.4, goal_y=-0.1, goal_z=0.3)
    obs_hidden = metarobot.BatchSim(hidden, [task]).reset()
    obs_shown = metarobot.BatchSim(shown, [shown.task(**task.as_dict())]).reset()
    np.testing.assert_array_equal(obs_hidden[0, -3:], 0.0)
    np.testing.assert_allclose(obs_shown[0, -3:], [0.4, -0.1, 0.3], rtol=1e-6)
    with pytest.raises(ValueError, match="observe_task should be True or False"):
        metarobot.make_family("ArmReach", observe_task="yes")
    with pytest.raises(ValueError, match="no task parameters in its observation"):
        metarobot.make_family("HalfCheetahVel", observe_task=True)


def push_task(fam, **changes):
    values = dict(goal_x=0.55, goal_y=0.1, object_x=0.35, object_y=0.0, object_mass=0.3,
                  object_friction=0.8)
    values.update(changes)
    return fam.task(**values)


def pushing_actions(steps, n):
    """Sweeps the fingertip down onto the table and out along +x through the puck."""
    a = np.zeros((steps, n, 4))
    a[:, :, 1] = 0.6     # shoulder: lower the arm
    a[:, :, 2] = -0.5    # elbow: extend
    a[:, :, 3] = 0.3
    return a


def test_push_object_start_mass_and_friction_are_the_tasks():
    fam = metarobot.make_family("ArmPush", reset_qpos_noise=0.0, reset_qvel_noise=0.0)
    base = push_task(fam)
    moved = push_task(fam, object_x=0.38, object_y=-0.05)
    heavy = push_task(fam, object_mass=0.6)
    rough = push_task(fam, object_friction=1.1)
    tasks = [base, moved, heavy, rough]
    sim = metarobot.BatchSim(fam, tasks, seed=0)
    obj = sim.models[0].body("object").id
    obs = sim.reset()
    # the puck starts where the task puts it (no reset noise here)
    np.testing.assert_allclose(obs[:, 11:13], [[0.35, 0.0], [0.38, -0.05], [0.35, 0.0],
                                               [0.35, 0.0]], atol=1e-6)
    assert sim.models[2].body_mass[obj] == pytest.approx(0.6)
    assert sim.models[3].geom_friction[sim.models[3].geom("object").id][0] == pytest.approx(1.1)
    # the fingertip sweeps through the puck: mass and friction change where it ends up
    _, _, qpos = run(sim, pushing_actions(60, 4))
    start = np.array([[0.35, 0.0], [0.38, -0.05], [0.35, 0.0], [0.35, 0.0]])
    travel = np.linalg.norm(qpos[:, 4:6] - start, axis=1)
    assert travel[0] > 0.02, "the scripted sweep should move the puck"
    assert abs(travel[2] - travel[0]) > 1e-3 and abs(travel[3] - travel[0]) > 1e-3


def test_push_matches_a_plain_loop_and_success_is_the_goal_distance():
    fam = metarobot.make_family("ArmPush")
    tasks = fam.sample_tasks(3, seed=4)
    sim = metarobot.BatchSim(fam, tasks, envs_per_task=2, seed=1)
    sim.reset()
    datas = ref.plain_copies(sim)
    actions = np.random.default_rng(5).uniform(-1, 1, (40, sim.num_envs, 4))
    obj = sim.models[0].body("object").id
    tip = sim.models[0].body("fingertip").id
    for a in actions:
        _, r, _, _, info = sim.step(a)
        q, _ = sim.get_state()
        for i, d in enumerate(datas):
            task = tasks[sim.task_index[i]]
            m = sim.models[sim.task_index[i]]
            ref.step(m, d, a[i], fam.frame_skip)
            np.testing.assert_array_equal(q[i], d.qpos)
            at = ref.derived(m, d)  # positions at the new state
            to_goal = np.linalg.norm(at.xpos[obj][:2] - [task["goal_x"], task["goal_y"]])
            expected = (-0.5 * np.linalg.norm(at.xpos[tip] - at.xpos[obj]) - to_goal
                        - 0.01 * np.sum(np.square(a[i])))
            assert r[i] == pytest.approx(expected, rel=1e-5, abs=1e-6)
            assert info["success"][i] == (to_goal < 0.05)


def test_success_in_rollouts_matches_steps():
    fam = metarobot.make_family("ArmReach")
    tasks = fam.sample_tasks(4, seed=0)
    torch.manual_seed(0)
    policy = metarobot.GaussianMLPPolicy(14, 4)
    traj = metarobot.BatchSim(fam, tasks, envs_per_task=2, seed=2).rollout(policy)
    assert traj.success.shape == traj.rewards.shape
    # success is the distance test on the reward's own distance (control cost aside)
    ctrl = 0.01 * np.sum(np.square(traj.actions), axis=2)
    dist = -(traj.rewards - (-ctrl))
    np.testing.assert_array_equal(traj.success[traj.valid], (dist < 0.05)[traj.valid])
    assert traj.succeeded.shape == (8,)


def test_manipulation_bad_input():
    fam = metarobot.make_family("ArmPush")
    with pytest.raises(ValueError, match=r"object_mass: range \[1.0, 0.5\] is empty"):
        metarobot.make_family("ArmPush", object_mass=(1.0, 0.5))
    with pytest.raises(ValueError, match="has no field 'goal_z'"):
        metarobot.make_family("ArmPush", goal_z=(0, 1))
    with pytest.raises(ValueError, match="WriteField: field should be one of"):
        metarobot.terms.WriteField("goal_x", "body_quat", "object").validate(["goal_x"])
    with pytest.raises(ValueError, match="no task parameter 'mass'"):
        metarobot.terms.WriteField("mass", "body_mass", "object").validate(["goal_x"])
    with pytest.raises(ValueError, match="tasks take parameters"):
        fam.task(goal_x=0.5)
    # masses and frictions the physics cannot take: refused in ranges and in given tasks
    with pytest.raises(ValueError, match="object_friction is written into geom_friction, which "
                                         "should be >= 0; got -1"):
        metarobot.make_family("ArmPush", object_friction=(-1.0, 2.0))
    with pytest.raises(ValueError, match="object_mass is written into body_mass, which should "
                                         "be > 0; got 0"):
        metarobot.make_family("ArmPush", object_mass=(0.0, 1.0))
    values = fam.sample_tasks(1, seed=0)[0].as_dict()
    with pytest.raises(ValueError, match="body_mass, which should be > 0; got -0.2"):
        metarobot.BatchSim(fam, [fam.task(**dict(values, object_mass=-0.2))])
