"""A checkpoint from any machine on any other, and one adaptation rule for every job: a
checkpoint whose run trained on a GPU loads, evaluates and adapts on this CPU-only machine,
and evaluate, adapt and the robot's controller choose the same step sizes."""

import pytest
import torch

from metarobot import checkpoint
from metarobot.adaptation import expand, step_sizes
from metarobot.config import TrainConfig
from metarobot.evaluation import adapt_to_task, evaluate
from metarobot.runs import load_policy, resumed_config, run_from_checkpoint
from metarobot.train import train

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(),
                                    reason="checks a machine without a GPU")


def tiny(**kw):
    base = dict(family="HalfCheetahVel", family_overrides={"horizon": 15}, iterations=1,
                meta_batch_size=2, trajectories_per_task=2, hidden_sizes=(8,), seed=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def gpu_checkpoint(tmp_path_factory):
    """A checkpoint as a GPU run writes it: the same file, its config naming device cuda."""
    run = tmp_path_factory.mktemp("gpu") / "run"
    path = train(tiny(), run, progress=False)
    params, info = checkpoint.load(path)
    info["config"]["device"] = "cuda"
    out = run.parent / "from-gpu.safetensors"
    checkpoint.save(out, params, info)
    return out


@needs_cpu_only
def test_a_gpu_checkpoint_loads_evaluates_and_adapts_on_a_cpu_only_machine(gpu_checkpoint):
    loaded = load_policy(gpu_checkpoint)
    assert loaded.config.device == "cuda"  # read as written, not checked against this machine
    result = evaluate(gpu_checkpoint, tasks=2, steps=1, trajectories=2)
    assert len(result["mean_return"]) == 2
    adapted, returns = adapt_to_task(gpu_checkpoint, {"goal_velocity": 1.0}, steps=1,
                                     trajectories=2)
    assert set(adapted) == set(loaded.policy.params()) and len(returns) == 2
    # what the user asks of this machine is still checked, where it is used
    with pytest.raises(ValueError, match="sees no GPU"):
        evaluate(gpu_checkpoint, tasks=2, steps=1, trajectories=2, device="cuda")


@needs_cpu_only
def test_a_gpu_run_resumes_on_the_cpu_when_asked_and_not_otherwise(gpu_checkpoint, tmp_path):
    """A run directory whose run trained on a GPU: --resume without --device is refused (its
    own device, asked of this machine) before anything changes; --device cpu continues it."""
    from metarobot import cli
    out = tmp_path / "run"
    run_from_checkpoint(gpu_checkpoint, out)
    before = (out / "checkpoints" / "latest.safetensors").read_bytes()
    assert cli.main(["train", "--out", str(out), "--resume", "--iterations", "2",
                     "--quiet"]) == 2
    assert (out / "checkpoints" / "latest.safetensors").read_bytes() == before
    assert not (out / "progress.csv").exists()
    assert cli.main(["train", "--out", str(out), "--resume", "--iterations", "2",
                     "--device", "cpu", "--quiet"]) == 0
    _, info = checkpoint.load(out / "checkpoints" / "latest.safetensors")
    assert info["iteration"] == 1 and info["config"]["device"] == "cpu"


def test_a_refused_resume_from_a_checkpoint_file_writes_nothing(gpu_checkpoint, tmp_path):
    from metarobot import cli
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--resume", str(gpu_checkpoint),
                     "--max-kl", "0.05", "--device", "cpu", "--quiet"]) == 2
    assert not out.exists()


def test_chunks_depend_on_the_configuration_alone_and_are_at_least_16():
    from metarobot.samples import chunk_ranges
    for ntask, samples_per_task in ((4, 800), (16, 2000), (17, 2000), (40, 2000), (40, 8000),
                                    (100, 100)):
        chunks = chunk_ranges(ntask, samples_per_task, 8192)
        assert chunks[0][0] == 0 and chunks[-1][1] == ntask
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(chunks, chunks[1:]))
        assert len(chunks) >= min(ntask, 16)
        assert max(b - a for a, b in chunks) <= max(1, 8192 // samples_per_task)


def test_one_step_size_rule_for_every_job():
    maml = tiny(inner_lr=0.05)
    reptile = tiny(algo="reptile", inner_lr=0.3)
    assert step_sizes(maml) == (0.05, 0.025)  # training's step, then half (the paper's 0.1, 0.05)
    assert step_sizes(reptile) == (0.3,)  # Reptile adapts as it trained
    assert expand(step_sizes(maml), 3) == [0.05, 0.025, 0.025]
    assert step_sizes(maml, lr=0.2) == (0.2,)
    learned = {"log_std": torch.ones(2)}
    assert step_sizes(maml, learned) is learned
    with pytest.raises(ValueError, match="lr .*should be a finite number >= 0"):
        step_sizes(maml, lr=-1.0)


def test_evaluate_and_adapt_take_the_checkpoints_step_sizes(tmp_path, monkeypatch):
    """A MAML checkpoint trained with inner_lr 0.05 and a Reptile one: evaluate and adapt use
    the rule's step sizes (recorded as the inner step receives them)."""
    from metarobot import meta
    seen = []
    step = meta.InnerUpdate.step

    def spy(self, spec, params, batch, lr, batched, objective="pg"):
        seen.append(float(lr))
        return step(self, spec, params, batch, lr, batched, objective)
    for config, want in ((tiny(inner_lr=0.05), [0.05, 0.025]),
                         (tiny(algo="reptile", inner_lr=0.3), [0.3, 0.3])):
        path = train(config, tmp_path / config.algo, progress=False)
        monkeypatch.setattr(meta.InnerUpdate, "step", spy)
        seen.clear()
        result = evaluate(path, tasks=1, steps=2, trajectories=2)
        assert seen == want and result["step_sizes"] == want[:1 + (want[0] != want[1])]
        seen.clear()
        adapt_to_task(path, {"goal_velocity": 1.0}, steps=2, trajectories=2)
        assert seen == want
        monkeypatch.setattr(meta.InnerUpdate, "step", step)


def test_resume_refuses_another_value_of_a_fixed_setting_naming_both():
    saved = tiny(max_kl=None)
    assert resumed_config(saved, {"max_kl": 0.01}).kl_bound == 0.01  # the value in force
    with pytest.raises(ValueError, match=r"--max-kl 0.02 \(the run has 0.01\)"):
        resumed_config(saved, {"max_kl": 0.02})
    back = resumed_config(tiny(cluster="ray", workers=2), {"cluster": "local"})
    assert (back.cluster, back.workers) == ("local", 1)  # the Ray settings lapse
    with pytest.raises(ValueError, match="unknown training setting 'max_k'"):
        resumed_config(saved, {"max_k": 0.01})
    # a Reptile run whose step size anneals, resumed longer from Python with its config:
    # the schedule the TrainConfig fills in from iterations is not a request
    reptile = tiny(algo="reptile", iterations=10, reptile_epsilon_final=0.01)
    longer = TrainConfig.from_dict(dict(reptile.to_dict(), iterations=20,
                                        reptile_anneal_iterations=None))
    assert resumed_config(reptile, longer.to_dict()).reptile_anneal_iterations == 10
