"""Exported policies against the torch policy; the wire protocol; the fixed-rate loop against a
simulated robot in its own process over real UDP sockets on loopback (each test starts the
server and ends it); the watchdog; adaptation on the robot."""

import csv
import json
import math
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import metarobot
import metarobot.train
from metarobot.deploy import protocol as P
from metarobot.deploy.export import export, load_metadata
from metarobot.deploy.robot import GymRobot, RobotSpec
from metarobot.deploy.runner import STOP_REASONS, Controller, Limits, run
from metarobot.families import actions_to_controls

ROOT = Path(__file__).resolve().parent.parent
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
    policy, config, family, _ = metarobot.train.load_policy(checkpoint)
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
    metarobot.train.adapt_to_task(CHEETAH, {"goal_velocity": 1.5}, trajectories=2, out=adapted)
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


# ------------------------------------------------------------------------------ the protocol

def test_packets_round_trip_and_bad_ones_are_named():
    spec = RobotSpec(5, 2, 0.01, ("a",) * 5, ("u", "v"))
    packet = P.decode(P.encode(P.SPEC, 7, P.spec_payload(spec), stamp=12.5))
    assert (packet.kind, packet.seq, packet.stamp) == (P.SPEC, 7, 12.5)
    assert P.parse_spec(packet.payload) == spec
    obs = np.arange(5, dtype=np.float32)
    step, got, reward, done, term = P.parse_obs(P.obs_payload(3, obs, 1.5, True, False), 5)
    assert (step, reward, done, term) == (3, 1.5, True, False)
    np.testing.assert_array_equal(got, obs)
    assert math.isnan(P.parse_obs(P.obs_payload(0, obs), 5)[2])
    good = P.encode(P.OBS, 1, P.obs_payload(0, obs))
    bad = {
        "shorter than a header": good[:10],
        "bad magic": b"XXXX" + good[4:],
        "protocol version 9": good[:4] + (9).to_bytes(2, "little") + good[6:],
        "checksum mismatch": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "does not match": good[:-4] + b"\0" + good[-4:],
    }
    for words, data in bad.items():
        with pytest.raises(P.ProtocolError, match=words):
            P.decode(data)
    with pytest.raises(P.ProtocolError, match="expected 36 for 5 observations"):
        P.parse_obs(P.obs_payload(0, obs)[:-4], 5)
    with pytest.raises(ValueError, match="udp://HOST:PORT"):
        P.parse_address("tcp://x")


# ------------------------------------------------------------------ a robot in its own process

class Server:
    """`metarobot sim-robot` in a subprocess on a free loopback port; ended by close()."""

    def __init__(self, *args, family="HalfCheetahVel", task='{"goal_velocity": 1.5}',
                 horizon=30):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metarobot.cli", "sim-robot", family, "--task", task,
             "--port", "0", "--set", f"horizon={horizon}", "--duration", "120", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "udp://" not in line:
            self.close()
            raise RuntimeError(f"sim-robot did not start: {line} {self.proc.stderr.read()}")
        self.url = line.split(" on ")[1].split(",")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
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


def test_the_loop_end_to_end_over_udp(server, tmp_path):
    robot = P.UdpRobot.from_url(server.url)
    try:
        assert robot.spec().obs_dim == 20 and robot.spec().control_period == pytest.approx(0.01)
        report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=2,
                     report_dir=tmp_path)
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    assert report["robot_acknowledged_stop"]
    stage = report["stages"][0]
    assert stage["lengths"] == [30, 30] and all(stage["complete"])
    assert all(np.isfinite(stage["returns"]))
    assert report["timing"]["cycles"] == 60
    rows = load_cycles(tmp_path / "cycles.csv")
    acted = [r for r in rows if r["ctrl_0"] != ""]
    assert len(acted) == 60
    # the controls logged are the exported map of the logged observation
    obs = np.array([[float(r[f"obs_{i}"]) for i in range(20)] for r in acted], np.float32)
    ctrl = np.array([[float(r[f"ctrl_{i}"]) for i in range(6)] for r in acted])
    want, _ = torch_controls(CHEETAH, obs)
    np.testing.assert_allclose(ctrl, want, rtol=1e-5, atol=2e-6)
    # rewards come from the robot, and sum to the returns of the report
    rewards = [float(r["reward"]) for r in rows if r["reward"] not in ("", "nan")]
    assert sum(rewards) == pytest.approx(sum(stage["returns"]), rel=1e-5)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["timing"]["period_jitter_us"]["count"] > 50


@pytest.mark.parametrize("server", [("--drop", "0.2", "--seed", "3")], indirect=True)
def test_dropped_packets_are_counted_and_the_run_completes(server, tmp_path):
    robot = P.UdpRobot.from_url(server.url)
    try:
        report = run(Controller.from_checkpoint(CHEETAH), robot, episodes=2,
                     report_dir=tmp_path)
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    # 20% of observations lost: gaps in the steps received, and cycles with nothing new
    assert report["observations_missed"] > 0
    assert report["timing"]["stale_cycles"] > 0
    assert all(report["stages"][0]["complete"])


def test_a_killed_robot_ends_the_run_through_the_watchdog(tmp_path):
    server = Server(horizon=100000)
    robot = P.UdpRobot.from_url(server.url)
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


