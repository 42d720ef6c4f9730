"""Exported policies against the torch policy; the wire protocol; the fixed-rate loop against a
simulated robot in its own process over real UDP sockets on loopback (each test starts the
server on port 0 and ends it by its own process id); the watchdog; adaptation on the robot;
the commands' one-line errors. The link's safety (sessions, keys, replays, timeouts,
signals) is tested in test_link.py."""

import csv
import dataclasses
import json
import math
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metarobot
from metarobot import checkpoint
from metarobot.deploy import protocol as P
from metarobot.deploy.controller import Controller
from metarobot.deploy.export import export, load_metadata
from metarobot.deploy.robot import GymRobot, RobotSpec
from metarobot.deploy.runner import STOP_REASONS, Cycle, Limits, Mismatch, run
from metarobot.deploy.udp import UdpRobot
from metarobot.evaluation import adapt_to_task
from metarobot.families import actions_to_controls
from metarobot.runs import load_policy

ROOT = Path(__file__).resolve().parent.parent
# for runs whose subject is not timing: a loaded test machine may stall a process for tens of
# milliseconds, which the default watchdog (5 misses in a row, 250 ms stale) rightly stops
TOLERANT = Limits(max_misses=100_000, stale_after=2.0)
HIL_TOLERANT = ["--max-misses", "100000", "--stale-ms", "2000"]
CHEETAH = str(ROOT / "checkpoints" / "HalfCheetahVel.safetensors")
ANT = str(ROOT / "checkpoints" / "AntDir.safetensors")


def observations(family_name, n=64, seed=0):
    """Observations from a rollout of the family (realistic ranges), (n, obs_dim) float32."""
    family = metarobot.make_family(family_name, horizon=n)
    sim = metarobot.BatchSim(family, family.sample_tasks(1, seed=seed), seed=seed)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    return sim.rollout(policy).observations[:, 0]


def torch_controls(checkpoint, obs):
    """The reference: the checkpoint's torch module, its mean, the families' action map."""
    loaded = load_policy(checkpoint)
    policy, family = loaded.policy, loaded.family
    with torch.no_grad():
        mean = policy.mean(torch.from_numpy(obs)).double().numpy()
    model = family.load_model()
    return actions_to_controls(mean, np.array(model.actuator_ctrlrange)), family


