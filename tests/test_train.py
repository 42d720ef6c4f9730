"""Training, checkpoints, resume, evaluation and the train/evaluate/adapt commands, on budgets of
seconds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metarobot
from metarobot import checkpoint, cli
from metarobot.config import TrainConfig
from metarobot.evaluation import evaluate
from metarobot.runs import load_policy
from metarobot.train import train


def tiny(**kw):
    base = dict(family="HalfCheetahDir", family_overrides={"horizon": 20}, iterations=3,
                meta_batch_size=2, trajectories_per_task=2, hidden_sizes=(8,),
                checkpoint_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def rows(path):
    return (Path(path) / "progress.csv").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("algo, baseline, extra",
                         [("maml-trpo", "current", {}), ("fomaml-trpo", "current", {}),
                          ("reptile", "current", {}), ("maml-trpo", "previous", {}),
                          ("maml-trpo", "fresh", {}), ("maml-trpo", "current",
                                                       {"learn_inner_lr": True}),
                          ("maml-trpo", "current", {"hessian": "finite-difference"})])
def test_resume_gives_the_uninterrupted_run(tmp_path, algo, baseline, extra):
    full = train(tiny(algo=algo, baseline_fit=baseline, **extra), tmp_path / "full",
                 progress=False)
    train(tiny(algo=algo, iterations=2, baseline_fit=baseline, **extra), tmp_path / "part",
          progress=False)
    resumed = train(tiny(algo=algo, iterations=3, baseline_fit=baseline, **extra),
                    tmp_path / "part", resume=True, progress=False)
    a, info_a = checkpoint.load(full)
    b, info_b = checkpoint.load(resumed)
    assert info_a["iteration"] == info_b["iteration"] == 2
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    strip = lambda r: [line.rsplit(",", 9)[0].split(",")[:3] for line in r]
    assert strip(rows(tmp_path / "full")) == strip(rows(tmp_path / "part"))
    assert len(rows(tmp_path / "part")) == 4  # header + 3 iterations
    assert (tmp_path / "full" / "checkpoints" / "iter_000003.safetensors").exists()


def test_training_moves_the_parameters_and_logs(tmp_path):
    run = tmp_path / "run"
    train(tiny(iterations=2), run, progress=False)
    loaded = load_policy(run)
    policy, config, family, info = loaded.policy, loaded.config, loaded.family, loaded.info
    assert config.family == "HalfCheetahDir" and info["iteration"] == 1
    fresh = metarobot.config.make_policy(config, family)
    moved = sum(float((p - fresh.params()[n]).abs().sum()) for n, p in policy.params().items())
    assert moved > 0
    header = rows(run)[0].split(",")
    assert {"pre_return", "post_return", "time_sampling", "time_outer", "kl"} <= set(header)
    assert list((run / "tensorboard").glob("events.*"))
    assert json.loads((run / "config.json").read_text())["meta_batch_size"] == 2


def test_existing_run_is_not_overwritten(tmp_path):
    train(tiny(iterations=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(iterations=1), tmp_path, progress=False)


def test_bad_checkpoints_raise(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.load(bad)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a metarobot checkpoint"):
        checkpoint.load(foreign)
    run = tmp_path / "run"
    train(tiny(iterations=1), run, progress=False)
    with pytest.raises(ValueError, match="checkpoint of HalfCheetahDir, not AntDir"):
        load_policy(run, family="AntDir")
    params, info = checkpoint.load(run)
    params["layers.0.weight"] = torch.zeros(3, 3)
    checkpoint.save(tmp_path / "reshaped.safetensors", params, info)
    with pytest.raises(ValueError, match="layers.0.weight has shape"):
        load_policy(tmp_path / "reshaped.safetensors")


def test_bad_config_raises():
    with pytest.raises(ValueError, match="algo"):
        TrainConfig(algo="sgd")
    with pytest.raises(ValueError, match="inner_lr"):
        TrainConfig(inner_lr=-1.0)
    with pytest.raises(ValueError, match="meta_batch_size"):
        TrainConfig(meta_batch_size=0)
    with pytest.raises(ValueError, match="unknown task family"):
        TrainConfig(family="Nope")
    with pytest.raises(ValueError, match="inner_objective should be one of"):
        TrainConfig(inner_objective="dice")
    with pytest.raises(ValueError, match="reptile"):
        TrainConfig(algo="reptile", learn_inner_lr=True)
    with pytest.raises(ValueError, match="needs maml-trpo, not fomaml-trpo"):
        TrainConfig(algo="fomaml-trpo", inner_objective="lvc")
    with pytest.raises(ValueError, match="learn_inner_lr"):
        TrainConfig(learn_inner_lr="yes")
    with pytest.raises(ValueError, match="hessian should be one of"):
        TrainConfig(hessian="perlmutter")


def test_reptile_outer_step_size_anneals_and_resumes_with_its_schedule():
    config = TrainConfig(algo="reptile", iterations=10, reptile_epsilon=1.0,
                         reptile_epsilon_final=0.0)
    assert config.reptile_anneal_iterations == 10  # fixed now, kept by a resumed run
    assert [config.epsilon_at(i) for i in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    longer = TrainConfig.from_dict(dict(config.to_dict(), iterations=40))
    assert longer.epsilon_at(5) == 0.5
    assert TrainConfig(algo="reptile", reptile_epsilon=0.3).epsilon_at(99) == 0.3
    with pytest.raises(ValueError, match="needs reptile, not maml-trpo"):
        TrainConfig(inner_update="clipped")


def test_reptile_with_the_clipped_update_trains_and_evaluates_with_it(tmp_path, monkeypatch):
    """A Reptile checkpoint adapts with its own inner update (the clipped one, at its training
    step size) in evaluate, as in training."""
    from metarobot import meta
    config = TrainConfig(family="HalfCheetahVel", algo="reptile", inner_update="clipped",
                         inner_epochs=3, inner_lr=0.02, meta_batch_size=2,
                         trajectories_per_task=2, iterations=1, threads=1,
                         family_overrides={"horizon": 20})
    path = train(config, tmp_path / "run", progress=False)
    seen = []
    step = meta.InnerUpdate.step

    def spy(self, spec, params, batch, lr, batched, objective="pg"):
        seen.append((self, lr))
        return step(self, spec, params, batch, lr, batched, objective)
    monkeypatch.setattr(meta.InnerUpdate, "step", spy)
    result = evaluate(path, tasks=2, steps=2, trajectories=2, threads=1)
    # every step (2) of every task chunk (one per task) with the clipped update of 0.02
    assert seen == [(meta.InnerUpdate("clipped", 3, 0.2), 0.02)] * 4
    assert result["step_sizes"] == [0.02]


def test_evaluate_writes_json_and_plot(tmp_path):
    run = tmp_path / "run"
    train(tiny(iterations=1), run, progress=False)
    result = evaluate(run, tasks=3, steps=2, trajectories=2, json_path=tmp_path / "e.json",
                      plot_path=tmp_path / "e.png")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["steps"] == [0, 1, 2] and len(saved["mean_return"]) == 3
    assert len(saved["stderr"]) == 3 and all(np.isfinite(saved["stderr"]))
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert len(result["held_out_tasks"]) == 3
    assert saved["baseline_fit"] == "current"  # the checkpoint's training order
    fresh = evaluate(run, tasks=3, steps=1, trajectories=2, baseline_fit="fresh")
    assert fresh["baseline_fit"] == "fresh"
    # the same rollouts before adapting; the first step's advantages differ, so its returns do
    assert fresh["mean_return"][0] == result["mean_return"][0]
    assert fresh["mean_return"][1] != result["mean_return"][1]
    with pytest.raises(ValueError, match="baseline_fit should be one of"):
        evaluate(run, tasks=3, steps=1, trajectories=2, baseline_fit="bogus")


def test_held_out_tasks_come_from_a_stream_training_never_draws(tmp_path, monkeypatch):
    """The seeds that training draws its tasks from and the one evaluate draws its held-out
    tasks from, recorded as the code uses them: evaluation's is the EVAL stream's, and no
    iteration of training (nor of a run with another seed) draws from it."""
    from metarobot.config import EVAL_STREAM, TRAIN_STREAM, stream_seed
    from metarobot.families import TaskFamily
    seen = []
    draw = TaskFamily.sample_tasks

    def spy(self, n, seed):
        seen.append(seed)
        return draw(self, n, seed)
    monkeypatch.setattr(TaskFamily, "sample_tasks", spy)
    run = tmp_path / "run"
    train(tiny(iterations=2), run, progress=False)
    trained = set(seen)
    assert trained == {stream_seed(3, TRAIN_STREAM, it, 0) for it in range(2)}  # tiny's seed
    seen.clear()
    evaluate(run, tasks=2, steps=0, trajectories=1)
    assert seen == [stream_seed(0, EVAL_STREAM, 0)]
    every_training_seed = {stream_seed(s, TRAIN_STREAM, it, k) for s in range(4)
                           for it in range(2000) for k in range(2)}
    assert seen[0] not in every_training_seed


@pytest.mark.slow
def test_cli_train_evaluate_adapt(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--family", "HalfCheetahVel", "--iterations", "1",
                     "--meta-batch-size", "2", "--trajectories-per-task", "2",
                     "--hidden-sizes", "8", "--set", "horizon=15", "--out", str(run),
                     "--quiet"]) == 0
    assert cli.main(["train", "--out", str(run), "--resume", "--iterations", "2",
                     "--quiet"]) == 0
    assert checkpoint.load(run)[1]["iteration"] == 1
    # a resumed run keeps its settings: a flag asking for others is refused, naming both
    capsys.readouterr()
    assert cli.main(["train", "--out", str(run), "--resume", "--iterations", "3",
                     "--inner-lr", "0.5", "--hidden-sizes", "8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--inner-lr 0.5 (the run has 0.1)" in err and "hidden" not in err
    assert checkpoint.load(run)[1]["iteration"] == 1
    assert cli.main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--trajectories",
                     "2", "--json", str(tmp_path / "e.json")]) == 0
    assert "1 steps:" in capsys.readouterr().out
    out = tmp_path / "adapted.safetensors"
    assert cli.main(["adapt", str(run), "--task", '{"goal_velocity": 1.5}', "--trajectories",
                     "2", "--out", str(out)]) == 0
    params, info = checkpoint.load(out)
    assert info["adapted_to"] == {"goal_velocity": 1.5}
    # Meta-SGD from the command line; a flag that is not a boolean is refused
    assert cli.main(["train", "--family", "HalfCheetahVel", "--iterations", "1",
                     "--meta-batch-size", "2", "--trajectories-per-task", "2",
                     "--hidden-sizes", "8", "--set", "horizon=15", "--learn-inner-lr", "true",
                     "--out", str(tmp_path / "sgd"), "--quiet"]) == 0
    assert json.loads((tmp_path / "sgd" / "config.json").read_text())["learn_inner_lr"] is True
    assert any(k.startswith("inner_lr/") for k in checkpoint.load(tmp_path / "sgd")[0])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["train", "--learn-inner-lr", "maybe", "--out", str(tmp_path / "x")])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
    assert cli.main(["adapt", str(run), "--task", '{"direction": 1}']) == 2
    assert "goal_velocity" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_killed_training_leaves_a_whole_checkpoint(tmp_path):
    code = ("import sys; from metarobot.config import TrainConfig\n"
            "from metarobot.train import train\n"
            "train(TrainConfig(family='HalfCheetahDir', family_overrides={'horizon': 20},"
            " iterations=1000, meta_batch_size=2, trajectories_per_task=2, hidden_sizes=(8,),"
            " checkpoint_every=1), sys.argv[1], progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    latest = tmp_path / "checkpoints" / "latest.safetensors"
    # only a guard against hanging: the machine may be busy (each iteration takes well under
    # a second alone; importing torch and MuJoCo under load can take a minute)
    deadline = time.time() + 600
    try:
        while not (latest.exists() and len(list(latest.parent.glob("iter_*"))) >= 3):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:  # killed here as in the test, or left over if it failed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    params, info = checkpoint.load(latest)
    assert info["iteration"] >= 2


@pytest.mark.slow
@pytest.mark.parametrize("family", metarobot.list_families())
def test_every_family_meta_trains(tmp_path, family):
    config = TrainConfig(family=family, family_overrides={"horizon": 15}, iterations=1,
                         meta_batch_size=2, trajectories_per_task=2, hidden_sizes=(8,))
    path = train(config, tmp_path, progress=False)
    params, info = checkpoint.load(path)
    assert info["config"]["family"] == family
    assert all(torch.isfinite(p).all() for p in params.values())


@pytest.mark.slow
@pytest.mark.parametrize("algo, inner_steps", [("maml-trpo", 1), ("maml-trpo", 2),
                                               ("fomaml-trpo", 1)])
def test_outer_step_in_chunks_of_tasks_equals_all_tasks_at_once(algo, inner_steps,
                                                                 monkeypatch):
    """Other chunks, other sums: the same up to rounding."""
    from metarobot import samples
    from metarobot.config import make_policy
    from metarobot.sharding import chunk_bounds
    from metarobot.train import meta_iteration
    monkeypatch.setattr(samples, "MIN_CHUNKS", 1)  # let chunk_samples alone set the chunks
    results = []
    for chunk in (10 ** 9, 40, 80):  # all 5 tasks at once; 1 task (40 samples); 2 tasks
        config = tiny(algo=algo, inner_steps=inner_steps, meta_batch_size=5,
                      chunk_samples=chunk)
        family = metarobot.make_family(config.family, **config.family_overrides)
        assert len(chunk_bounds(config, family)) == {10 ** 9: 1, 40: 5, 80: 3}[chunk]
        policy = make_policy(config, family)
        theta = {n: p.detach().clone() for n, p in policy.params().items()}
        new, result = meta_iteration(config, family, policy, theta, 0)
        results.append((theta, new, result.info))
    theta, whole, info = results[0]
    assert info["accepted"] == 1.0
    moved = sum(float((whole[n] - theta[n]).abs().max()) for n in theta)
    assert moved > 1e-3
    for _, new, other in results[1:]:
        for n in whole:
            torch.testing.assert_close(new[n], whole[n], rtol=1e-4, atol=1e-5)
        assert other["backtracks"] == info["backtracks"]
        assert abs(other["kl"] - info["kl"]) <= 1e-4 * abs(info["kl"]) + 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_lvc_objective_samples_as_pg_and_steps_differently(inner_steps):
    """The 'lvc' inner objective takes the same adaptation steps (so the same samples and
    returns) as 'pg'; only the meta-gradient and the Fisher products, through its second
    derivatives, differ."""
    from metarobot.config import make_policy
    from metarobot.train import meta_iteration
    out = {}
    for objective in ("pg", "lvc"):
        config = tiny(inner_steps=inner_steps, meta_batch_size=3, inner_objective=objective)
        family = metarobot.make_family(config.family, **config.family_overrides)
        policy = make_policy(config, family)
        theta = {n: p.detach().clone() for n, p in policy.params().items()}
        new, result = meta_iteration(config, family, policy, theta, 0)
        assert result.info["accepted"] == 1.0
        out[objective] = (new, result)
    (pg, r_pg), (lvc, r_lvc) = out["pg"], out["lvc"]
    assert r_pg.pre_return == pytest.approx(r_lvc.pre_return, rel=1e-6)
    assert r_pg.post_return == pytest.approx(r_lvc.post_return, rel=1e-5)
    assert r_pg.info["surrogate_before"] == pytest.approx(r_lvc.info["surrogate_before"],
                                                          rel=1e-5)
    assert max(float((pg[n] - lvc[n]).abs().max()) for n in pg) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maml-trpo", "fomaml-trpo"])
def test_learned_step_sizes_are_trained_saved_and_used(tmp_path, algo):
    """Meta-SGD: the step sizes move off inner_lr, live in the checkpoint, and evaluate and
    adapt use them unless a step size is given."""
    run = tmp_path / "run"
    path = train(tiny(algo=algo, iterations=2, learn_inner_lr=True, inner_lr=0.05), run,
                 progress=False)
    params, _ = checkpoint.load(path)
    policy, alpha = metarobot.meta.split_step_sizes(params)
    assert alpha is not None and set(alpha) == set(policy)
    spread = max(float((a - 0.05).abs().max()) for a in alpha.values())
    assert spread > 1e-5
    loaded = load_policy(path)
    assert set(loaded.policy.params()) == set(policy) and set(loaded.step_sizes) == set(alpha)
    learned = evaluate(path, tasks=2, steps=1, seed=4)
    fixed = evaluate(path, tasks=2, steps=1, seed=4, lr=0.05)
    assert learned["step_sizes"] == "learned" and fixed["step_sizes"] == [0.05]
    assert learned["mean_return"][0] == fixed["mean_return"][0]  # same pre-update samples
    assert learned["mean_return"][1] != fixed["mean_return"][1]
    adapted, returns = metarobot.evaluation.adapt_to_task(path, {"direction": 1.0}, steps=1,
                                                     trajectories=2, out=tmp_path / "a.st")
    assert set(adapted) == set(policy)
    metarobot.runs.load_policy(tmp_path / "a.st")  # the adapted policy alone loads


@pytest.mark.slow
def test_progress_shows_the_first_iterations_phases_and_an_eta_from_later_ones(tmp_path,
                                                                            capsys):
    train(tiny(iterations=3), tmp_path / "run", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("training HalfCheetahDir with maml-trpo: iterations 1..3")
    first_done = next(i for i, line in enumerate(err) if "] 1/3 |" in line)
    phases = [line.split("iteration 1: ")[1] for line in err[:first_done]
              if "iteration 1: " in line]
    # every phase of the first iteration is shown before it ends, in order
    assert phases[0].startswith("building")
    assert phases[1].startswith("sampling") and "advantages" in phases
    assert "outer step: gradient" in phases
    cg = [p for p in phases if p.startswith("outer step: conjugate gradient")]
    assert cg[0] == "outer step: conjugate gradient 1/10"
    assert any(p.startswith("outer step: line search") for p in phases)
    # the first iteration gives no ETA (it is the slowest); later ones do, from themselves
    assert "ETA after the next" in err[first_done]
    assert "s/it | ETA" in err[-1] and "] 3/3 |" in err[-1]
    # not a terminal: later iterations are one line each
    assert not any("iteration 2: " in line for line in err)


@pytest.mark.slow
def test_resume_from_a_checkpoint_file_continues_the_run_exactly(tmp_path):
    """A committed checkpoint (a file, its run directory gone) and its progress CSV: `train
    --resume FILE --out NEW` makes NEW a run of it and continues as the uninterrupted run."""
    import shutil
    from metarobot import cli
    full = train(tiny(iterations=3), tmp_path / "full", progress=False)
    train(tiny(iterations=2), tmp_path / "part", progress=False)
    committed = tmp_path / "committed.safetensors"
    shutil.copyfile(tmp_path / "part" / "checkpoints" / "latest.safetensors", committed)
    shutil.copyfile(tmp_path / "part" / "progress.csv", tmp_path / "committed_progress.csv")
    shutil.rmtree(tmp_path / "part")
    assert cli.main(["train", "--out", str(tmp_path / "new"), "--resume", str(committed),
                     "--progress", str(tmp_path / "committed_progress.csv"),
                     "--iterations", "3", "--quiet"]) == 0
    a, _ = checkpoint.load(full)
    b, info = checkpoint.load(tmp_path / "new")
    assert info["iteration"] == 2
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    strip = lambda r: [line.split(",")[:3] for line in r]
    assert strip(rows(tmp_path / "full")) == strip(rows(tmp_path / "new"))
    # a directory that holds a run is not overwritten by another checkpoint
    assert cli.main(["train", "--out", str(tmp_path / "new"), "--resume", str(committed),
                     "--iterations", "4", "--quiet"]) == 2
    assert checkpoint.load(tmp_path / "new")[1]["iteration"] == 2
    from metarobot.evaluation import adapt_to_task
    from metarobot.runs import run_from_checkpoint
    with pytest.raises(ValueError, match="has 0 rows before iteration 2"):
        run_from_checkpoint(committed, tmp_path / "other", tmp_path / "nothing.csv")
    assert not (tmp_path / "other").exists()
    adapted = tmp_path / "adapted.safetensors"
    adapt_to_task(full, {"direction": 1.0}, trajectories=2, out=adapted)
    with pytest.raises(ValueError, match="adapted to one task, not a training checkpoint"):
        run_from_checkpoint(adapted, tmp_path / "other")


@pytest.mark.slow
def test_branch_from_a_checkpoint_changes_settings_and_keeps_the_rest(tmp_path):
    """`train --resume FILE --branch --max-kl X` continues from the checkpoint's parameters and
    iteration with the new bound in force; a branch changing only bookkeeping equals the
    uninterrupted run bit for bit; layout changes are refused before anything is written."""
    import json
    from metarobot import cli
    full = train(tiny(iterations=3, checkpoint_every=5), tmp_path / "full", progress=False)
    part = train(tiny(iterations=2, checkpoint_every=5), tmp_path / "part", progress=False)
    # a change that does not touch the learning: the same bits as never stopping
    assert cli.main(["train", "--out", str(tmp_path / "same"), "--resume", str(part),
                     "--progress", str(tmp_path / "part" / "progress.csv"), "--branch",
                     "--checkpoint-every", "1", "--iterations", "3", "--quiet"]) == 0
    a, _ = checkpoint.load(full)
    b, info = checkpoint.load(tmp_path / "same")
    assert info["iteration"] == 2 and info["config"]["checkpoint_every"] == 1
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    # a tighter KL bound: the third outer step stays inside it, unlike the full run's
    kl_full = float(rows(tmp_path / "full")[3].split(",")[8])
    bound = kl_full / 10
    assert cli.main(["train", "--out", str(tmp_path / "tight"), "--resume", str(part),
                     "--branch", "--max-kl", str(bound), "--iterations", "3", "--quiet"]) == 0
    record = json.loads((tmp_path / "tight" / "branch.json").read_text())
    assert record["iterations_done"] == 2
    assert record["changed"] == {"max_kl": {"from": None, "to": bound}}
    assert json.loads((tmp_path / "tight" / "config.json").read_text())["max_kl"] == bound
    kl = [float(r.split(",")[8]) for r in rows(tmp_path / "tight")[1:]]
    assert len(kl) == 1 and 0 < kl[0] <= bound < kl_full
    c, _ = checkpoint.load(tmp_path / "tight")
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # the branch resumes as its own run (its settings saved), longer
    assert cli.main(["train", "--out", str(tmp_path / "tight"), "--resume", "--iterations",
                     "4", "--quiet"]) == 0
    assert float(rows(tmp_path / "tight")[-1].split(",")[8]) <= bound
    # refused, nothing written: the policy's layout, no change at all, --branch alone
    for argv, message in (
            (["--hidden-sizes", "16"], "keeps the checkpoint's hidden_sizes"),
            (["--max-kl", "0.01", "--set", "horizon=10"], "--set is not allowed"),
            (["--seed", "3"], "are the checkpoint's own"),
            (["--iterations", "5"], "needs the settings to change")):
        out = tmp_path / "refused"
        assert cli.main(["train", "--out", str(out), "--resume", str(part), "--branch",
                         "--quiet", *argv]) == 2, argv
        assert not out.exists(), argv
    assert cli.main(["train", "--out", str(tmp_path / "x"), "--family", "HalfCheetahDir",
                     "--branch", "--quiet"]) == 2


def _bits(path):
    params, _ = checkpoint.load(path)
    return {k: v.numpy().tobytes() for k, v in params.items()}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maml-trpo", "fomaml-trpo", "reptile"])
def test_the_learner_gives_the_same_bits_at_any_thread_count(tmp_path, algo):
    """3 iterations with the process's torch threads and the chunk executors at 1 and at 2
    (and a resume that switches between them) end with the same parameter bits."""
    # a policy large enough that torch splits its products over 2 threads (at (8,) it does
    # not, and the old learner gave the same bits too)
    config = dict(algo=algo, iterations=3, meta_batch_size=4, trajectories_per_task=3,
                  chunk_samples=60, hidden_sizes=(64, 64),
                  **({"inner_steps": 2} if algo == "reptile" else {}))
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = _bits(train(tiny(threads=threads, **config),
                                        tmp_path / f"t{threads}", progress=False))
        # two iterations on 2 threads, the third resumed on 1
        torch.set_num_threads(2)
        part = tmp_path / "part"
        train(tiny(threads=2, **dict(config, iterations=2)), part, progress=False)
        torch.set_num_threads(1)
        resumed = _bits(train(tiny(threads=1, **config), part, resume=True, progress=False))
    finally:
        torch.set_num_threads(before)
    assert runs[1] == runs[2]
    assert resumed == runs[1]


@pytest.mark.slow
def test_the_same_bits_with_another_omp_num_threads(tmp_path):
    """As a user on another machine would run it: a fresh process with OMP_NUM_THREADS=1
    and one with 2 give the same checkpoint."""
    code = ("import sys; from metarobot.config import TrainConfig; "
            "from metarobot.train import train\n"
            "train(TrainConfig(family='HalfCheetahVel', family_overrides={'horizon': 30}, "
            "iterations=2, meta_batch_size=4, trajectories_per_task=3, hidden_sizes=(16,), "
            "seed=7), sys.argv[1], progress=False)")
    out = {}
    for n in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=n)
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / n)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        out[n] = _bits(tmp_path / n / "checkpoints" / "latest.safetensors")
    assert out["1"] == out["2"]


def test_a_changed_model_is_said_on_resume_and_mid_run(tmp_path, capsys):
    """The checkpoint records the model's digest; resuming on another model warns, naming both
    digests (a comment changes nothing, so it warns of nothing), and so does a model edited
    while the run goes on."""
    xml = tmp_path / "cheetah.xml"
    text = (Path(metarobot.make_family("HalfCheetahDir").model_path)).read_text()
    xml.write_text(text)
    config = tiny(family_overrides={"horizon": 20, "model_file": str(xml)}, iterations=1)
    saved = train(config, tmp_path / "run", progress=False)
    digest = checkpoint.load(saved)[1]["model_digest"]
    assert digest == metarobot.make_family("HalfCheetahDir", model_file=str(xml)).model_digest()
    xml.write_text(text + "<!-- a comment -->\n")
    train(tiny(family_overrides={"horizon": 20, "model_file": str(xml)}, iterations=2),
          tmp_path / "run", resume=True, progress=False)
    err = capsys.readouterr().err
    assert "is not the one this run was trained on" not in err and "changed during" not in err
    xml.write_text(text.replace('timestep="0.01"', 'timestep="0.011"'))
    resumed = train(tiny(family_overrides={"horizon": 20, "model_file": str(xml)},
                         iterations=3), tmp_path / "run", resume=True, progress=False)
    err = capsys.readouterr().err
    assert "is not the one this run was trained on" in err and digest in err
    assert checkpoint.load(resumed)[1]["model_digest"] != digest


def test_a_model_edited_during_the_run_is_said(tmp_path, capsys, monkeypatch):
    xml = tmp_path / "cheetah.xml"
    text = (Path(metarobot.make_family("HalfCheetahDir").model_path)).read_text()
    xml.write_text(text)
    import metarobot.train as train_module
    real = train_module.meta_iteration

    def iteration_then_edit(*args, **kw):  # the model file changes during iteration 1
        out = real(*args, **kw)
        xml.write_text(text.replace('timestep="0.01"', 'timestep="0.012"'))
        return out
    monkeypatch.setattr(train_module, "meta_iteration", iteration_then_edit)
    config = tiny(family_overrides={"horizon": 20, "model_file": str(xml)}, iterations=2)
    first = metarobot.make_family("HalfCheetahDir", model_file=str(xml)).model_digest()
    saved = train(config, tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "changed during the run" in err and "iterations from 2 on" in err
    after = metarobot.make_family("HalfCheetahDir", model_file=str(xml)).model_digest()
    assert after != first and f"{first} -> {after}" in err
    # the last checkpoint names the model its last iteration ran on
    assert checkpoint.load(saved)[1]["model_digest"] == after


def test_an_unreadable_model_mid_run_still_saves_the_iteration(tmp_path, capsys, monkeypatch):
    """A model file half-written when the run checks it: a warning, and the checkpoint of the
    iteration just done is written all the same."""
    xml = tmp_path / "cheetah.xml"
    text = (Path(metarobot.make_family("HalfCheetahDir").model_path)).read_text()
    xml.write_text(text)
    import metarobot.train as train_module
    real = train_module.meta_iteration

    def iteration_then_break(*args, **kw):
        out = real(*args, **kw)
        xml.write_text(text[:len(text) // 2])
        return out
    monkeypatch.setattr(train_module, "meta_iteration", iteration_then_break)
    with pytest.raises(ValueError):  # the next iteration cannot build its simulations
        train(tiny(family_overrides={"horizon": 20, "model_file": str(xml)}, iterations=2),
              tmp_path / "run", progress=False)
    assert "cannot read HalfCheetahDir's model now" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "iter_000001.safetensors").exists()
