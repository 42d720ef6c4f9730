"""The helpers of benchmarks/reproduce.py: its --option parsing, the refusal to resume a run with
other settings, and the repository-relative checkpoint path in committed results."""
import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from metarobot.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_options_reads_json_or_text(reproduce):
    parser = argparse.ArgumentParser()
    options = reproduce.parse_options(
        parser, ["max_kl=0.01", "baseline_fit=previous", "learn_inner_lr=true"])
    assert options == {"max_kl": 0.01, "baseline_fit": "previous", "learn_inner_lr": True}
    TrainConfig(family="HalfCheetahDir", **options)  # the values are ones TrainConfig takes


@pytest.mark.parametrize("item", ["no_such_field=1", "max_kl", "seed=3", "iterations=5"])
def test_parse_options_refuses_unknown_malformed_or_flagged_fields(reproduce, item, capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_options(argparse.ArgumentParser(), [item])
    assert repr(item) in capsys.readouterr().err


def test_check_resumable_refuses_other_settings(reproduce, tmp_path):
    saved = TrainConfig(family="HalfCheetahDir", iterations=10)
    (tmp_path / "config.json").write_text(json.dumps(saved.to_dict()))
    # other iterations and time budget: the run may go on
    reproduce.check_resumable(tmp_path, TrainConfig(family="HalfCheetahDir", iterations=50,
                                                    time_budget=60.0))
    # the family's default KL bound spelled out is the same setting
    reproduce.check_resumable(tmp_path, TrainConfig(family="HalfCheetahDir", iterations=10,
                                                    max_kl=saved.kl_bound))
    with pytest.raises(SystemExit, match="inner_lr"):
        reproduce.check_resumable(tmp_path, TrainConfig(family="HalfCheetahDir", inner_lr=0.2))
    with pytest.raises(SystemExit, match="hessian"):
        reproduce.check_resumable(tmp_path, TrainConfig(family="HalfCheetahDir",
                                                        hessian="finite-difference"))
    # a run saved before a setting existed resumes with that setting's default
    older = saved.to_dict()
    del older["hessian"]
    (tmp_path / "config.json").write_text(json.dumps(older))
    reproduce.check_resumable(tmp_path, TrainConfig(family="HalfCheetahDir", iterations=10))


def test_record_checkpoint_path_relative_inside_the_repository(reproduce, tmp_path):
    result = tmp_path / "result.json"
    inside = ROOT / "checkpoints" / "HalfCheetahDir.safetensors"
    result.write_text(json.dumps({"checkpoint": str(inside), "mean_return": [1.0]}))
    reproduce.record_checkpoint_path(result, inside)
    assert json.loads(result.read_text()) == {"checkpoint": "checkpoints/HalfCheetahDir.safetensors",
                                              "mean_return": [1.0]}
    outside = tmp_path / "elsewhere.safetensors"
    result.write_text(json.dumps({"checkpoint": str(outside)}))
    reproduce.record_checkpoint_path(result, outside)
    assert json.loads(result.read_text())["checkpoint"] == str(outside)
