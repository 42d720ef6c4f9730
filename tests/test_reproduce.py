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


def test_a_resumed_reproduction_refuses_other_settings():
    """reproduce.py builds the whole configuration from its flags and resumes a run in --runs
    through train's one resume rule (runs.resumed_config)."""
    from metarobot.runs import resumed_config
    saved = TrainConfig(family="HalfCheetahDir", iterations=10)
    # other iterations and time budget: the run may go on
    resumed_config(saved, TrainConfig(family="HalfCheetahDir", iterations=50,
                                      time_budget=60.0).to_dict())
    # the family's default KL bound spelled out is the same setting
    resumed_config(saved, TrainConfig(family="HalfCheetahDir", iterations=10,
                                      max_kl=saved.kl_bound).to_dict())
    with pytest.raises(ValueError, match="--inner-lr 0.2"):
        resumed_config(saved, TrainConfig(family="HalfCheetahDir", inner_lr=0.2).to_dict())
    with pytest.raises(ValueError, match="--hessian 'finite-difference'"):
        resumed_config(saved, TrainConfig(family="HalfCheetahDir",
                                          hessian="finite-difference").to_dict())
    # a run saved before a setting existed resumes with that setting's default
    older = saved.to_dict()
    del older["hessian"]
    resumed_config(TrainConfig.from_dict(older),
                   TrainConfig(family="HalfCheetahDir", iterations=10).to_dict())


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
