"""What a hil run leaves to open later: its cycles as MCAP, read back with mcap's own reader
(not metarobot's writer), against the report and cycles.csv of the same run; and the
comparison of two runs' joint traces (metarobot hil-compare). Each test starts its own
simulated robot (`metarobot sim-robot`) on loopback and ends it by its own process id."""

import csv
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from mcap.reader import make_reader

from metarobot.deploy.controller import Controller
from metarobot.deploy.runner import run
from metarobot.deploy.udp import UdpRobot
from test_deploy import CHEETAH, HIL_TOLERANT, TOLERANT, Server

pytestmark = pytest.mark.slow  # subprocesses

TOPICS = {"/observation", "/action", "/joints", "/timing", "/safety", "/episode"}


def read_mcap(path):
    """topic -> [(log_time, publish_time, decoded message)] and the metadata, by mcap's
    reader."""
    by_topic = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages():
            assert schema.encoding == "jsonschema" and channel.message_encoding == "json"
            assert json.loads(schema.data)["type"] == "object"
            by_topic[channel.topic].append((message.log_time, message.publish_time,
                                            json.loads(message.data)))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return by_topic, metadata


def test_a_udp_run_records_its_cycles_as_mcap(tmp_path):
    server = Server(horizon=30)
    try:
        robot = UdpRobot.from_url(server.url)
        try:
            report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=2,
                         report_dir=tmp_path, limits=TOLERANT)
        finally:
            robot.close()
    finally:
        server.close()
    assert report["stopped"] == "completed", report["detail"]
    assert report["mcap"] == str(tmp_path / "run.mcap")
    topics, metadata = read_mcap(tmp_path / "run.mcap")
    assert TOPICS <= set(topics) and "/imu" not in topics  # the cheetah has no IMU term
    t = report["timing"]
    for topic in ("/observation", "/action", "/joints"):
        assert len(topics[topic]) == t["cycles"], topic
    assert len(topics["/timing"]) == t["cycles"] + t["stale_cycles"]
    assert len(topics["/episode"]) == 2
    for topic, messages in topics.items():
        times = [m[0] for m in messages]
        assert times == sorted(times), topic
        assert all(m[0] == m[1] for m in messages)
    names = json.loads(metadata["metarobot"]["motor_names"])
    assert names == report["agreement"]["checked_against"]["motors"]
    assert json.loads(metadata["metarobot"]["observation_names"])[2] == "qpos bthigh"
    # the episodes' ends against the report
    for (_, _, message), e in zip(topics["/episode"], report["stages"][0]["episodes"]):
        assert message["return"] == pytest.approx(e["return"])
        assert message["steps"] == e["steps"] and message["complete"]
    assert topics["/safety"][-1][2]["reason"] == "completed"
    # one cycle against cycles.csv: the same step, observation, controls and latency
    with open(tmp_path / "cycles.csv", newline="") as f:
        rows = {int(r["cycle"]): r for r in csv.DictReader(f)}
    log_time, _, action = topics["/action"][7]
    row = rows[action["cycle"]]
    assert action["step"] == int(row["step"])
    np.testing.assert_allclose(action["controls"], [float(row[f"ctrl_{i}"]) for i in range(6)],
                               rtol=1e-6, atol=1e-7)
    assert action["position_target"] is None  # a torque family
    obs = next(m[2] for m in topics["/observation"] if m[2]["cycle"] == action["cycle"])
    np.testing.assert_allclose(obs["obs"], [float(row[f"obs_{i}"]) for i in range(20)],
                               rtol=1e-6, atol=1e-7)
    timing = next(m[2] for m in topics["/timing"] if m[2]["cycle"] == action["cycle"])
    assert timing["latency_us"] == pytest.approx(float(row["latency_us"]), rel=1e-6)
    # log time: the run's monotonic clock in ns (cycles.csv keeps 9 digits: 1 ms here)
    assert log_time == round(timing["sent_s"] * 1e9)
    assert abs(timing["sent_s"] - float(row["sent"])) < 1e-3
    # measured joints: the cheetah's observation is qpos[1:] then qvel, unscaled
    joints = next(m[2] for m in topics["/joints"] if m[2]["cycle"] == action["cycle"])
    assert joints["name"] == names
    np.testing.assert_allclose(joints["position"], np.array(obs["obs"])[2:8], rtol=1e-6)
    np.testing.assert_allclose(joints["velocity"], np.array(obs["obs"])[11:17], rtol=1e-6)