@pytest.mark.parametrize("checkpoint, family", [(CHEETAH, "HalfCheetahVel"), (ANT, "AntDir")])
def test_onnx_export_equals_the_torch_policy(checkpoint, family, tmp_path):
    import onnxruntime
    obs = observations(family)
    want, _ = torch_controls(checkpoint, obs)
    meta = export(checkpoint, "onnx", tmp_path / "p.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "p.onnx"))
    got = session.run(None, {"observation": obs})[0]
    # to 1e-5 of the control range (the ant's torques span [-150, 150]: float32 sums in
    # another order differ by 5e-5 N m)
    scale = max(abs(a["high"] - a["low"]) / 2 for a in meta["actions"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
    import onnx
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    assert json.loads(props["metarobot"])["family"] == family
    assert load_metadata(tmp_path / "p.onnx") == meta


def build_native(folder, tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(folder), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "metarobot_policy_example"


@pytest.fixture(scope="module")
def native_ant(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native")
    meta = export(ANT, "native", tmp / "ant")
    return tmp / "ant", build_native(tmp / "ant", tmp), meta


@pytest.mark.slow  # a CMake build
def test_native_export_built_by_cmake_equals_the_torch_policy(native_ant):
    folder, program, meta = native_ant
    obs = observations("AntDir")
    want, _ = torch_controls(ANT, obs)
    text = "\n".join(" ".join(f"{x:.9g}" for x in row) for row in obs) + "\n"
    out = subprocess.run([str(program), str(folder / "policy.bin")], input=text,
                         capture_output=True, text=True, check=True).stdout
    got = np.array([[float(x) for x in line.split()] for line in out.strip().splitlines()])
    assert got.shape == want.shape
    # torque controls of [-150, 150]: 1e-5 relative to the range
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * 150)


@pytest.mark.slow  # a CMake build
def test_native_program_refuses_a_bad_file_and_bad_input(native_ant, tmp_path):
    folder, program, meta = native_ant
    blob = (folder / "policy.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(blob[:100])
    r = subprocess.run([str(program), str(tmp_path / "cut.bin")], capture_output=True,
                       text=True, input="")
    assert r.returncode == 1 and "truncated" in r.stderr
    (tmp_path / "junk.bin").write_bytes(b"x" * 64)
    r = subprocess.run([str(program), str(tmp_path / "junk.bin")], capture_output=True,
                       text=True, input="")
    assert r.returncode == 1 and "not a metarobot policy file" in r.stderr
    r = subprocess.run([str(program), str(folder / "policy.bin")], capture_output=True,
                       text=True, input="1 2 3\n")
    assert r.returncode == 1 and "has 3 numbers, the policy takes 125" in r.stderr
    # a corrupted layer size: named, before any allocation (not std::bad_alloc)
    import struct
    bad = bytearray(blob)
    struct.pack_into("<I", bad, 8 + 16 + 4, 1 << 19)  # the first hidden layer's size
    (tmp_path / "big.bin").write_bytes(bytes(bad))
    r = subprocess.run([str(program), str(tmp_path / "big.bin")], capture_output=True,
                       text=True, input="")
    assert r.returncode == 1 and "its layer sizes make" in r.stderr, r.stderr
    # each malformed line named by its number: text, nan, inf, one number too many
    good = " ".join(["0.1"] * 125)
    for line, words in (("abc " + " ".join(["0"] * 124), "line 2: 'abc' is not a finite"),
                        (good.replace("0.1", "nan", 1), "line 2: 'nan' is not a finite"),
                        (good.replace("0.1", "inf", 1), "line 2: 'inf' is not a finite"),
                        (good + " 1", "line 2 has 126 numbers, the policy takes 125")):
        r = subprocess.run([str(program), str(folder / "policy.bin")], capture_output=True,
                           text=True, input=good + "\n" + line + "\n")
        assert r.returncode == 1 and words in r.stderr, r.stderr
        assert len(r.stdout.splitlines()) == 1  # the good first line, nothing after


@pytest.mark.slow  # a CMake build
def test_export_metadata_describes_the_robot_interface(native_ant):
    folder, _, meta = native_ant
    model = metarobot.make_family("AntDir").load_model()
    assert meta["family"] == "AntDir" and meta["obs_dim"] == 125 and meta["act_dim"] == 8
    layout = meta["observation"]
    assert layout[0]["start"] == 0 and layout[-1]["stop"] == 125
    assert all(a["stop"] == b["start"] for a, b in zip(layout, layout[1:]))
    assert [a["name"] for a in meta["actions"]] == [model.actuator(i).name for i in range(8)]
    assert all(a["low"] == -150 and a["high"] == 150 for a in meta["actions"])
    assert meta["control_period"] == pytest.approx(0.02)
    assert meta["versions"]["mujoco"] == metarobot.MUJOCO_VERSION
    assert json.loads((folder / "policy.json").read_text()) == meta


def test_an_adapted_policy_exports_with_its_task(tmp_path):
    adapted = tmp_path / "adapted.safetensors"
    adapt_to_task(CHEETAH, {"goal_velocity": 1.5}, trajectories=2, out=adapted)
    meta = export(adapted, "onnx", tmp_path / "a.onnx")
    assert meta["task"] == {"goal_velocity": 1.5} and meta["adaptation_steps"] == 1
    obs = observations("HalfCheetahVel", 16)
    want, _ = torch_controls(adapted, obs)
    import onnxruntime
    got = onnxruntime.InferenceSession(str(tmp_path / "a.onnx")).run(
        None, {"observation": obs})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format should be one of"):
        export(CHEETAH, "tflite", tmp_path / "x")


def test_export_refuses_an_existing_path_and_non_finite_weights(tmp_path):
    (tmp_path / "there").mkdir()
    with pytest.raises(ValueError, match="exists; give --overwrite"):
        export(CHEETAH, "native", tmp_path / "there")
    with pytest.raises(ValueError, match="is a folder"):
        export(CHEETAH, "onnx", tmp_path / "there")
    export(CHEETAH, "native", tmp_path / "there", overwrite=True)
    assert (tmp_path / "there" / "policy.bin").is_file()
    params, info = checkpoint.load(CHEETAH)
    params = dict(params)
    params["layers.1.weight"] = params["layers.1.weight"].clone()
    params["layers.1.weight"][0, 0] = float("nan")
    checkpoint.save(tmp_path / "nan.safetensors", params, info)
    with pytest.raises(ValueError, match="non-finite weights in layers.1.weight"):
        export(tmp_path / "nan.safetensors", "onnx", tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists()


# ------------------------------------------------------------------------------ the protocol

def test_packets_round_trip_and_bad_ones_are_named():
    spec = RobotSpec(5, 2, 0.01, tuple("abcde"), ("u", "v"), "Fam", 0.05)
    nonce_c, nonce_r = P.new_nonce(), P.new_nonce()
    data = P.encode(P.SPEC, payload=P.spec_payload(spec, 77, nonce_c, nonce_r), stamp=12.5)
    packet = P.decode(data)
    assert (packet.kind, packet.session, packet.seq, packet.stamp) == (P.SPEC, 0, 0, 12.5)
    assert P.parse_spec(packet.payload) == (spec, 77, nonce_c, nonce_r)
    obs = np.arange(5, dtype=np.float32)
    o = P.parse_obs(P.obs_payload(P.Observation(3, obs, 1.5, -2.5, True, False, True)), 5)
    assert (o.step, o.reward, o.ret, o.done, o.terminated, o.safe) == (3, 1.5, -2.5, True,
                                                                        False, True)
    np.testing.assert_array_equal(o.obs, obs)
    assert math.isnan(P.parse_obs(P.obs_payload(P.Observation(0, obs)), 5).ret)
    good = P.encode(P.OBS, session=5, episode=2, seq=9,
                    payload=P.obs_payload(P.Observation(0, obs)))
    p = P.decode(good)
    assert (p.session, p.episode, p.seq, p.mac) == (5, 2, 9, b"")
    bad = {
        "shorter than a header": good[:10],
        "bad magic": b"XXXX" + good[4:],
        "protocol version 1, this side speaks version 2": good[:4] + (1).to_bytes(2, "little")
        + good[6:],
        "checksum mismatch": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "does not match": good[:-4] + b"\0" + good[-4:],
    }
    for words, data in bad.items():
        with pytest.raises(P.ProtocolError, match=words):
            P.decode(data)
    with pytest.raises(P.ProtocolError, match="expected 44 for 5 observations"):
        P.parse_obs(P.obs_payload(P.Observation(0, obs))[:-4], 5)
    for url in ("tcp://x:1", "udp://x", "udp://[::1]", "udp://::1:80", "udp://h:70000"):
        with pytest.raises(ValueError, match="udp://HOST:PORT"):
            P.parse_address(url)
    assert P.parse_address("udp://[::1]:9870") == ("::1", 9870)
    assert P.parse_address("robot.local:9870") == ("robot.local", 9870)


def test_macs_bind_packets_to_their_key_and_session():
    key = b"k" * 32
    ks = P.session_key(key, 5, b"a" * 16, b"b" * 16)
    packet = P.decode(P.encode(P.ACTION, session=5, seq=1, payload=b"\0" * 8, key=ks))
    assert len(packet.mac) == P.MAC_SIZE and P.authentic(packet, ks) is None
    # another session's key (other nonces), another shared key, no key, no MAC
    assert "wrong MAC" in P.authentic(packet, P.session_key(key, 5, b"a" * 16, b"c" * 16))
    assert "wrong MAC" in P.authentic(packet, P.session_key(b"j" * 32, 5, b"a" * 16,
                                                            b"b" * 16))
    assert "this side has no key" in P.authentic(packet, None)
    plain = P.decode(P.encode(P.ACTION, session=5, seq=1, payload=b"\0" * 8))
    assert "requires one" in P.authentic(plain, ks)
    # the sequence window: fresh, repeated, old, a forged jump
    w = P.SeqWindow()
    assert [w.accept(s) for s in (1, 2, 2, 1, 5, 5 + P.SEQ_WINDOW + 1, 6)] == \
        [None, None, "repeated", "old", None, "out of window", None]


# ------------------------------------------------------------------ a robot in its own process

class Server:
    """`metarobot sim-robot` in a subprocess on a free loopback port; ended by close()."""

    def __init__(self, *args, family="HalfCheetahVel", task='{"goal_velocity": 1.5}',
                 horizon=30, command_timeout_ms=1000):
        # a generous command timeout: a loaded test machine may stall the runner for tens of
        # milliseconds, and these tests are not about the timeout (test_link.py is)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metarobot.cli", "sim-robot", family, "--task", task,
             "--port", "0", "--set", f"horizon={horizon}", "--duration", "120",
             "--command-timeout-ms", str(command_timeout_ms), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "udp://" not in line:
            self.close()
            raise RuntimeError(f"sim-robot did not start: {line} {self.proc.stderr.read()}")
        self.url = line.split(" on ")[1].split(",")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()  # this server's own process, by its id
        self.proc.wait(timeout=10)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def server(request):
    s = Server(*getattr(request, "param", ()))
    try:
        yield s
    finally:
        s.close()


def load_cycles(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def check_accounting(report, horizon):
    """What the protocol promises, whatever the timing: every episode ends at the robot's
    horizon, each episode's observations received and missed add up to its steps + 1, the
    missed ones add up to the report's total, and the return is the robot's own."""
    episodes = [e for st in report["stages"] for e in st["episodes"]]
    for e in episodes:
        assert e["complete"] and e["steps"] == horizon, e
        assert e["received"] + e["missed"] == e["steps"] + 1
        assert 1 <= e["acted"] <= e["received"] - 1  # no controls answer the done one
    assert report["observations_missed"] == sum(e["missed"] for e in episodes)
    return episodes


@pytest.mark.slow  # subprocesses
def test_the_loop_end_to_end_over_udp(server, tmp_path):
    robot = UdpRobot.from_url(server.url)
    try:
        assert robot.spec().obs_dim == 20 and robot.spec().control_period == pytest.approx(0.01)
        assert robot.spec().family == "HalfCheetahVel"
        report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=2,
                     report_dir=tmp_path, limits=TOLERANT)
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    assert report["robot_acknowledged_stop"]
    assert report["agreement"]["differences"] == [] and not report["agreement"]["allowed"]
    assert report["agreement"]["checked_against"]["motors"] == list(
        CHEETAH_INTERFACE["action_names"])
    episodes = check_accounting(report, 30)
    stage = report["stages"][0]
    assert stage["returns"] == [e["return"] for e in episodes]
    assert stage["interrupted_returns"] == []
    assert all(np.isfinite(stage["returns"]))
    assert stage["mean_return"] == pytest.approx(np.mean(stage["returns"]))
    assert report["timing"]["cycles"] == sum(e["acted"] for e in episodes)
    rows = load_cycles(tmp_path / "cycles.csv")
    assert list(rows[0])[:6] == [f.name for f in dataclasses.fields(Cycle)][:6]
    acted = [r for r in rows if r["ctrl_0"] != ""]
    assert len(acted) == report["timing"]["cycles"]
    # the controls logged are the exported map of the logged observation
    obs = np.array([[float(r[f"obs_{i}"]) for i in range(20)] for r in acted], np.float32)
    ctrl = np.array([[float(r[f"ctrl_{i}"]) for i in range(6)] for r in acted])
    want, _ = torch_controls(CHEETAH, obs)
    np.testing.assert_allclose(ctrl, want, rtol=1e-5, atol=2e-6)
    # the return of an episode is the robot's running return in its last observation
    for ep, e in enumerate(episodes):
        last = [r for r in rows if r["episode"] == str(ep) and r["ret"] != ""][-1]
        assert last["done"] == "1" and float(last["ret"]) == pytest.approx(e["return"])
    assert (tmp_path / "report.png").stat().st_size > 10_000
    from PIL import Image
    with Image.open(tmp_path / "report.png") as png:  # four panels: the joints' traces too
        assert png.size[0] == round(17 * 110)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["timing"]["period_jitter_us"]["count"] > 20
    assert saved == report


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize("server", [("--drop", "0.2", "--seed", "3")], indirect=True)
def test_dropped_packets_are_counted_and_the_run_completes(server, tmp_path):
    robot = UdpRobot.from_url(server.url)
    try:
        report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=2,
                     report_dir=tmp_path, limits=TOLERANT)
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    # 20% of observations lost: gaps in the steps received, and cycles with nothing new;
    # still every step counted (the robot's step count and return travel in each OBS)
    assert report["observations_missed"] > 0
    assert report["timing"]["stale_cycles"] > 0
    check_accounting(report, 30)


@pytest.mark.slow  # subprocesses
def test_a_killed_robot_ends_the_run_through_the_watchdog(tmp_path):
    server = Server(horizon=100000)
    robot = UdpRobot.from_url(server.url)
    killer = threading.Timer(0.6, server.proc.kill)
    try:
        killer.start()
        report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=1,
                     report_dir=tmp_path, limits=Limits(stale_after=0.1))
    finally:
        killer.cancel()
        robot.close()
        server.close()
    assert report["stopped"] == "stale observation" and report["stopped"] in STOP_REASONS
    assert "no new observation for" in report["detail"]
    assert report["robot_acknowledged_stop"] is False
    rows = load_cycles(tmp_path / "cycles.csv")  # whole, up to the stop
    assert len(rows) > 20 and rows[-1]["stale"] == "1"
    assert all(len(r) == len(rows[0]) for r in rows)
    # the one episode was cut: reported apart, no mean over complete episodes
    stage = report["stages"][0]
    assert stage["returns"] == [] and len(stage["interrupted_returns"]) == 1
    assert stage["mean_return"] is None


@pytest.mark.slow  # subprocesses
def test_malformed_and_wrong_version_packets_are_rejected_with_a_reason(server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    try:
        good = P.encode(P.HELLO, payload=P.hello_payload(P.new_nonce()))
        v1 = b"MRBT" + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + bytes(20)
        for data, words in ((b"MRB", "shorter than a header"),
                            (b"hello robot", "bad magic"),
                            (v1, "protocol version 1, this side speaks version 2"),
                            (good[:-1] + bytes([good[-1] ^ 0xFF]), "checksum"),
                            (P.encode(P.HELLO, payload=b"\0" * 7), "HELLO payload of 7"),
                            (P.encode(P.ACTION, payload=b"\0" * 8), "needs a session")):
            sock.sendto(data, ("127.0.0.1", server.port))
            reply = P.decode(sock.recvfrom(P.MAX_PACKET)[0])
            assert reply.kind == P.ERROR and words in reply.payload.decode(), reply
        # the robot carries on
        sock.sendto(good, ("127.0.0.1", server.port))
        reply = P.decode(sock.recvfrom(P.MAX_PACKET)[0])
        assert reply.kind == P.SPEC
    finally:
        sock.close()
    assert server.proc.poll() is None


def test_the_client_rejects_garbage_from_the_robot_side():
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))
    fake.settimeout(2.0)
    port = fake.getsockname()[1]
    spec = RobotSpec(3, 1, 0.01, command_timeout=0.05)

    def answer():
        data, peer = fake.recvfrom(P.MAX_PACKET)
        nonce = P.parse_hello(P.decode(data).payload)
        fake.sendto(b"\x00garbage", peer)
        ok = P.encode(P.SPEC, payload=P.spec_payload(spec, 9, nonce, P.new_nonce()))
        fake.sendto(ok[:-1] + b"\0", peer)  # bad CRC
        fake.sendto(P.encode(P.SPEC, payload=P.spec_payload(spec, 8, P.new_nonce(),
                                                             P.new_nonce())), peer)  # stale
        fake.sendto(ok, peer)
    t = threading.Thread(target=answer)
    t.start()
    try:
        robot = UdpRobot("127.0.0.1", port)
        assert robot.spec() == spec and robot.session == 9
        assert robot.rejected == {"malformed": 2, "stale SPEC": 1}
        robot.close()
    finally:
        t.join()
        fake.close()
    with pytest.raises(ValueError, match="no robot answered"):
        UdpRobot("127.0.0.1", port, timeout=0.3)


# ----------------------------------------------------------------- watchdog without a network

CHEETAH_INTERFACE = Controller.from_checkpoint(CHEETAH).interface()


def cheetah_robot(env, cls=GymRobot):
    """A GymRobot that says it is the cheetah (names, family, control period), so that the
    agreement check passes."""
    i = CHEETAH_INTERFACE
    return cls(env, i["control_period"], i["observation_names"], i["action_names"],
               i["family"])


class FakeEnv:
    """A gymnasium-like env whose observations a test writes: joint limits, NaN."""

    def __init__(self, obs_fn, horizon=20):
        import gymnasium as gym
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (20,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (6,), np.float32)
        self.obs_fn, self.horizon, self.t = obs_fn, horizon, 0

    def reset(self, seed=None):
        self.t = 0
        return self.obs_fn(0), {}

    def step(self, action):
        self.t += 1
        return self.obs_fn(self.t), 1.0, False, self.t >= self.horizon, {}

    def close(self):
        pass


def zeros(t):
    return np.zeros(20, np.float32)


def test_watchdog_stops_at_a_joint_limit_and_on_a_non_finite_observation():
    def bent(t):  # the cheetah's back thigh (qpos[3], obs[2]) bent past its range at t = 5
        obs = np.zeros(20, np.float32)
        obs[2] = -3.0 if t >= 5 else 0.0
        return obs
    report = run(Controller.from_checkpoint(CHEETAH), cheetah_robot(FakeEnv(bent)))
    assert report["stopped"] == "joint limit" and "bthigh" in report["detail"]
    assert [e["acted"] for e in report["stages"][0]["episodes"]] == [5]

    def broken(t):
        return np.full(20, np.nan if t == 3 else 0.0, np.float32)
    report = run(Controller.from_checkpoint(CHEETAH), cheetah_robot(FakeEnv(broken)))
    assert report["stopped"] == "non-finite observation"


def test_watchdog_stops_on_non_finite_controls_and_on_ctrl_c():
    controller = Controller.from_checkpoint(CHEETAH)
    params = dict(controller.params)
    params["layers.0.bias"] = torch.full_like(params["layers.0.bias"], float("nan"))
    controller.set_params(params)
    env = FakeEnv(zeros)
    report = run(controller, cheetah_robot(env))
    assert report["stopped"] == "non-finite controls" and env.t == 0

    class Interrupting(GymRobot):
        stopped = 0

        def send(self, step, controls):
            if step == 4:
                raise KeyboardInterrupt
            super().send(step, controls)

        def stop(self, timeout=0.5):
            Interrupting.stopped += 1
            return True
    robot = cheetah_robot(FakeEnv(zeros), Interrupting)
    report = run(Controller.from_checkpoint(CHEETAH), robot)
    assert report["stopped"] == "interrupted" and Interrupting.stopped == 1


def test_the_watchdog_wakes_on_its_own_deadline():
    """A robot that falls silent after its first observation, a loop at 5 Hz (ticks at 0,
    200, 400 ms, each waiting up to 100 ms for its observation): the stale limit (350 ms)
    passes between two cycles, and the watchdog stops the run then, not when the next
    cycle's wait ends (500 ms)."""
    class Silent(GymRobot):
        def read(self, timeout=0.0):
            return None
    start = time.monotonic()
    report = run(Controller.from_checkpoint(CHEETAH), cheetah_robot(FakeEnv(zeros), Silent),
                 rate=5.0, limits=Limits(stale_after=0.35), allow_mismatch=True)
    assert report["stopped"] == "stale observation"
    # a loaded machine wakes late: well before the cycle after the deadline is done
    waited = float(report["detail"].split("for ")[1].split(" ms")[0])
    assert 350 <= waited < 450 and time.monotonic() - start < 5


def test_bad_loop_settings_are_refused_before_the_robot_moves():
    env = FakeEnv(zeros)
    controller = Controller.from_checkpoint(CHEETAH)
    with pytest.raises(ValueError, match="shorter than the stale limit"):
        run(controller, cheetah_robot(env), rate=1e-9)
    with pytest.raises(ValueError, match="episodes should be an integer >= 1"):
        run(controller, cheetah_robot(env), episodes=0)
    assert env.t == 0


def test_the_robot_must_agree_with_the_policy_before_the_first_command(tmp_path):
    """Sizes alone do not make the policy's robot: reversed actuators, another control
    period, another family of the same sizes are each named, before any command."""
    i = CHEETAH_INTERFACE
    cases = {
        "action names: motor 0 is 'ffoot' on the robot, 'bthigh' in the deployment config":
            dict(action_names=i["action_names"][::-1]),
        "control period: the robot's is 2 ms (500 Hz), the deployment config's 10 ms (100 Hz)":
            dict(control_period=0.002),
        "family: the robot runs 'HalfCheetahDir'": dict(family="HalfCheetahDir"),
        "observation names: observation 8 is 'qvel rooty'": dict(
            observation_names=i["observation_names"][:8] + ("qvel rooty", "qvel rootx")
            + i["observation_names"][10:]),
        "action names: the robot names no action entries": dict(action_names=()),
    }
    for words, change in cases.items():
        args = dict(i, **change)
        env = FakeEnv(zeros)
        robot = GymRobot(env, args["control_period"], args["observation_names"],
                         args["action_names"], args["family"])
        with pytest.raises(Mismatch, match=words.replace("(", r"\(").replace(")", r"\)")):
            run(Controller.from_checkpoint(CHEETAH), robot, report_dir=tmp_path / "r")
        assert env.t == 0 and not (tmp_path / "r").exists()
    robot = GymRobot(FakeEnv(zeros), 0.01, action_names=i["action_names"][::-1])
    report = run(Controller.from_checkpoint(CHEETAH), robot, allow_mismatch=True,
                 limits=TOLERANT)
    assert report["stopped"] == "completed" and report["agreement"]["allowed"]
    assert len(report["agreement"]["differences"]) == 3  # family, observation names, actions


def test_a_gymnasium_env_as_the_robot():
    import gymnasium as gym
    env = gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0}, horizon=25,
                   normalize_actions=False)
    report = run(Controller.from_checkpoint(CHEETAH), GymRobot(env), episodes=2,
                 limits=TOLERANT)
    assert report["stopped"] == "completed"
    assert report["agreement"]["differences"] == []  # the env says what it is
    eps = report["stages"][0]["episodes"]
    assert [e["steps"] for e in eps] == [25, 25] and [e["missed"] for e in eps] == [0, 0]
    assert all(np.isfinite(report["stages"][0]["returns"]))


def test_adaptation_on_the_robot_is_the_inner_step():
    """Episodes from the robot, one inner step: a step size of 0 changes nothing (the
    control); a small one lowers the policy-gradient loss of those episodes, as the inner
    step on simulated batches does."""
    import gymnasium as gym
    from metarobot import meta
    from metarobot.deploy.controller import episodes_to_trajectories
    from metarobot.samples import process
    env = gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0}, horizon=40,
                   normalize_actions=False)
    controller = Controller.from_checkpoint(CHEETAH)
    before = dict(controller.params)
    episodes = []  # what run() hands the inner step
    original = Controller.adapt

    def spy(self, eps, step, lr=None):
        episodes.extend(eps)
        return original(self, eps, step, lr)
    Controller.adapt = spy
    try:
        report = run(controller, cheetah_robot(env), episodes=3, adapt_steps=1, lr=0.0,
                     limits=TOLERANT)
    finally:
        Controller.adapt = original
    assert report["sampled_actions"]
    assert len(episodes) == 3 and len(report["stages"]) == 2
    assert report["stages"][1]["step_size"] == 0.0
    for k in before:
        assert torch.equal(controller.params[k], before[k])  # lr 0: the control
    traj = episodes_to_trajectories(episodes, controller.family)
    # the rewards adapted on are the robot's: per episode they sum to its return
    for i, e in enumerate(episodes):
        assert traj.rewards[:, i].sum() == pytest.approx(e.ret, rel=1e-5)
    batch = process(traj, 1, controller.gamma, controller.gae_lambda)
    loss0 = meta.pg_loss(controller.spec, before, batch.obs[0], batch.actions[0],
                         batch.advantages[0], batch.mask[0])
    controller.adapt(episodes, 0, lr=1e-3)
    loss1 = meta.pg_loss(controller.spec, controller.params, batch.obs[0], batch.actions[0],
                         batch.advantages[0], batch.mask[0])
    assert float(loss1) < float(loss0)
    assert any(not torch.equal(controller.params[k], before[k]) for k in before)


