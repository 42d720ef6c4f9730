"""The PPO baseline, algo ppo (domain randomisation with a learned value function): its
advantages against a plain loop that bootstraps at the horizon, its Adam against
torch.optim.Adam, its minibatch gradient against torch.autograd of a plain-torch PPO loss, a
run that resumes bit for bit and gives the same bits at any thread count and sharding, its
checkpoints read as policies, and the settings it refuses."""

import math

import numpy as np
import pytest
import torch

import metarobot
from metarobot import checkpoint, ppo
from metarobot.batch import Trajectories
from metarobot.config import PPO_STREAM, TrainConfig, make_policy, stream_seed
from metarobot.evaluation import adapt_to_task
from metarobot.runs import load_policy
from metarobot.samples import process
from metarobot.train import meta_iteration, train
from metarobot.workers import InProcessWorkers
from test_trpo_baseline import plain_mean


def small(**kw):
    base = dict(family="HalfCheetahVel", algo="ppo", family_overrides={"horizon": 20},
                iterations=2, meta_batch_size=3, trajectories_per_task=2, hidden_sizes=(8,),
                checkpoint_every=1, seed=2, threads=1, gae_lambda=0.9, ppo_epochs=2,
                ppo_minibatches=2)
    base.update(kw)
    return TrainConfig(**base)


def _bits(path):
    params, _ = checkpoint.load(path)
    return {k: v.numpy().tobytes() for k, v in params.items()}


# ------------------------------------------------------------- plain loops, not the package's

def plain_advantages(traj, value, gamma, lam):
    """GAE one simulation at a time: V of the next observation inside the episode, of the
    observation it was cut at after a truncated last step, nothing after a terminal one."""
    T, N = traj.valid.shape
    adv = np.zeros((T, N))
    for n in range(N):
        length = int(traj.lengths[n])
        a = 0.0
        for t in reversed(range(length)):
            if t + 1 < length:
                nxt = value(traj.observations[t + 1, n])
            elif traj.terminated[t, n]:
                nxt = 0.0
            else:
                nxt = value(traj.final_observations[n])
            delta = traj.rewards[t, n] + gamma * nxt - value(traj.observations[t, n])
            a = delta + gamma * lam * (a if t + 1 < length else 0.0)
            adv[t, n] = a
    return adv


def plain_mlp(params, obs, prefix=""):
    """The MLP of the entries under prefix (the policy's, or the value network's), written
    out as test_trpo_baseline's plain_mean."""
    return plain_mean({k[len(prefix):]: v for k, v in params.items()
                       if k.startswith(prefix + "layers.")}, obs)


def plain_ppo_loss(p, old, obs, critic_obs, actions, adv, mask, old_v, targets, clip, vcoef,
                   ecoef):
    """One task's PPO loss written out (rsl_rl's form), masked means over its samples."""
    n = mask.sum().clamp_min(1.0)

    def log_prob(q):
        z = (actions - plain_mlp(q, obs)) / torch.exp(q["log_std"])
        return (-0.5 * z ** 2 - q["log_std"] - 0.5 * math.log(2 * math.pi)).sum(-1)
    ratio = torch.exp(log_prob(p) - log_prob(old).detach())
    surr = -(torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv) * mask).sum() / n
    v = plain_mlp(p, critic_obs, ppo.VALUE_PREFIX)[:, 0]
    vc = old_v + (v - old_v).clamp(-clip, clip)
    vloss = (torch.max((v - targets) ** 2, (vc - targets) ** 2) * mask).sum() / n
    entropy = (p["log_std"] + 0.5 + 0.5 * math.log(2 * math.pi)).sum()
    return surr + vcoef * vloss - ecoef * entropy


# ----------------------------------------------------------------------------------- tests

