"""Same seed, same bits: at any thread count and any split into tasks x envs_per_task."""

import numpy as np
import pytest

import metarobot

FIELDS = ["observations", "actions", "rewards", "terminated", "truncated", "valid",
          "final_observations", "lengths", "diverged"]


def _rollout(name, tasks, envs_per_task, threads, seed=0):
    family = metarobot.make_family(name, horizon=80)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=envs_per_task, seed=seed,
                             num_threads=threads)
    import torch
    torch.manual_seed(0)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    return sim.rollout(policy)


def _assert_same(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntVel"])
def test_rollout_bit_identical_across_thread_counts(name):
    tasks = metarobot.make_family(name).sample_tasks(3, seed=0)
    runs = [_rollout(name, tasks, 3, threads) for threads in (1, 2, 4)]
    _assert_same(runs[0], runs[1])
    _assert_same(runs[0], runs[2])


def test_rollout_bit_identical_across_task_splits():
    a, b = metarobot.make_family("AntDir").sample_tasks(2, seed=3)
    split = _rollout("AntDir", [a, b], 2, 2)
    flat = _rollout("AntDir", [a, a, b, b], 1, 1)
    _assert_same(split, flat)


def test_different_seeds_differ():
    tasks = metarobot.make_family("HalfCheetahDir").sample_tasks(2, seed=0)
    a = _rollout("HalfCheetahDir", tasks, 2, 2, seed=0)
    b = _rollout("HalfCheetahDir", tasks, 2, 2, seed=1)
    assert not np.array_equal(a.observations, b.observations)


def test_step_bit_identical_across_thread_counts_and_reseed():
    family = metarobot.make_family("AntGoal", horizon=15)
    tasks = family.sample_tasks(4, seed=2)
    actions = 30 * np.random.default_rng(0).standard_normal((40, 8, 8))
    results = []
    for threads in (1, 2, 3):
        sim = metarobot.BatchSim(family, tasks, envs_per_task=2, num_threads=threads, seed=9)
        out = [sim.reset()]
        for a in actions:  # crosses two auto-resets
            obs, rew, term, trunc, info = sim.step(a)
            out += [obs, rew, term, trunc, info["final_obs"]]
        out.append(sim.reset(seed=9))  # reseeding restarts the streams
        results.append(out)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(results[0][0], results[0][-1])