def test_the_hil_command_writes_the_mcap_where_asked_or_none(tmp_path):
    server = Server(horizon=10)
    try:
        base = [sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot", server.url,
                *HIL_TOLERANT]
        out = subprocess.run(base + ["--report", str(tmp_path / "a"), "--mcap",
                                     str(tmp_path / "a.mcap")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "a.mcap").is_file() and not (tmp_path / "a" / "run.mcap").exists()
        topics, _ = read_mcap(tmp_path / "a.mcap")
        report = json.loads((tmp_path / "a" / "report.json").read_text())
        assert len(topics["/action"]) == report["timing"]["cycles"] > 0
        out = subprocess.run(base + ["--report", str(tmp_path / "b"), "--no-mcap"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert not (tmp_path / "b" / "run.mcap").exists()
        assert json.loads((tmp_path / "b" / "report.json").read_text())["mcap"] is None
        # an existing file: refused before the robot hears a word
        out = subprocess.run(base + ["--report", str(tmp_path / "c"), "--mcap",
                                     str(tmp_path / "a.mcap")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "a.mcap' exists; give --overwrite" in out.stderr
        assert not (tmp_path / "c" / "report.json").exists()
    finally:
        server.close()


def test_hil_compare_two_runs_of_different_latency(tmp_path):
    """Two short runs of the cheetah against sim-robots whose links differ only in latency:
    the traces differ (RMS > 0 on every joint), a run against itself by exactly 0; the RMS
    against a reference computed here from the two MCAP files by mcap's reader."""
    runs = {}
    for name, latency in (("fast", "0"), ("slow", "30")):
        server = Server("--latency-ms", latency, "--obs-noise-scale", "0", horizon=40)
        try:
            out = subprocess.run(
                [sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot", server.url,
                 "--report", str(tmp_path / name), *HIL_TOLERANT],
                capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
        finally:
            server.close()
        runs[name] = tmp_path / name
    command = [sys.executable, "-m", "metarobot.cli", "hil-compare", str(runs["fast"]),
               str(runs["slow"] / "report.json"), "--out", str(tmp_path / "cmp.png")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    result = json.loads((tmp_path / "cmp.json").read_text())
    rms = result["rms_rad"]
    assert list(rms) == ["bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"]
    assert all(np.isfinite(v) and v > 1e-3 for v in rms.values()), rms
    for name in rms:  # the table on stdout says the same
        assert f"| {name} | {rms[name]:.4f} |" in out.stdout
    # the reference: both runs' /joints read here, b interpolated at a's times
    (a, _), (b, _) = read_mcap(runs["fast"] / "run.mcap"), read_mcap(runs["slow"] / "run.mcap")
    ta = np.array([m[0] for m in a["/joints"] if m[2]["episode"] == 0]) * 1e-9
    tb = np.array([m[0] for m in b["/joints"] if m[2]["episode"] == 0]) * 1e-9
    qa = np.array([m[2]["position"] for m in a["/joints"] if m[2]["episode"] == 0])
    qb = np.array([m[2]["position"] for m in b["/joints"] if m[2]["episode"] == 0])
    ta, tb = ta - ta[0], tb - tb[0]
    keep = ta <= min(ta[-1], tb[-1])
    for j, name in enumerate(rms):
        want = np.sqrt(np.mean((qa[keep, j] - np.interp(ta[keep], tb, qb[:, j])) ** 2))
        assert rms[name] == pytest.approx(want, rel=1e-9)
    same = subprocess.run(
        [sys.executable, "-m", "metarobot.cli", "hil-compare", str(runs["fast"] / "run.mcap"),
         str(runs["fast"]), "--out", str(tmp_path / "self.png"), "--json",
         str(tmp_path / "self.json")], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stderr
    assert all(v == 0.0 for v in json.loads((tmp_path / "self.json").read_text())[
        "rms_rad"].values())
    # a run without an MCAP log is named, nothing written
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "report.json").write_text('{"mcap": null}')
    bad = subprocess.run(command[:5] + [str(tmp_path / "bare"), "--out",
                                        str(tmp_path / "bad.png")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "has no MCAP log" in bad.stderr
    assert not (tmp_path / "bad.png").exists()
