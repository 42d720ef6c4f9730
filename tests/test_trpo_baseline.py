"""The non-meta baseline, algo trpo (domain randomisation): one policy trained by TRPO on tasks
of the whole family, on the meta-learners' engine. Its gradient and Fisher products against a
plain-torch surrogate and KL of the same batch, its step against trpo_step on those, a run that
resumes bit for bit, the same bits at any thread count and sharding, its checkpoints adapted
as MAML's are, and the settings it refuses."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import metarobot
from metarobot import checkpoint, cli, meta, trpo
from metarobot.batch import BatchSim
from metarobot.config import TRAIN_STREAM, TrainConfig, make_policy, stream_seed
from metarobot.deploy.controller import Controller
from metarobot.evaluation import adapt_to_task, evaluate
from metarobot.samples import chunk_ranges, process
from metarobot.train import meta_iteration, train
from metarobot.workers import InProcessWorkers


def small(**kw):
    base = dict(family="HalfCheetahVel", algo="trpo", family_overrides={"horizon": 20},
                iterations=2, meta_batch_size=3, trajectories_per_task=2, hidden_sizes=(8,),
                checkpoint_every=1, seed=2, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def start(config):
    family = metarobot.make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    return family, policy, theta


# ------------------------------------------------------------- plain torch, not the package's

def plain_mean(theta, obs):
    """The policy's mean action, (S, act_dim), written out: linear layers with ReLU between."""
    layers = sum(1 for n in theta if n.endswith(".weight"))
    h = obs
    for i in range(layers):
        h = h @ theta[f"layers.{i}.weight"].T + theta[f"layers.{i}.bias"]
        if i + 1 < layers:
            h = torch.relu(h)
    return h