def test_value_advantages_bootstrap_at_the_horizon_not_at_a_fall():
    rng = np.random.default_rng(0)
    T, N, D = 7, 4, 3
    lengths = np.array([7, 4, 7, 2], np.int32)
    valid = np.arange(T)[:, None] < lengths[None, :]
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[3, 1] = True      # a fall before the horizon
    truncated[6, 0] = True       # cut at the horizon
    terminated[6, 2] = True      # a fall at the last step
    truncated[1, 3] = True       # a short horizon's cut
    traj = Trajectories(
        observations=rng.standard_normal((T, N, D)).astype(np.float32),
        actions=rng.standard_normal((T, N, 2)).astype(np.float32),
        rewards=rng.standard_normal((T, N)).astype(np.float32), terminated=terminated,
        truncated=truncated, valid=valid,
        final_observations=rng.standard_normal((N, D)).astype(np.float32), lengths=lengths,
        diverged=np.zeros(N, bool), task_index=np.array([0, 0, 1, 1]), tasks=(None, None))
    weights = np.array([0.5, -1.0, 2.0])

    def value_fn(obs):
        return obs.astype(np.float64) @ weights

    def critic(t):
        return value_fn(t.observations), value_fn(t.final_observations), t.observations

    batch = process(traj, 2, 0.9, 0.8, normalize=False, value_fn=critic)
    want = plain_advantages(traj, lambda o: float(o.astype(np.float64) @ weights), 0.9, 0.8)
    values = np.where(valid, value_fn(traj.observations), 0.0)
    per_task = lambda x: np.moveaxis(x.reshape(T, 2, 2), 1, 0).reshape(2, T * 2)
    np.testing.assert_allclose(batch.advantages.numpy(), per_task(want * valid), atol=1e-5)
    np.testing.assert_allclose(batch.old_values.numpy(), per_task(values), atol=1e-5)
    np.testing.assert_allclose(batch.value_targets.numpy(), per_task((want + values) * valid),
                               atol=1e-5)
    assert batch.critic_obs.shape == (2, T * 2, D)
    # the truncated episode looked ahead to its cut observation, the fallen one did not
    assert want[6, 0] != pytest.approx(traj.rewards[6, 0] - value_fn(traj.observations[6, 0]))
    assert want[6, 2] == pytest.approx(traj.rewards[6, 2] - value_fn(traj.observations[6, 2]))


def test_adam_is_torch_optim_adam():
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(5, 3, generator=g), "b": torch.randn(4, generator=g)}
    leaves = [params["a"].clone().requires_grad_(True), params["b"].clone().requires_grad_(True)]
    opt = torch.optim.Adam(leaves, lr=3e-3)
    state = dict(params)
    for n in params:
        state[ppo.ADAM_M + n] = torch.zeros_like(params[n])
        state[ppo.ADAM_V + n] = torch.zeros_like(params[n])
    state[ppo.ADAM_STEP] = torch.zeros(1)
    for _ in range(4):
        grads = {"a": torch.randn(5, 3, generator=g), "b": torch.randn(4, generator=g)}
        for leaf, n in zip(leaves, ("a", "b")):
            leaf.grad = grads[n].clone()
        opt.step()
        state = ppo.adam_step(state, grads, ["a", "b"], 3e-3)
    for leaf, n in zip(leaves, ("a", "b")):
        torch.testing.assert_close(state[n], leaf.detach(), rtol=1e-6, atol=1e-7)
    assert float(state[ppo.ADAM_STEP]) == 4


