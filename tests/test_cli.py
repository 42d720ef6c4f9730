"""The command line, run as a user would."""

import json
import subprocess
import sys

import pytest

from metarobot import cli


def test_rollout_json(capsys):
    assert cli.main(["rollout", "AntGoal", "--tasks", "2", "--envs-per-task", "2", "--horizon",
                     "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["simulations"] == 4 and result["env_steps"] <= 80
    assert len(result["tasks"]) == 2 and "goal_x" in result["tasks"][0]["task"]


def test_families_table(capsys):
    assert cli.main(["families"]) == 0
    out = capsys.readouterr().out
    assert "| HalfCheetahVel | 20 | 6 | 200 | 0.01 |" in out
    assert "| AntTerrainDir | 140 | 8 | 200 | 0.02 |" in out


def test_errors_are_reported_not_raised(capsys):
    assert cli.main(["rollout", "Nope"]) == 2
    assert "unknown task family 'Nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["rollout", "AntDir", "--tasks", "0"])
    assert exit_info.value.code == 2
    assert "argument --tasks: expected an integer >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "adapt", "rollout", "render",
                                     "families"])
def test_every_command_prints_its_help(command, capsys):
    """Help texts come from docstrings; one with a stray % sign broke argparse's formatting."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if command == "train":
        assert "--hessian" in out and "20% longer" in out


@pytest.mark.slow
def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "rollout", "HalfCheetahDir",
                          "--tasks", "2", "--horizon", "10"], capture_output=True, text=True,
                         check=True).stdout
    assert "env steps" in out


def test_paper_settings_per_family():
    from metarobot.config import TrainConfig
    assert TrainConfig(family="HalfCheetahDir").kl_bound == 0.02
    assert TrainConfig(family="HalfCheetahVel").kl_bound == 0.01
    assert TrainConfig(family="HalfCheetahDir", max_kl=0.005).kl_bound == 0.005
    import pytest
    with pytest.raises(ValueError, match="max_kl should be a finite number > 0, got -1.0"):
        TrainConfig(max_kl=-1.0)