def test_malformed_and_wrong_version_packets_are_rejected_with_a_reason(server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    try:
        good = P.encode(P.HELLO, 1)
        for data, words in ((b"hello robot", "shorter than a header"),
                            (good[:4] + (2).to_bytes(2, "little") + good[6:],
                             "protocol version 2"),
                            (good[:-1] + bytes([good[-1] ^ 0xFF]), "checksum"),
                            (P.encode(P.ACTION, 2, b"\0" * 7), "ACTION payload of 7 bytes")):
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
    spec = RobotSpec(3, 1, 0.01)

    def answer():
        data, peer = fake.recvfrom(P.MAX_PACKET)
        fake.sendto(b"\x00garbage", peer)
        fake.sendto(P.encode(P.SPEC, 1, P.spec_payload(spec))[:-1] + b"\0", peer)  # bad CRC
        fake.sendto(P.encode(P.SPEC, 2, P.spec_payload(spec)), peer)
    t = threading.Thread(target=answer)
    t.start()
    try:
        robot = P.UdpRobot("127.0.0.1", port)
        assert robot.spec() == spec
        assert sum(robot.rejected.values()) == 2 and "checksum" in robot.last_error
        robot.close()
    finally:
        t.join()
        fake.close()
    with pytest.raises(ValueError, match="no robot answered"):
        P.UdpRobot("127.0.0.1", port, timeout=0.3)


# ----------------------------------------------------------------- watchdog without a network

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


def test_watchdog_stops_at_a_joint_limit_and_on_a_non_finite_observation():
    def bent(t):  # the cheetah's back thigh (qpos[3], obs[2]) bent past its range at t = 5
        obs = np.zeros(20, np.float32)
        obs[2] = -3.0 if t >= 5 else 0.0
        return obs
    report = run(Controller.from_checkpoint(CHEETAH), GymRobot(FakeEnv(bent), 0.002))
    assert report["stopped"] == "joint limit" and "bthigh" in report["detail"]
    assert report["stages"][0]["lengths"] == [5]

    def broken(t):
        return np.full(20, np.nan if t == 3 else 0.0, np.float32)
    report = run(Controller.from_checkpoint(CHEETAH), GymRobot(FakeEnv(broken), 0.002))
    assert report["stopped"] == "non-finite observation"


def test_watchdog_stops_on_non_finite_controls_and_on_ctrl_c():
    controller = Controller.from_checkpoint(CHEETAH)
    params = dict(controller.params)
    params["layers.0.bias"] = torch.full_like(params["layers.0.bias"], float("nan"))
    controller.set_params(params)
    env = FakeEnv(lambda t: np.zeros(20, np.float32))
    report = run(controller, GymRobot(env, 0.002))
    assert report["stopped"] == "non-finite controls" and env.t == 0

    class Interrupting(GymRobot):
        stopped = 0

        def send(self, step, controls):
            if step == 4:
                raise KeyboardInterrupt
            super().send(step, controls)

        def stop(self):
            Interrupting.stopped += 1
    robot = Interrupting(FakeEnv(lambda t: np.zeros(20, np.float32)), 0.002)
    report = run(Controller.from_checkpoint(CHEETAH), robot)
    assert report["stopped"] == "interrupted" and Interrupting.stopped == 1


def test_a_gymnasium_env_as_the_robot():
    import gymnasium as gym
    env = gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0}, horizon=25,
                   normalize_actions=False)
    report = run(Controller.from_checkpoint(CHEETAH), GymRobot(env, control_period=0.002),
                 episodes=2)
    assert report["stopped"] == "completed"
    assert report["stages"][0]["lengths"] == [25, 25]
    # the policy's mean actions, deterministic: both episodes differ only by reset noise
    assert all(np.isfinite(report["stages"][0]["returns"]))


def test_adaptation_on_the_robot_is_the_inner_step():
    """Episodes from the robot, one inner step: a step size of 0 changes nothing (the
    control); a small one lowers the policy-gradient loss of those episodes, as the inner
    step on simulated batches does."""
    import gymnasium as gym
    from metarobot import meta
    from metarobot.deploy.runner import episodes_to_trajectories
    env = gym.make("metarobot/HalfCheetahVel-v0", task={"goal_velocity": 1.0}, horizon=40,
                   normalize_actions=False)
    controller = Controller.from_checkpoint(CHEETAH)
    before = dict(controller.params)
    episodes = []  # what run() hands the inner step
    original = Controller.adapt

    def spy(self, eps, batched, lr):
        episodes.extend(eps)
        return original(self, eps, batched, lr)
    Controller.adapt = spy
    try:
        report = run(controller, GymRobot(env, control_period=0.001), episodes=3,
                     adapt_steps=1, lr=0.0)
    finally:
        Controller.adapt = original
    assert report["sampled_actions"]
    assert len(episodes) == 3 and len(report["stages"]) == 2
    for k in before:
        assert torch.equal(controller.params[k], before[k])  # lr 0: the control
    traj = episodes_to_trajectories(episodes, controller.family)
    batch = meta.process(traj, 1, controller.gamma, controller.gae_lambda)
    loss0 = meta.pg_loss(controller.spec, before, batch.obs[0], batch.actions[0],
                         batch.advantages[0], batch.mask[0])
    controller.adapt(episodes, batched=False, lr=1e-3)
    loss1 = meta.pg_loss(controller.spec, controller.params, batch.obs[0], batch.actions[0],
                         batch.advantages[0], batch.mask[0])
    assert float(loss1) < float(loss0)
    assert any(not torch.equal(controller.params[k], before[k]) for k in before)


def test_the_hil_command_runs_and_reports(server, tmp_path):
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot",
                          server.url, "--episodes", "1", "--adapt-steps", "1", "--report",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stopped: completed" in out.stdout and "after 1 adaptation steps" in out.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert len(report["stages"]) == 2 and report["sampled_actions"]


def test_the_hil_command_names_an_unreachable_robot(tmp_path):
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot",
                          "udp://127.0.0.1:9", "--connect-timeout", "0.3", "--report",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no robot answered at udp://127.0.0.1:9" in out.stderr
    assert not (tmp_path / "r").exists()