@pytest.mark.slow  # subprocesses
def test_the_hil_command_runs_and_reports(server, tmp_path):
    command = [sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot", server.url,
               "--episodes", "1", "--adapt-steps", "1", "--report", str(tmp_path / "r"),
               *HIL_TOLERANT]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stopped: completed" in out.stdout and "after 1 adaptation steps" in out.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert len(report["stages"]) == 2 and report["sampled_actions"]
    # the MAML checkpoint's first step: its training step size
    assert report["stages"][1]["step_size"] == pytest.approx(0.1)
    # the same folder again: refused before any work, the first run's report intact
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "holds an earlier run; give --overwrite" in again.stderr
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == report


@pytest.mark.slow  # subprocesses
def test_the_hil_command_names_an_unreachable_robot(tmp_path):
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot",
                          "udp://127.0.0.1:9", "--connect-timeout", "0.3", "--report",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no robot answered at udp://127.0.0.1:9" in out.stderr
    assert not (tmp_path / "r").exists()


def one_line_error(args, words):
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", *args], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert words in out.stderr, out.stderr


@pytest.mark.slow  # subprocesses
def test_the_commands_refuse_bad_input_in_one_line(tmp_path, server):
    (tmp_path / "file").write_text("x")
    (tmp_path / "out").mkdir()
    hil = ["hil", CHEETAH, "--connect-timeout", "0.3", "--robot"]
    one_line_error(hil + ["tcp://127.0.0.1:9"], "the robot speaks UDP")
    one_line_error(hil + ["udp://[::1]"], "udp://[ADDRESS]:PORT for IPv6")
    one_line_error(hil + ["udp://no-such-host.invalid:9870"], "cannot resolve the robot's host")
    one_line_error(hil + [server.url, "--report", str(tmp_path / "file")], "is a file")
    one_line_error(hil + [server.url, "--report", "/proc/metarobot-report"],
                   "cannot write the report folder")
    one_line_error(hil + [server.url, "--key-file", str(tmp_path / "file")],
                   "holds 1 bytes; a key needs at least 16")
    one_line_error(hil + [server.url, "--odometry", "rt/sportmodestate"],
                   "--odometry is a Unitree robot's")
    one_line_error(hil + [server.url, "--command", "0.5,0,0", "--episode-s", "3"],
                   "--command, --episode-s are a Unitree robot's")
    one_line_error(["export", CHEETAH, "--format", "native", "--out", str(tmp_path / "out")],
                   "exists; give --overwrite")
    # the robot's port is taken (the README's robot command run twice)
    one_line_error(["sim-robot", "HalfCheetahVel", "--task", '{"goal_velocity": 1}', "--port",
                    str(server.port)],
                   f"cannot listen on udp://127.0.0.1:{server.port}")
    # --rate far below a robot's rate: argparse names the range
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", *hil, server.url, "--rate",
                          "1e-9"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--rate" in out.stderr


def test_a_run_without_cycles_reports_null_not_nan_and_says_so(tmp_path):
    """A robot whose first observation is broken: no cycle runs. report.json is strict JSON
    (null where there is no value) and the summary says "no cycles" and "no complete
    episode", not "mean return 0.00" or "p50 nan us"."""
    from metarobot.deploy.runner import summary

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    report = run(Controller.from_checkpoint(CHEETAH),
                 cheetah_robot(FakeEnv(lambda t: np.full(20, np.nan, np.float32))),
                 report_dir=tmp_path)
    assert report["stopped"] == "non-finite observation"
    saved = strict((tmp_path / "report.json").read_text())
    assert saved["timing"]["read_to_send_us"] == {"p50": None, "p99": None, "max": None,
                                                  "count": 0}
    assert saved["stages"][0]["mean_return"] is None
    text = "\n".join(summary(saved))
    assert "no cycles" in text and "no complete episode" in text and "nan" not in text
