"""The engine against plain Python MuJoCo loops, Gymnasium's HalfCheetah and the task
definitions written out from MjData."""

import gymnasium as gym
import numpy as np
import pytest

import metarobot
import reference as ref

FAMILIES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal", "HopperParams",
            "Walker2DParams"]


def _actions(rng, sim, n, scale):
    return scale * rng.standard_normal((n, sim.num_envs, sim.action_dim))


@pytest.mark.parametrize("name", FAMILIES)
def test_step_matches_plain_mj_step_loop(name):
    family = metarobot.make_family(name)
    tasks = family.sample_tasks(3, seed=5)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=3, num_threads=2)
    models = [sim.models[sim.task_index[i]] for i in range(sim.num_envs)]
    obs = sim.reset()
    qpos, qvel = sim.get_state()
    datas = [ref.make_data(models[i], qpos[i], qvel[i]) for i in range(sim.num_envs)]
    for i, d in enumerate(datas):
        m = models[i]
        np.testing.assert_allclose(obs[i], ref.observation(name, m, ref.derived(m, d)),
                                   rtol=1e-6, atol=1e-7)
    scale = 0.15 if name.startswith("Ant") else (0.3 if name.endswith("Params") else 1.0)
    steps = 10 if name.endswith("Params") else 40
    actions = _actions(np.random.default_rng(0), sim, steps, scale)
    for t in range(len(actions)):
        obs, rew, term, trunc, info = sim.step(actions[t])
        assert not info["_final_obs"].any(), "no episode should end in this test"
        qpos, qvel = sim.get_state()
        for i, d in enumerate(datas):
            m = models[i]
            x_before = d.qpos[0]
            ref.step(m, d, actions[t, i], family.frame_skip, name)
            # the state is the plain loop's, to the bit
            np.testing.assert_array_equal(qpos[i], d.qpos)
            np.testing.assert_array_equal(qvel[i], d.qvel)
            full = ref.derived(m, d)
            task = tasks[sim.task_index[i]]
            np.testing.assert_allclose(obs[i], ref.observation(name, m, full), rtol=1e-6,
                                       atol=1e-6)
            np.testing.assert_allclose(
                rew[i], ref.reward(name, task, m, full, actions[t, i], x_before), rtol=1e-5,
                atol=1e-5)
            assert term[i] == ref.terminated(name, full)
            assert not trunc[i]


@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntDir"])
def test_rollout_matches_plain_loop_with_its_actions(name):
    family = metarobot.make_family(name, horizon=60)
    tasks = family.sample_tasks(2, seed=1)
    policy = metarobot.GaussianMLPPolicy(family.observation_dim(), family.load_model().nu)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=11)
    traj = sim.rollout(policy)
    # a fresh batch with the same seed draws the same reset noise first
    start = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=11)
    start.reset()
    qpos, qvel = start.get_state()
    m = family.load_model()
    for i in range(sim.num_envs):
        d = ref.make_data(m, qpos[i], qvel[i])
        task = tasks[sim.task_index[i]]
        for t in range(traj.lengths[i]):
            np.testing.assert_allclose(traj.observations[t, i],
                                       ref.observation(name, m, ref.derived(m, d)),
                                       rtol=1e-6, atol=1e-6)
            action = traj.actions[t, i].astype(np.float64)
            ref.step(m, d, action, family.frame_skip, name)
            full = ref.derived(m, d)
            np.testing.assert_allclose(traj.rewards[t, i],
                                       ref.reward(name, task, m, full, action),
                                       rtol=1e-5, atol=1e-5)
            assert traj.terminated[t, i] == ref.terminated(name, full)
        np.testing.assert_allclose(traj.final_observations[i],
                                   ref.observation(name, m, ref.derived(m, d)), rtol=1e-6,
                                   atol=1e-6)
    final_qpos, _ = sim.get_state()
    assert np.isfinite(final_qpos).all()


def test_rollout_policy_mean_matches_torch():
    family = metarobot.make_family("HalfCheetahDir", horizon=5)
    sim = metarobot.BatchSim(family, family.sample_tasks(2, seed=0), seed=2)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim, activation="tanh")
    traj = sim.rollout(policy, deterministic=True)
    import torch
    with torch.no_grad():
        mean = policy.mean(torch.from_numpy(traj.observations)).numpy()
    np.testing.assert_allclose(traj.actions, mean, rtol=1e-5, atol=1e-6)


def test_rollout_policy_noise_has_the_policy_std():
    family = metarobot.make_family("HalfCheetahDir", horizon=50)
    sim = metarobot.BatchSim(family, family.sample_tasks(4, seed=0), envs_per_task=8, seed=2)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim, init_log_std=-1.0)
    traj = sim.rollout(policy)
    import torch
    with torch.no_grad():
        mean = policy.mean(torch.from_numpy(traj.observations)).numpy()
    noise = (traj.actions - mean) / np.exp(-1.0)
    assert abs(noise.mean()) < 0.03
    assert abs(noise.std() - 1.0) < 0.03


def gymnasium_asset(name):
    import gymnasium.envs.mujoco as gym_mujoco
    import os
    return os.path.join(os.path.dirname(gym_mujoco.__file__), "assets", name)