def plain_log_prob(theta, obs, actions):
    """log N(actions; mean, exp(log_std)^2) summed over action dimensions, (S,)."""
    log_std = theta["log_std"]
    z = (actions - plain_mean(theta, obs)) / torch.exp(log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def plain_surrogate(theta, old, batch):
    """TRPO's surrogate loss of the batch sampled by old: per task the masked mean of
    -pi_theta(a|s) / pi_old(a|s) * A, then the mean over tasks (every task weighs 1 / M)."""
    losses = []
    for i in range(batch.mask.shape[0]):
        with torch.no_grad():
            old_lp = plain_log_prob(old, batch.obs[i], batch.actions[i])
        ratio = torch.exp(plain_log_prob(theta, batch.obs[i], batch.actions[i]) - old_lp)
        m = batch.mask[i]
        losses.append(-(ratio * batch.advantages[i] * m).sum() / m.sum())
    return torch.stack(losses).mean()


def plain_kl(theta, old, batch):
    """Mean over tasks of the masked mean KL(pi_old(.|s) || pi_theta(.|s)) of diagonal
    Gaussians."""
    kls = []
    for i in range(batch.mask.shape[0]):
        obs, m = batch.obs[i], batch.mask[i]
        with torch.no_grad():
            mu0, ls0 = plain_mean(old, obs), old["log_std"]
        mu1, ls1 = plain_mean(theta, obs), theta["log_std"]
        kl = (ls1 - ls0 + (torch.exp(2 * ls0) + (mu0 - mu1) ** 2) / (2 * torch.exp(2 * ls1))
              - 0.5).sum(-1)
        kls.append((kl * m).sum() / m.sum())
    return torch.stack(kls).mean()


def plain_batch(config, family, policy, iteration):
    """The iteration's batch sampled anew with the policy's own parameters: its tasks and
    simulations from the run's seed streams, advantages with the linear baseline."""
    tasks = family.sample_tasks(config.meta_batch_size,
                                stream_seed(config.seed, TRAIN_STREAM, iteration, 0))
    sim = BatchSim(family, tasks, config.trajectories, num_threads=1,
                   seed=stream_seed(config.seed, TRAIN_STREAM, iteration, 1))
    return process(sim.rollout(policy), len(tasks), config.gamma, config.gae_lambda)


def test_trpo_gradient_fisher_and_step_are_those_of_the_plain_surrogate():
    """The workers' gradient and Fisher-vector products for trpo are torch.autograd's of the
    plain surrogate and mean KL of the batch sampled with theta (no adaptation, no
    second-order terms), summed over chunks of one task each; its iteration is trpo_step on
    them."""
    config = small()
    family, policy, theta = start(config)
    assert len(chunk_ranges(3, 40, config.chunk_samples)) == 3  # one chunk per task
    batch = plain_batch(config, family, policy, 0)
    leaves = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    names = sorted(theta)
    loss = plain_surrogate(leaves, theta, batch)
    want_grad = dict(zip(names, torch.autograd.grad(loss, [leaves[n] for n in names])))
    loss = float(loss)
    v = {n: torch.randn(theta[n].shape, generator=torch.Generator().manual_seed(i))
         for i, n in enumerate(names)}
    kl_grad = torch.autograd.grad(plain_kl(leaves, theta, batch), [leaves[n] for n in names],
                                  create_graph=True)
    want_fisher = dict(zip(names, torch.autograd.grad(
        sum((g * v[n]).sum() for g, n in zip(kl_grad, names)), [leaves[n] for n in names])))

    with InProcessWorkers(config, family, policy) as workers:
        sampled = workers.sample(theta, 0)
        # one batch, sampled with theta: the log's return after "adaptation" is the same
        assert torch.equal(sampled.pre_returns, batch.returns)
        assert torch.equal(sampled.post_returns, sampled.pre_returns)
        grad, value = workers.gradient(theta)
        fisher = workers.fisher_product(v)
        loss_at, kl_at = workers.loss_kl(theta)
    assert float(sum(g.abs().sum() for g in want_grad.values())) > 1e-2
    for n in names:
        torch.testing.assert_close(grad[n], want_grad[n], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fisher[n], want_fisher[n], rtol=1e-4, atol=1e-6)
    assert float(value) == pytest.approx(loss, abs=1e-6)
    assert float(loss_at) == pytest.approx(loss, abs=1e-6)
    assert float(kl_at) == pytest.approx(0.0, abs=1e-10)  # theta is the sampling policy

    # the iteration: TRPO's step (CG on the KL's Hessian, the KL bound, the line search) on
    # the plain functions of the same batch
    new, result = meta_iteration(config, family, policy, theta, 0)
    want, info = trpo.trpo_step(theta, lambda p: plain_surrogate(p, theta, batch),
                                lambda p: plain_kl(p, theta, batch), config.kl_bound,
                                config.cg_iters, config.cg_damping,
                                max_backtracks=config.max_backtracks)
    assert result.info["accepted"] == 1.0 and info.accepted
    assert result.info["backtracks"] == info.backtracks
    assert result.pre_return == result.post_return == float(batch.returns.mean())
    assert result.times["inner"] == 0.0  # no adaptation step
    for n in names:
        step = float((want[n] - theta[n]).abs().max())
        assert step > 0
        torch.testing.assert_close(new[n], want[n], rtol=0, atol=1e-3 * step + 1e-7)
    assert result.info["kl"] == pytest.approx(info.kl, rel=1e-3)


def _bits(path):
    params, _ = checkpoint.load(path)
    return {k: v.numpy().tobytes() for k, v in params.items()}


def _rows(run):
    with open(Path(run) / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_trpo_trains_logs_and_resumes_as_the_uninterrupted_run(tmp_path):
    full = train(small(iterations=3), tmp_path / "full", progress=False)
    train(small(iterations=2), tmp_path / "part", progress=False)
    rows = _rows(tmp_path / "part")
    assert [int(r["iteration"]) for r in rows] == [0, 1]
    for r in rows:  # no adaptation in training: the post-update column is the pre-update one
        assert r["post_return"] == r["pre_return"] and float(r["time_inner"]) == 0.0
        assert float(r["kl"]) > 0
    assert (tmp_path / "part" / "checkpoints" / "iter_000002.safetensors").exists()
    resumed = train(small(iterations=3), tmp_path / "part", resume=True, progress=False)
    assert _bits(resumed) == _bits(full)
    params, info = checkpoint.load(resumed)
    assert info["iteration"] == 2 and info["config"]["algo"] == "trpo"
    fresh = start(small())[2]
    assert any(not torch.equal(params[n], fresh[n]) for n in fresh)  # it trained
    strip = lambda rs: [(r["iteration"], r["pre_return"], r["post_return"]) for r in rs]
    assert strip(_rows(tmp_path / "part")) == strip(_rows(tmp_path / "full"))
    assert len(_rows(tmp_path / "part")) == 3
    # the same from the command line, a flag of meta-training refused before any work
    run = tmp_path / "cli"
    assert cli.main(["train", "--family", "HalfCheetahVel", "--algo", "trpo", "--iterations",
                     "1", "--meta-batch-size", "2", "--trajectories-per-task", "2",
                     "--hidden-sizes", "8", "--set", "horizon=15", "--out", str(run),
                     "--quiet"]) == 0
    assert checkpoint.load(run)[1]["config"]["algo"] == "trpo"
    assert cli.main(["train", "--out", str(run), "--resume", "--iterations", "2",
                     "--quiet"]) == 0
    assert checkpoint.load(run)[1]["iteration"] == 1


def test_trpo_gives_the_same_bits_at_any_thread_count_and_sharding(tmp_path):
    """Two iterations with torch's threads and the chunk executors at 1 and at 2 end with the
    same bits; an iteration over two shards (the cluster's split, in one process) is the
    one-shard iteration bit for bit."""
    # a policy large enough that torch splits its products over 2 threads
    config = dict(meta_batch_size=4, trajectories_per_task=3, chunk_samples=60,
                  hidden_sizes=(64, 64))
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = _bits(train(small(threads=threads, **config),
                                        tmp_path / f"t{threads}", progress=False))
    finally:
        torch.set_num_threads(before)
    assert runs[1] == runs[2]
    one = small(threads=2, **config)
    family, policy, theta = start(one)
    news = []
    for shards in (1, 2):
        with InProcessWorkers(one, family, policy, shards=shards) as workers:
            news.append(meta_iteration(one, family, policy, theta, 0, workers=workers)[0])
    for n in theta:
        assert torch.equal(news[0][n], news[1][n]), n


def test_a_trpo_checkpoint_is_adapted_with_mamls_step_sizes(tmp_path, monkeypatch):
    """evaluate, adapt and the robot's controller adapt a trpo checkpoint with the one rule:
    its inner_lr at the first step, half of it after (a given lr overrides), and the
    adaptation moves the returns."""
    path = train(small(iterations=1, inner_lr=0.05), tmp_path / "run", progress=False)
    seen = []
    step = meta.InnerUpdate.step

    def spy(self, spec, params, batch, lr, batched, objective="pg"):
        seen.append(float(lr))
        return step(self, spec, params, batch, lr, batched, objective)
    monkeypatch.setattr(meta.InnerUpdate, "step", spy)
    result = evaluate(path, tasks=1, steps=2, trajectories=2, threads=1)
    assert seen == [0.05, 0.025] and result["step_sizes"] == [0.05, 0.025]
    before, one, two = result["mean_return"]
    assert one != before and two != one
    seen.clear()
    adapt_to_task(path, {"goal_velocity": 1.0}, steps=2, trajectories=2, threads=1)
    assert seen == [0.05, 0.025]
    seen.clear()
    adapt_to_task(path, {"goal_velocity": 1.0}, steps=2, trajectories=2, threads=1, lr=0.3)
    assert seen == [0.3, 0.3]
    controller = Controller.from_checkpoint(path)
    assert [controller.step_size(j) for j in range(3)] == [0.05, 0.025, 0.025]


@pytest.mark.parametrize("setting, value", [
    ("learn_inner_lr", True), ("inner_objective", "lvc"), ("inner_update", "clipped"),
    ("inner_steps", 2), ("inner_epochs", 2), ("inner_clip", 0.3), ("reptile_epsilon", 0.2),
    ("reptile_epsilon_final", 0.01), ("reptile_anneal_iterations", 50)])
def test_trpo_refuses_the_settings_of_meta_training(setting, value):
    with pytest.raises(ValueError) as refused:
        TrainConfig(algo="trpo", **{setting: value})
    message = str(refused.value)
    assert "algo 'trpo' trains one policy without adapting it" in message
    default = TrainConfig.__dataclass_fields__[setting].default
    assert f"{setting} (" in message and f"should be its default {default!r}, got {value!r}" \
        in message


def test_trpo_settings_and_the_command_line(tmp_path, capsys):
    config = TrainConfig(algo="trpo", inner_lr=0.05, hessian="finite-difference",
                         fisher_fraction=0.5)
    assert config.train_inner_steps == 0 and config.inner_rule == meta.InnerUpdate()
    assert TrainConfig(inner_steps=2).train_inner_steps == 2  # the meta-learners adapt
    out = tmp_path / "refused"
    assert cli.main(["train", "--algo", "trpo", "--learn-inner-lr", "true", "--out", str(out),
                     "--quiet"]) == 2
    assert "learn_inner_lr (Meta-SGD" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "trpo: no meta-learning, one policy trained by TRPO" in help_text
    assert "domain randomisation" in help_text


def test_meta_training_starts_from_a_domain_randomised_policy(tmp_path):
    """--init: a maml-trpo run whose first parameters are a trpo run's policy; a run of other
    layer sizes is refused before anything is written."""
    from metarobot.cli import main
    from metarobot.runs import load_policy
    small = ["--family", "HalfCheetahVel", "--iterations", "1", "--meta-batch-size", "2",
             "--trajectories-per-task", "2", "--set", "horizon=20", "--hidden-sizes", "8",
             "--quiet"]
    dr = tmp_path / "dr"
    assert main(["train", "--algo", "trpo", *small, "--out", str(dr)]) == 0
    meta_run = tmp_path / "meta"
    assert main(["train", "--algo", "maml-trpo", *small, "--init", str(dr),
                 "--out", str(meta_run)]) == 0
    start = {n: p.detach() for n, p in load_policy(dr).policy.params().items()}
    assert json.loads((meta_run / "config.json").read_text())["init"] == str(dr)
    # one meta-iteration moved the parameters from the domain-randomised ones, by a TRPO step
    after = {n: p.detach() for n, p in load_policy(meta_run).policy.params().items()}
    moved = sum(float((after[n] - start[n]).pow(2).sum()) for n in start)
    assert 0 < moved < 1.0
    fresh = tmp_path / "fresh"
    assert main(["train", "--algo", "maml-trpo", *small, "--seed", "3",
                 "--out", str(fresh)]) == 0
    other = load_policy(fresh).policy.params()
    far = sum(float((other[n].detach() - start[n]).pow(2).sum()) for n in start)
    assert far > 10 * moved  # without --init, a run starts elsewhere
    bad = tmp_path / "bad"
    assert main(["train", "--algo", "maml-trpo", *small, "--hidden-sizes", "16", "--init",
                 str(dr), "--out", str(bad)]) == 2
    assert not bad.exists()
