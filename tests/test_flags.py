"""Every flag and public argument refuses a value outside what it means, before any work,
naming the flag, what was expected and what came (each command in its own process, as a
user runs it)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

import metarobot
import metarobot.cli
import metarobot.render
from metarobot import checks
from metarobot.config import TrainConfig
from metarobot.evaluation import adapt_to_task, evaluate

CHECKPOINT = str(Path(__file__).resolve().parent.parent / "checkpoints" /
                 "HalfCheetahDir.safetensors")

# (command line, the words its error must hold)
BAD_FLAGS = [
    ("evaluate X --trajectories 0", ["--trajectories", ">= 1", "'0'"]),
    ("evaluate X --tasks 0", ["--tasks", ">= 1", "'0'"]),
    ("evaluate X --steps -1", ["--steps", ">= 0", "'-1'"]),
    ("evaluate X --lr -5", ["--lr", ">= 0", "'-5'"]),
    ("evaluate X --lr nan", ["--lr", "finite", "'nan'"]),
    ("evaluate X --lr 0.1 inf", ["--lr", "finite", "'inf'"]),
    ("evaluate X --threads -1", ["--threads", ">= 0", "'-1'"]),
    ("evaluate X --seed -3", ["--seed", "[0, 18446744073709551615]", "'-3'"]),
    ("adapt X --task {} --lr -1", ["--lr", ">= 0", "'-1'"]),
    ("adapt X --task {} --steps 0", ["--steps", ">= 1", "'0'"]),
    ("adapt X --task {} --trajectories 0", ["--trajectories", ">= 1", "'0'"]),
    ("rollout HalfCheetahVel --horizon 0", ["--horizon", ">= 1", "'0'"]),
    ("rollout HalfCheetahVel --envs-per-task 0", ["--envs-per-task", ">= 1", "'0'"]),
    ("rollout HalfCheetahVel --seed 36893488147419103232", ["--seed", "36893488147419103232"]),
    ("render HalfCheetahVel --out x.png --steps -1", ["--steps", ">= 0", "'-1'"]),
    ("render HalfCheetahVel --out x.png --width 0", ["--width", ">= 1", "'0'"]),
    ("train --out R --seed -1", ["--seed", "[0, 18446744073709551615]", "'-1'"]),
    ("train --out R --iterations 0", ["--iterations", ">= 1", "'0'"]),
    ("train --out R --gamma 1.5", ["--gamma", "[0, 1]", "'1.5'"]),
    ("train --out R --inner-lr -0.1", ["--inner-lr", ">= 0", "'-0.1'"]),
    ("train --out R --max-kl 0", ["--max-kl", "> 0", "'0'"]),
    ("train --out R --fisher-fraction 0", ["--fisher-fraction", "(0, 1]", "'0'"]),
    ("train --out R --time-budget -5", ["--time-budget", "> 0", "'-5'"]),
    ("train --out R --threads -1", ["--threads", ">= 0", "'-1'"]),
    ("train --out R --hidden-sizes 64 0", ["--hidden-sizes", ">= 1", "'0'"]),
    ("train --out R --init-log-std nan", ["--init-log-std", "finite", "'nan'"]),
    ("train --out R --algo sgd", ["--algo", "invalid choice", "'sgd'"]),
    ("train --out R --activation gelu", ["--activation", "invalid choice", "'gelu'"]),
    ("train --out R --trajectories-per-task 0", ["--trajectories-per-task", ">= 1", "'0'"]),
]


@pytest.mark.parametrize("line, words", BAD_FLAGS, ids=[b[0] for b in BAD_FLAGS])
def test_bad_flag_is_refused_naming_it(line, words, tmp_path):
    argv = [a.replace("X", CHECKPOINT) if a == "X" else a for a in line.split()]
    argv = [str(tmp_path / a) if a in ("R", "x.png") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        metarobot.cli.main(argv)
    assert exit_info.value.code == 2
    assert not any(tmp_path.iterdir()), "nothing is written for a refused command"


def test_bad_flag_message_names_flag_expected_and_given(capsys):
    for line, words in BAD_FLAGS:
        argv = [CHECKPOINT if a == "X" else a for a in line.split()]
        with pytest.raises(SystemExit):
            metarobot.cli.main(argv)
        err = capsys.readouterr().err
        for w in words:
            assert w in err, (line, err)


def test_render_too_large_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert metarobot.cli.main(["render", "HalfCheetahVel", "--out", str(out), "--width",
                               "30000", "--height", "30000"]) == 2
    err = capsys.readouterr().err
    assert "30000 x 30000" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("call, words", [
    (lambda: evaluate(CHECKPOINT, trajectories=0), ["trajectories", ">= 1", "0"]),
    (lambda: evaluate(CHECKPOINT, lr=-5), ["lr", ">= 0", "-5"]),
    (lambda: evaluate(CHECKPOINT, lr=[0.1, math.nan]), ["lr", "finite", "nan"]),
    (lambda: evaluate(CHECKPOINT, lr=[]), ["lr", "at least one"]),
    (lambda: evaluate(CHECKPOINT, tasks=0), ["tasks", ">= 1"]),
    (lambda: adapt_to_task(CHECKPOINT, {"direction": 1.0}, lr=-1), ["lr", ">= 0", "-1"]),
    (lambda: adapt_to_task(CHECKPOINT, {"direction": 1.0}, trajectories=0),
     ["trajectories", ">= 1"]),
    (lambda: TrainConfig(seed=-1), ["seed", "[0, 18446744073709551615]", "-1"]),
    (lambda: TrainConfig(seed=2 ** 70), ["seed", str(2 ** 70)]),
    (lambda: TrainConfig(hidden_sizes=(64, 0)), ["hidden_sizes", ">= 1", "0"]),
    (lambda: TrainConfig(time_budget=0.0), ["time_budget", "> 0"]),
    (lambda: TrainConfig(gamma=math.inf), ["gamma", "[0, 1]", "inf"]),
    (lambda: TrainConfig(activation="gelu"), ["activation", "gelu"]),
    (lambda: metarobot.render.frame("HalfCheetahVel", steps=-1), ["steps", ">= 0", "-1"]),
    (lambda: metarobot.render.frame("HalfCheetahVel", seed=-1), ["seed", ">= 0", "-1"]),
    (lambda: evaluate(CHECKPOINT, steps=-1), ["steps", ">= 0", "-1"]),
    (lambda: evaluate(CHECKPOINT, threads=-1), ["threads", ">= 0", "-1"]),
    (lambda: adapt_to_task(CHECKPOINT, {"direction": 1.0}, steps=0), ["steps", ">= 1", "0"]),
    (lambda: adapt_to_task(CHECKPOINT, {"direction": 1.0}, seed=-1), ["seed", "-1"]),
    (lambda: TrainConfig(algo="reptile", reptile_epsilon=0.0), ["reptile_epsilon", "> 0"]),
    (lambda: metarobot.GaussianMLPPolicy(20, 6, init_log_std=math.nan),
     ["init_log_std", "finite", "nan"]),
])
def test_bad_python_argument_raises_value_error(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value), str(err.value)


def test_range_describes_and_checks():
    r = checks.Range(float, 0.0, 1.0, open_low=True)
    assert r.describe() == "a finite number in (0, 1]"
    assert r.check(1, "x") == 1.0
    for bad in (0.0, 1.5, math.nan, True, "0.5", None):
        with pytest.raises(ValueError, match=r"x should be a finite number in \(0, 1\]"):
            r.check(bad, "x")
    assert checks.COUNT.parse("3") == 3
    with pytest.raises(Exception, match="expected an integer >= 1, got '2.5'"):
        checks.COUNT.parse("2.5")


def test_register_family_does_not_replace_a_built_in_silently():
    import dataclasses
    cheetah = metarobot.make_family("HalfCheetahDir")
    longer = dataclasses.replace(cheetah, horizon=400)
    with pytest.raises(ValueError, match="already a built-in family.*replace=True"):
        metarobot.register_family(longer)
    assert metarobot.make_family("HalfCheetahDir").horizon == 200
    try:
        metarobot.register_family(longer, replace=True)
        assert metarobot.make_family("HalfCheetahDir").horizon == 400
    finally:
        metarobot.register_family(cheetah, replace=True)


def test_out_of_distribution_task_warns_once_and_runs():
    family = metarobot.make_family("HalfCheetahVel")
    task = family.task(goal_velocity=1e6)
    with pytest.warns(metarobot.families.OutOfDistributionWarning,
                      match=r"goal_velocity=1e\+06 lies outside its training range \[0, 2\]"):
        sim = metarobot.BatchSim(family, [task])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metarobot.BatchSim(family, [task])  # the same task again: said once
        metarobot.BatchSim(family, [family.task(goal_velocity=1.0)])  # inside: nothing
    assert sim.reset().shape == (1, 20)


@pytest.mark.parametrize("family, params, words", [
    ("HalfCheetahDir", {"direction": 0.5}, ["direction=0.5", "[-1.0, 1.0]"]),
    ("HalfCheetahDir", {"direction": 7.0}, ["direction=7", "[-1.0, 1.0]"]),
    ("AntGoal", {"goal_x": 3.0, "goal_y": 3.0}, ["goal_x", "radius 3"]),
])
def test_out_of_distribution_warning_names_field_range_and_value(family, params, words):
    fam = metarobot.make_family(family)
    with pytest.warns(metarobot.families.OutOfDistributionWarning) as record:
        fam.check_task(fam.task(**params))
    text = str(record[0].message)
    for w in words:
        assert w in text, text


@pytest.mark.slow
def test_cli_shows_an_out_of_distribution_warning_in_one_line():
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "adapt", CHECKPOINT, "--task",
                          '{"direction": 7}', "--trajectories", "2"], capture_output=True,
                         text=True, check=True)
    assert "metarobot: warning: HalfCheetahDir: task Task(HalfCheetahDir, direction=7)" in \
        out.stderr
    assert "check_task" not in out.stderr