def start_alike(env_id, sim, rng):
    """Gymnasium's env_id and a one-simulation BatchSim in the same perturbed initial state
    (qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1)); returns the env (unwrapped)."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=4)
    sim.reset()
    qpos0 = env.init_qpos + rng.uniform(-0.1, 0.1, env.model.nq)
    qvel0 = env.init_qvel + 0.1 * rng.standard_normal(env.model.nv)
    env.set_state(qpos0, qvel0)
    sim.set_state(qpos0[None], qvel0[None])
    return env


def test_half_cheetah_physics_equals_gymnasium_v5():
    """With Gymnasium's model and frame_skip 5, states equal HalfCheetah-v5's to the bit."""
    family = metarobot.make_family("HalfCheetahDir", model_file=gymnasium_asset(
        "half_cheetah.xml"), frame_skip=5)
    sim = metarobot.BatchSim(family, [family.task(direction=1.0)], seed=0)
    rng = np.random.default_rng(7)
    env = start_alike("HalfCheetah-v5", sim, rng)
    for t in range(100):
        action = rng.uniform(-1, 1, 6)
        obs_gym, _, _, _, info = env.step(action)
        sim.step(action[None])
        qpos, qvel = sim.get_state()
        np.testing.assert_array_equal(qpos[0], env.data.qpos)
        np.testing.assert_array_equal(qvel[0], env.data.qvel)
    env.close()


def test_set_state_gives_that_states_observation():
    family = metarobot.make_family("AntGoal")
    sim = metarobot.BatchSim(family, family.sample_tasks(3, seed=0))
    sim.reset()
    m = family.load_model()
    rng = np.random.default_rng(0)
    qpos, qvel = sim.get_state()
    qpos[1, :3] += rng.normal(size=3) * 0.1
    qvel[1] += rng.normal(size=m.nv)
    obs = sim.set_state(qpos[1:2], qvel[1:2], ids=[1])
    d = ref.make_data(m, qpos[1], qvel[1])
    np.testing.assert_allclose(obs[0], ref.observation("AntGoal", m, ref.derived(m, d)),
                               rtol=1e-6, atol=1e-6)
    after_q, after_v = sim.get_state()
    np.testing.assert_array_equal(after_q[1], qpos[1])
    np.testing.assert_array_equal(after_v[1], qvel[1])


def test_episode_truncates_at_horizon_and_autoresets():
    family = metarobot.make_family("HalfCheetahVel", horizon=5)
    sim = metarobot.BatchSim(family, family.sample_tasks(2, seed=0), seed=1)
    sim.reset()
    total = np.zeros(2)
    for t in range(5):
        obs, rew, term, trunc, info = sim.step(np.zeros((2, 6)))
        total += rew
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all()
    np.testing.assert_array_equal(info["episode_length"], [5, 5])
    np.testing.assert_allclose(info["episode_return"], total, rtol=1e-6)
    # the returned observation is the new episode's: near the initial pose, not the final one
    assert not np.allclose(obs, info["final_obs"])
    qpos, _ = sim.get_state()
    assert np.abs(qpos).max() < 0.1
    obs, rew, term, trunc, info = sim.step(np.zeros((2, 6)))
    assert not trunc.any() and not info["_final_obs"].any()


def test_ant_terminates_when_torso_leaves_health_range():
    family = metarobot.make_family("AntVel")
    sim = metarobot.BatchSim(family, family.sample_tasks(2, seed=0), seed=1)
    sim.reset()
    qpos, qvel = sim.get_state()
    qpos[0, 2] = 1.5  # torso above the health range: it ends after the next step
    sim.set_state(qpos, qvel)
    obs, rew, term, trunc, info = sim.step(np.zeros((2, 8)))
    assert term[0] and not term[1]
    assert info["_final_obs"][0] and not info["_final_obs"][1]
    assert info["final_obs"][0, 2] > 1.0
    assert not info["diverged"].any()


def test_ant_float64_actions_equal_gymnasium_ant_v5():
    """Gymnasium's ant (control range [-1, 1]) as AntVel's model, frame_skip 5, no keyframe:
    float64 actions map onto the range exactly (centre + a * half-range), so the chaotic ant
    stays equal to Ant-v5's to the bit for as long as it is healthy (235 steps here)."""
    family = metarobot.make_family("AntVel", model_file=gymnasium_asset("ant.xml"),
                                   frame_skip=5, init_keyframe=None, horizon=1000)
    sim = metarobot.BatchSim(family, [family.task(goal_velocity=1.0)], seed=0, autoreset=False)
    rng = np.random.default_rng(3)
    env = start_alike("Ant-v5", sim, rng)
    steps = 0
    for t in range(300):
        # float64 actions with full mantissas (uniform() draws on a 2^-53 grid, which
        # lo + (a + 1) / 2 * (hi - lo) happens to keep exact)
        action = np.clip(0.3 * rng.standard_normal(8), -1, 1)
        _, _, terminated, _, _ = env.step(action)
        _, _, sim_terminated, _, _ = sim.step(action[None])
        qpos, qvel = sim.get_state()
        np.testing.assert_array_equal(qpos[0], env.data.qpos)
        np.testing.assert_array_equal(qvel[0], env.data.qvel)
        assert bool(sim_terminated[0]) == terminated
        steps += 1
        if terminated:
            break
    assert steps >= 200  # the seed keeps the ant healthy for 235 steps
    env.close()


def test_action_mapping_is_exact_on_a_symmetric_range():
    ctrlrange = np.array([[-1.0, 1.0], [-150.0, 150.0], [0.0, 2.0]])
    a = np.random.default_rng(0).uniform(-1, 1, (1000, 3))
    u = metarobot.families.actions_to_controls(a, ctrlrange)
    np.testing.assert_array_equal(u[:, 0], a[:, 0])
    np.testing.assert_array_equal(u[:, 1], 150.0 * a[:, 1])
    np.testing.assert_allclose(u[:, 2], a[:, 2] + 1.0, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(metarobot.families.actions_to_controls(
        np.array([[-3.0, 3.0, 5.0]]), ctrlrange), [[-1.0, 150.0, 2.0]])