def test_minibatch_gradient_is_autograd_of_the_plain_ppo_loss():
    """At parameters away from the sampling ones (so that ratios and values clip), the
    workers' minibatch gradient is the mean over tasks of the plain loss's autograd gradient,
    and its KL the plain mean KL; tasks' minibatches differ and cover their samples."""
    config = small(activation="relu", ppo_clip=0.1)
    family = metarobot.make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    theta.update(ppo.initial_state(policy, theta, 1e-3, 5,
                                   ppo.critic_dim(family, policy.obs_dim)))
    g = torch.Generator().manual_seed(1)
    p = {n: v + 0.3 * torch.randn(v.shape, generator=g) if n in ppo.trained_names(theta)
         else v for n, v in theta.items()}
    with InProcessWorkers(config, family, policy) as workers:
        workers.sample(theta, 0)
        post = workers.workers[0]._round["post"]
        grads, scalars = workers.ppo_gradient(p, 1, 1)
    names = ppo.trained_names(theta)
    leaves = {n: p[n].clone().requires_grad_(True) for n in names}
    total, kls = 0.0, []
    M, S = post.mask.shape
    for task in range(M):
        idx = ppo.minibatch_indices(S, 2, 1, stream_seed(config.seed, PPO_STREAM, 0, 1, task))
        assert len(idx) == S // 2
        sel = lambda x: x[task][idx]
        total = total + plain_ppo_loss(
            leaves, theta, sel(post.obs), sel(post.critic_obs), sel(post.actions),
            sel(post.advantages),
            sel(post.mask), sel(post.old_values), sel(post.value_targets), 0.1,
            config.ppo_value_coef, config.ppo_entropy_coef) / M
        with torch.no_grad():
            m0, m1 = plain_mlp(theta, sel(post.obs)), plain_mlp(p, sel(post.obs))
            s0, s1 = theta["log_std"], p["log_std"]
            kl = (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1))
                  - 0.5).sum(-1)
            kls.append(float((kl * sel(post.mask)).sum() / sel(post.mask).sum()))
    want = dict(zip(names, torch.autograd.grad(total, [leaves[n] for n in names])))
    for n in names:
        torch.testing.assert_close(grads[n], want[n], rtol=1e-4, atol=1e-6)
        assert grads[n].abs().sum() > 0, n
    for n in set(theta) - set(names):  # the optimiser's state has no gradient
        assert torch.count_nonzero(grads[n]) == 0
    assert float(scalars[0]) == pytest.approx(float(total.detach()), rel=1e-5)
    assert float(scalars[1]) == pytest.approx(np.mean(kls), rel=1e-4)
    a = ppo.minibatch_indices(S, 2, 0, 11)
    b = ppo.minibatch_indices(S, 2, 1, 11)
    assert len(set(a.tolist()) | set(b.tolist())) == 2 * (S // 2)  # disjoint parts


def test_ppo_trains_resumes_bit_for_bit_at_any_thread_count_and_sharding(tmp_path):
    full = train(small(iterations=3), tmp_path / "full", progress=False)
    train(small(iterations=2), tmp_path / "part", progress=False)
    resumed = train(small(iterations=3), tmp_path / "part", resume=True, progress=False)
    assert _bits(resumed) == _bits(full)
    params, info = checkpoint.load(full)
    assert float(params[ppo.ADAM_STEP]) == 3 * 2 * 2  # iterations x epochs x minibatches
    assert float(params[ppo.STEP_SIZE]) != 1e-3  # adapted to the KL
    config = small(iterations=1, meta_batch_size=4, trajectories_per_task=3, chunk_samples=60,
                   hidden_sizes=(64, 64))
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = _bits(train(dataclass_replace(config, threads=threads),
                                        tmp_path / f"t{threads}", progress=False))
    finally:
        torch.set_num_threads(before)
    assert runs[1] == runs[2]
    family = metarobot.make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: v.detach().clone() for n, v in policy.params().items()}
    theta.update(ppo.initial_state(policy, theta, config.ppo_lr, 3,
                                   ppo.critic_dim(family, policy.obs_dim)))
    news = []
    for shards in (1, 2):
        with InProcessWorkers(config, family, policy, shards=shards) as workers:
            news.append(meta_iteration(config, family, policy, theta, 0, workers=workers)[0])
    for n in theta:
        assert torch.equal(news[0][n], news[1][n]), n
    assert any(not torch.equal(news[0][n], theta[n]) for n in ppo.trained_names(theta))


