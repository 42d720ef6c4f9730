"""The robot adapts with the step sizes of the one rule (adaptation.step_sizes), as `adapt` and
`evaluate` do: a MAML checkpoint trained with inner_lr 0.05 takes 0.05 at its first step on
the robot and 0.025 after (a trpo one too); a Reptile one its inner_lr at every step. And a
checkpoint whose settings name a GPU exports and runs on the robot's CPU."""

import gymnasium as gym
import pytest

from metarobot import checkpoint, meta
from metarobot.config import TrainConfig
from metarobot.deploy.controller import Controller
from metarobot.deploy.export import export
from metarobot.deploy.runner import run
from metarobot.train import train

from test_deploy import TOLERANT, cheetah_robot


def tiny(**kw):
    base = dict(family="HalfCheetahVel", family_overrides={"horizon": 15}, iterations=1,
                meta_batch_size=2, trajectories_per_task=2, hidden_sizes=(8,), seed=5)
    base.update(kw)
    return TrainConfig(**base)


def cheetah_env():
    return gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0}, horizon=15,
                    normalize_actions=False)


@pytest.mark.parametrize("config, want", [(tiny(inner_lr=0.05), [0.05, 0.025]),
                                          (tiny(algo="reptile", inner_lr=0.3), [0.3, 0.3]),
                                          (tiny(algo="trpo", inner_lr=0.05), [0.05, 0.025])],
                         ids=["maml", "reptile", "trpo"])
@pytest.mark.slow  # training runs
def test_the_robot_adapts_with_the_checkpoints_step_sizes(tmp_path, monkeypatch, config, want):
    path = train(config, tmp_path / config.algo, progress=False)
    seen = []
    step = meta.InnerUpdate.step

    def spy(self, spec, params, batch, lr, batched, objective="pg"):
        seen.append(float(lr))
        return step(self, spec, params, batch, lr, batched, objective)
    monkeypatch.setattr(meta.InnerUpdate, "step", spy)
    controller = Controller.from_checkpoint(path)
    assert [controller.step_size(j) for j in range(3)] == want + want[-1:]
    report = run(controller, cheetah_robot(cheetah_env()), episodes=1, adapt_steps=2,
                 limits=TOLERANT)
    assert report["stopped"] == "completed", report["detail"]
    assert seen == want
    assert [s["step_size"] for s in report["stages"]] == [None] + want
    # --lr overrides the rule at every step
    seen.clear()
    run(Controller.from_checkpoint(path, lr=0.01), cheetah_robot(cheetah_env()), episodes=1,
        adapt_steps=2, limits=TOLERANT)
    assert seen == [0.01, 0.01]


@pytest.mark.slow  # training runs
def test_a_checkpoint_trained_on_a_gpu_exports_and_runs_on_this_cpu(tmp_path):
    path = train(tiny(), tmp_path / "run", progress=False)
    params, info = checkpoint.load(path)
    info["config"]["device"] = "cuda"
    gpu = tmp_path / "from-gpu.safetensors"
    checkpoint.save(gpu, params, info)
    meta_data = export(gpu, "native", tmp_path / "native")
    assert meta_data["family"] == "HalfCheetahVel"
    report = run(Controller.from_checkpoint(gpu), cheetah_robot(cheetah_env()), episodes=1,
                 limits=TOLERANT)
    assert report["stopped"] == "completed", report["detail"]
