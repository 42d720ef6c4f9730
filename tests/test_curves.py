"""Training curves (metarobot.curves, `metarobot curves`): what is drawn is the progress CSV's
returns averaged over windows, checked against a plain loop over the committed run's CSV."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from metarobot import cli
from metarobot.curves import moving_average, plot_training, read_progress, series

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "HalfCheetahDir_progress.csv"
EVALUATION = ROOT / "benchmarks" / "results" / "HalfCheetahDir.json"


def plain_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_moving_average_is_the_mean_of_each_window():
    y = np.random.default_rng(0).normal(size=37)
    for window in (1, 2, 5, 37):
        expected = [sum(y[i:i + window]) / window for i in range(len(y) - window + 1)]
        np.testing.assert_allclose(moving_average(y, window), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(moving_average(y[:3], 10), y[:3])  # shorter than a window
    with pytest.raises(ValueError, match="at least 1 iteration, got 0"):
        moving_average(y, 0)


def test_series_of_the_committed_run_matches_a_plain_reading():
    rows = plain_rows(COMMITTED)
    s = series(read_progress(COMMITTED), smooth=10)
    assert len(s["x"]) == len(rows) - 9 and s["x"][-1] == int(rows[-1]["iteration"])
    last = rows[-10:]
    assert s["post_return"][-1] == pytest.approx(
        sum(float(r["post_return"]) for r in last) / 10, rel=1e-12)
    assert s["pre_return"][0] == pytest.approx(
        sum(float(r["pre_return"]) for r in rows[:10]) / 10, rel=1e-12)
    minutes = series(read_progress(COMMITTED), x="wall-clock", smooth=1)["x"]
    assert minutes[-1] == pytest.approx(float(rows[-1]["wall_clock"]) / 60)


def test_cli_draws_runs_and_evaluations(tmp_path, capsys):
    import matplotlib.image
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.csv").write_text(COMMITTED.read_text())
    out = tmp_path / "curve.png"
    assert cli.main(["curves", str(run), str(COMMITTED), "--label", "a", "b",
                     "--evaluations", str(EVALUATION), "--out", str(out)]) == 0
    image = matplotlib.image.imread(str(out))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    # the two identical runs overlap; the picture is not blank
    assert image[..., :3].std() > 0.05
    assert "before adaptation" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["nowhere"], "expected a run directory or its progress.csv"),
    ([str(EVALUATION)], "is not a metarobot progress.csv"),
    ([str(COMMITTED), "--label", "a", "b"], "one label per run"),
    ([str(COMMITTED), "--x", "wall-clock", "--evaluations", str(EVALUATION)],
     "drawn at their iteration"),
    ([str(COMMITTED), "--evaluations", str(COMMITTED)], "expected an evaluation JSON"),
])
def test_bad_input_is_refused_before_drawing(tmp_path, capsys, argv, message):
    out = tmp_path / "curve.png"
    assert cli.main(["curves", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_evaluation_without_steps_is_refused(tmp_path):
    result = json.loads(EVALUATION.read_text())
    result["mean_return"], result["stderr"] = result["mean_return"][:1], result["stderr"][:1]
    path = tmp_path / "zero_steps.json"
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match="at least one adaptation step"):
        plot_training([COMMITTED], tmp_path / "c.png", evaluations=[path])