def dataclass_replace(config, **kw):
    import dataclasses
    return dataclasses.replace(config, **kw)


def test_a_ppo_checkpoint_is_a_policy_and_its_learner_state_stays_behind(tmp_path):
    path = train(small(iterations=1), tmp_path / "run", progress=False)
    params, _ = checkpoint.load(path)
    assert any(n.startswith(ppo.VALUE_PREFIX) for n in params)
    loaded = load_policy(path)
    assert set(loaded.policy.params()) == {n for n in params if not ppo.is_learner_state(n)}
    assert loaded.step_sizes is None
    for n, v in loaded.policy.params().items():
        assert torch.equal(v.detach(), params[n])
    adapted, returns = adapt_to_task(path, {"goal_velocity": 1.0}, steps=1, trajectories=2,
                                     seed=0, threads=1)
    assert set(adapted) == set(loaded.policy.params()) and len(returns) == 2
    # meta-training may start from it: the policy is taken, the learner state is not
    run = train(TrainConfig(family="HalfCheetahVel", family_overrides={"horizon": 20},
                            iterations=1, meta_batch_size=2, trajectories_per_task=2,
                            hidden_sizes=(8,), threads=1, init=str(path)),
                tmp_path / "maml", progress=False)
    assert not any(ppo.is_learner_state(n) for n in checkpoint.load(run)[0])


@pytest.mark.parametrize("setting,value", [("inner_steps", 2), ("learn_inner_lr", True),
                                           ("reptile_epsilon", 0.5)])
def test_ppo_refuses_the_settings_of_meta_training(setting, value):
    with pytest.raises(ValueError, match=f"algo 'ppo'.*{setting}"):
        small(**{setting: value})


@pytest.mark.parametrize("setting,value", [("ppo_epochs", 0), ("ppo_clip", 0.0),
                                           ("ppo_lr", -1.0), ("ppo_desired_kl", 0.0)])
def test_ppo_settings_out_of_range_are_refused(setting, value):
    with pytest.raises(ValueError, match=setting):
        small(**{setting: value})


def test_the_critic_sees_the_metrics_of_the_step_before_and_the_scaled_task():
    """critic_features on a Go2Walk rollout: the observation, then the tracking errors
    measured after the previous step (zero at the first), then the hidden parameters scaled
    to [-1, 1] over their ranges; at the final observation, the last step's metrics."""
    family = metarobot.make_family("Go2Walk", horizon=6)
    tasks = family.sample_tasks(2, 3)
    from metarobot.batch import BatchSim
    from metarobot.policy import GaussianMLPPolicy
    sim = BatchSim(family, tasks, 2, seed=1, num_threads=1)
    policy = GaussianMLPPolicy(sim.observation_dim, family.load_model().nu, (8,))
    traj = sim.rollout(policy)
    feats, final = ppo.critic_features(traj, family)
    D, K, P = sim.observation_dim, len(family.metrics), len(family.parameter_names)
    assert feats.shape == (6, 4, ppo.critic_dim(family, D)) == (6, 4, D + K + P)
    np.testing.assert_array_equal(feats[..., :D], traj.observations)
    assert np.all(feats[0, :, D:D + K] == 0)
    np.testing.assert_array_equal(feats[1:, :, D:D + K], traj.metrics[:-1])
    last = traj.lengths - 1
    np.testing.assert_array_equal(final[:, D:D + K], traj.metrics[last, np.arange(4)])
    payload = family.parameter_names.index("payload")  # U[0, 3] kg -> [-1, 1]
    for n in range(4):
        want = tasks[traj.task_index[n]]["payload"] / 1.5 - 1.0
        assert feats[3, n, D + K + payload] == pytest.approx(want, abs=1e-6)
    assert np.all(np.abs(feats[..., D + K:]) <= 1.0 + 1e-6)
