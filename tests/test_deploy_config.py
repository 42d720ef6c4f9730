"""The deployment config (metarobot.deploy.deployment) against the family it comes from and the
simulator's own observations; an ONNX export plus the config against the torch policy from raw
sensor readings; the runner's check of a robot against the config (motor order, sizes, rate,
--allow-mismatch); and the simulated robot's reality gap in the family's vocabulary."""

import dataclasses
import json
import re
import threading
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

import metarobot
from metarobot import terms as T
from metarobot.config import TrainConfig, make_policy
from metarobot.deploy import protocol as P
from metarobot.deploy.controller import Controller
from metarobot.deploy.deployment import (DEPLOY_VERSION, check_deployment_config,
                                         deployment_config, joint_targets,
                                         load_deployment_config, motor_names,
                                         observation_from_readings)
from metarobot.deploy.export import export, load_metadata
from metarobot.deploy.robot import GymRobot, RobotSpec
from metarobot.deploy.runner import Limits, Mismatch, run
from metarobot.deploy.sim_robot import RealityGap, SimRobot, robot_family
from metarobot.deploy.udp import UdpRobot
from metarobot.families import GO2_HOME
from metarobot.runs import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TOLERANT = Limits(max_misses=100_000, stale_after=2.0)
LEGS = ("FR", "FL", "RR", "RL")
MOTORS = [f"{leg}_{part}" for leg in LEGS for part in ("hip", "thigh", "calf")]
# the robot seen in a mirror: left and right legs swapped
MIRRORED = [f"{leg}_{part}" for leg in ("FL", "FR", "RL", "RR")
            for part in ("hip", "thigh", "calf")]
GO2_TASK = dict({"payload": 0.0, "com_shift_x": 0.0, "friction": 0.8, "kp": 20.0, "kd": 0.5,
                 "command_delay_ms": 0.0}, **{f"strength[{i}]": 1.0 for i in range(12)})


@pytest.fixture(scope="module")
def go2_checkpoint(tmp_path_factory):
    """A Go2Walk checkpoint with random weights large enough to move the joints."""
    config = TrainConfig(family="Go2Walk", hidden_sizes=(32, 32))
    family = metarobot.make_family("Go2Walk")
    policy = make_policy(config, family)
    torch.manual_seed(3)
    theta = {n: p.detach() + 0.3 * torch.randn_like(p) for n, p in policy.params().items()}
    out = tmp_path_factory.mktemp("go2")
    save_checkpoint(out, theta, config, 0, 0.0, keep=False)
    return out / "checkpoints" / "latest.safetensors"


def test_go2walk_config_lists_its_observation_actions_motors_rates_and_limits():
    family = metarobot.make_family("Go2Walk")
    config = deployment_config(family)
    check_deployment_config(config)
    json.dumps(config, allow_nan=False)  # strict JSON: no inf, no NaN
    assert config["version"] == DEPLOY_VERSION and config["family"] == "Go2Walk"
    obs = config["observation"]
    assert obs["size"] == 45 == len(obs["names"])
    assert [(t["kind"], t["start"], t["size"]) for t in obs["terms"]] == [
        ("BodyAngularVelocity", 0, 3), ("ProjectedGravity", 3, 3), ("Command", 6, 2),
        ("Command", 8, 1), ("Qpos", 9, 12), ("Qvel", 21, 12), ("LastAction", 33, 12)]
    gyro, gravity, lin_cmd, yaw_cmd, qpos, qvel, last = obs["terms"]
    assert (gyro["scale"], gyro["noise_std"], gyro["body"]) == (0.25, 0.2, "base")
    assert (lin_cmd["commands"], lin_cmd["scale"]) == (["vx", "vy"], 2.0)
    assert (yaw_cmd["commands"], yaw_cmd["scale"]) == (["yaw_rate"], 0.25)
    assert qpos["offset"] == list(GO2_HOME) and qpos["first"] == 7 and qpos["noise_std"] == 0.01
    assert qpos["joints"] == qvel["joints"] == [f"{m}_joint" for m in MOTORS]
    assert (qvel["scale"], qvel["noise_std"], qvel["offset"], qvel["clip"]) == (0.05, 1.5,
                                                                                None, None)
    assert [t["sensor"] for t in obs["terms"]] == [True, True, False, False, True, True, False]
    assert config["rates"] == {"policy_hz": 50.0, "control_period_s": 0.02,
                               "physics_hz": 200.0, "decimation": 4}
    action = config["action"]
    assert (action["size"], action["kind"], action["normalized"]) == (12, "servo", False)
    assert action["command_delay_ms"] == [0.0, 0.0]  # the family's; tasks draw 0-20 ms
    motors = config["motors"]
    assert motor_names(config) == MOTORS
    assert [m["policy_index"] for m in motors] == list(range(12))
    assert [m["default_pose"] for m in motors] == list(GO2_HOME)
    assert all(m["kp"] == 25.0 and m["kd"] == 0.5 and m["action_scale"] == 0.25
               for m in motors)
    assert [m["saturation_torque"] for m in motors] == [23.7, 23.7, 45.43] * 4
    assert [m["max_velocity"] for m in motors] == [30.1, 30.1, 20.07] * 4
    assert [m["effort_limit"] for m in motors] == [23.7, 23.7, 45.43] * 4
    model = family.load_model()
    for m in motors:
        assert m["joint"] == m["name"] + "_joint"
        assert m["joint_range"] == pytest.approx(list(model.joint(m["joint"]).range))
    assert config["commands"] == {"names": ["vx", "vy", "yaw_rate"], "low": [-1.0, -0.5, -1.0],
                                  "high": [1.0, 0.5, 1.0], "resample_steps": 250}
    assert config["limits"] == {"tilt_max_degrees": 60.0, "tilt_body": "base"}


def test_a_torque_family_maps_centre_and_half_range_onto_its_control_ranges():
    config = deployment_config(metarobot.make_family("HalfCheetahVel"))
    assert config["action"]["kind"] == "torque" and config["action"]["normalized"]
    assert config["commands"] is None and config["limits"]["tilt_max_degrees"] is None
    thigh = config["motors"][0]
    assert (thigh["name"], thigh["ctrl_low"], thigh["ctrl_high"], thigh["centre"],
            thigh["half_range"], thigh["effort_limit"]) == ("bthigh", -1.0, 1.0, 0.0, 1.0,
                                                            120.0)
    with pytest.raises(ValueError, match="drives torques"):
        joint_targets(config, np.zeros(6))


def go2_raw_readings(model, data, commands, last_action):
    """What the robot's own sensors give, one array per Go2Walk observation term: the IMU's
    gyroscope (body frame) and gravity direction, the operator's commands, joint encoders
    (rad, rad/s), the policy's previous action."""
    base = model.body("base").id
    velocity = np.zeros(6)
    # the body's own frame (XBODY), not its inertial frame (BODY), as a gyroscope on it
    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_XBODY, base, velocity, 1)
    gravity = data.xmat[base].reshape(3, 3).T @ np.array([0.0, 0.0, -1.0])
    return [velocity[:3], gravity, commands[:2], commands[2:3], data.qpos[7:19],
            data.qvel[6:18], last_action]


def test_onnx_export_and_the_config_give_the_torch_policys_joint_targets_from_raw_readings(
        go2_checkpoint, tmp_path):
    """A Go2Walk rollout with exact sensors and a fixed command: at every step the config's
    rule turns the simulator's raw state into the simulator's own observation, and the ONNX
    policy on it, through the servo map, gives the torch policy's joint targets."""
    import onnxruntime
    export(go2_checkpoint, "onnx", tmp_path / "go2.onnx")
    config = load_deployment_config(tmp_path / "go2.onnx")
    assert load_deployment_config(tmp_path / "go2.deploy.json") == config
    session = onnxruntime.InferenceSession(str(tmp_path / "go2.onnx"))
    loaded = metarobot.runs.load_policy(go2_checkpoint)
    command = (0.6, -0.1, 0.3)
    family = dataclasses.replace(
        robot_family("Go2Walk", {"horizon": 30}, noise_scale=0.0),
        commands=T.Commands(("vx", "vy", "yaw_rate"), command, command))
    task = family.task(**GO2_TASK, noise_scale=0.0)
    sim = metarobot.BatchSim(family, [task], seed=1, num_threads=1, autoreset=False)
    model = family.load_model()
    data = mujoco.MjData(model)
    obs = sim.reset()[0]
    last = np.zeros(12)
    for step in range(20):
        qpos, qvel = sim.get_state()
        data.qpos[:], data.qvel[:] = qpos[0], qvel[0]
        mujoco.mj_forward(model, data)
        raw = go2_raw_readings(model, data, np.array(command), last)
        rebuilt = observation_from_readings(config, raw)
        np.testing.assert_allclose(rebuilt, obs, rtol=1e-5, atol=1e-5, err_msg=f"step {step}")
        controls = session.run(None, {"observation": rebuilt[None]})[0][0]
        got = joint_targets(config, controls)
        with torch.no_grad():
            mean = loaded.policy.mean(torch.from_numpy(obs)[None]).double().numpy()[0]
        want = np.array(GO2_HOME) + 0.25 * mean  # the family's own servo rule
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert np.abs(got - np.array(GO2_HOME)).max() > 0.05  # the policy moves the joints
        out, _, terminated, truncated, _ = sim.step(controls[None])
        if terminated[0] or truncated[0]:  # random weights: the robot may fall
            break
        obs, last = out[0], controls.astype(np.float64)
    assert step >= 3


def test_the_config_travels_with_both_exports_and_a_bad_one_is_refused(go2_checkpoint,
                                                                       tmp_path):
    import onnx
    meta = export(go2_checkpoint, "onnx", tmp_path / "p.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    assert json.loads(props["metarobot_deploy"]) == meta["deploy"]
    assert json.loads(props["metarobot"])["deploy"] == meta["deploy"]
    assert load_metadata(tmp_path / "p.onnx")["deploy"] == meta["deploy"]
    native = export(go2_checkpoint, "native", tmp_path / "native")
    assert load_deployment_config(tmp_path / "native") == native["deploy"] == meta["deploy"]
    bad = dict(meta["deploy"], version=DEPLOY_VERSION + 1)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=f"version {DEPLOY_VERSION + 1}, this metarobot reads "
                                         f"version {DEPLOY_VERSION}"):
        load_deployment_config(tmp_path / "bad.json")
    terms = [dict(t) for t in meta["deploy"]["observation"]["terms"]]
    terms[1]["start"] = 4
    bad = dict(meta["deploy"], observation=dict(meta["deploy"]["observation"], terms=terms))
    with pytest.raises(ValueError, match="ProjectedGravity starts at 4, expected 3"):
        check_deployment_config(bad)
    with pytest.raises(ValueError, match=r"missing \['RL_calf'\], unknown \['RL_knee'\]"):
        export(go2_checkpoint, "onnx", tmp_path / "m.onnx",
               motor_order=MOTORS[:-1] + ["RL_knee"])
    assert not (tmp_path / "m.onnx").exists()


class Recorder:
    """A gymnasium-like Go2 robot in this process whose observations are zeros (the default
    pose) and which keeps every control it is sent."""

    def __init__(self, horizon=5):
        import gymnasium as gym
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (45,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (12,), np.float32)
        self.horizon, self.t, self.sent = horizon, 0, []

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(45, np.float32), {}

    def step(self, action):
        self.t += 1
        self.sent.append(np.array(action, np.float64))
        return np.zeros(45, np.float32), 0.0, False, self.t >= self.horizon, {}

    def close(self):
        pass


def go2_robot(env, motors=MOTORS, period=0.02):
    names = deployment_config(metarobot.make_family("Go2Walk"))["observation"]["names"]
    return GymRobot(env, period, names, motors, "Go2Walk")


def test_a_robot_that_numbers_its_motors_otherwise_is_refused_or_driven_by_the_map(
        go2_checkpoint, tmp_path):
    """The default config expects the model's motor order: a robot reporting the mirrored
    order is refused before any command, naming the motor. An export made for that order
    (--motor-order) drives the same robot, each control reaching its own motor."""
    env = Recorder()
    with pytest.raises(Mismatch, match="action names: motor 0 is 'FL_hip' on the robot, "
                                       "'FR_hip' in the deployment config"):
        run(Controller.from_checkpoint(go2_checkpoint), go2_robot(env, MIRRORED))
    assert env.sent == []
    meta = export(go2_checkpoint, "native", tmp_path / "mirrored", motor_order=MIRRORED)
    mirrored = load_deployment_config(tmp_path / "mirrored")
    assert motor_names(mirrored) == MIRRORED and mirrored == meta["deploy"]
    assert [m["policy_index"] for m in mirrored["motors"]] == [MOTORS.index(n)
                                                               for n in MIRRORED]
    # FL's hip stands at +0.1 wherever it is numbered
    assert mirrored["motors"][0]["default_pose"] == 0.1
    controls = np.arange(12.0) / 10
    np.testing.assert_allclose(joint_targets(mirrored, controls)[:3],
                               np.array(GO2_HOME[3:6]) + 0.25 * controls[3:6])
    # the model-ordered robot against the mirrored config: refused the other way round
    with pytest.raises(Mismatch, match="motor 0 is 'FR_hip' on the robot, 'FL_hip'"):
        run(Controller.from_checkpoint(go2_checkpoint, deploy=mirrored), go2_robot(Recorder()))
    controller = Controller.from_checkpoint(go2_checkpoint, deploy=mirrored)
    reference = Controller.from_checkpoint(go2_checkpoint)
    report = run(controller, go2_robot(env, MIRRORED), limits=TOLERANT)
    assert report["stopped"] == "completed" and report["agreement"]["differences"] == []
    assert report["agreement"]["checked_against"]["motors"] == MIRRORED
    _, want = reference.act(np.zeros(45, np.float32), sample=False)  # model order
    order = [MOTORS.index(n) for n in MIRRORED]
    np.testing.assert_allclose(env.sent[0], want[order], rtol=1e-6)


def test_a_config_of_another_policy_is_refused(go2_checkpoint, tmp_path):
    config = deployment_config(metarobot.make_family("Go2Walk"))
    config["motors"][4]["kp"] = 20.0
    with pytest.raises(ValueError, match=r"not this policy's: motors\[FL_thigh\].kp: 20.0 "
                                         r"here, 25.0 for the policy"):
        Controller.from_checkpoint(go2_checkpoint, deploy=config)
    other = deployment_config(metarobot.make_family("HalfCheetahVelServo"))
    with pytest.raises(ValueError, match="not this policy's: family: 'HalfCheetahVelServo' here, "
                                         "'Go2Walk' for the policy"):
        Controller.from_checkpoint(go2_checkpoint, deploy=other)


def test_a_wrong_rate_or_size_is_refused_and_allow_mismatch_records_it(go2_checkpoint):
    controller = Controller.from_checkpoint(go2_checkpoint)
    env = Recorder()
    with pytest.raises(Mismatch, match=r"control period: the robot's is 5 ms \(200 Hz\), the "
                                       r"deployment config's 20 ms \(50 Hz\)"):
        run(controller, go2_robot(env, period=0.005))
    assert env.sent == []
    report = run(controller, go2_robot(env, period=0.005), allow_mismatch=True,
                 limits=TOLERANT, rate=50.0)
    assert report["stopped"] == "completed" and report["agreement"]["allowed"]
    assert report["agreement"]["differences"] == [
        "control period: the robot's is 5 ms (200 Hz), the deployment config's 20 ms (50 Hz)"]

    class Short(Recorder):
        def __init__(self):
            super().__init__()
            import gymnasium as gym
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (44,), np.float32)
    with pytest.raises(Mismatch, match="observation size: the robot has 44, the deployment "
                                       "config 45"):
        run(controller, GymRobot(Short(), 0.02, family="Go2Walk"), allow_mismatch=True)


def test_the_watchdog_reads_joints_through_the_configs_offset_and_scale(go2_checkpoint):
    """Go2Walk observes joint angles relative to the standing pose: all zeros is the robot
    standing, well inside every joint's range (a calf at 0 rad would be 0.84 rad outside)."""
    checks = Controller.from_checkpoint(go2_checkpoint).joint_checks()
    calf = next(c for c in checks if c[2] == "FR_calf_joint")
    assert calf[1] == "qpos" and calf[5:] == (1.0, -1.5)
    qvel = next(c for c in checks if c[1] == "qvel")
    assert qvel[5] == 0.05
    report = run(Controller.from_checkpoint(go2_checkpoint), go2_robot(Recorder()),
                 limits=TOLERANT)
    assert report["stopped"] == "completed", report["detail"]


# -------------------------------------------------------------------- the simulated robot's gap

def test_obs_noise_is_in_each_sensor_terms_units_and_obs_noise_scale_is_noise_scale():
    """With noise_scale 0 the robot's sensors are exact; --obs-noise then lands on the sensor
    terms only, with std obs_noise x the term's scale (Qvel: 0.05), never on the commands or
    the last action."""
    robot = SimRobot("Go2Walk", GO2_TASK, port=0, verbose=False,
                     gap=RealityGap(obs_noise_scale=0.0, obs_noise=0.2))
    try:
        assert robot.task["noise_scale"] == 0.0 and robot.reality_gap["noise_scale"] == 0.0
        robot.sim.reset()
        state = robot.sim.get_state()
        obs = robot.sim.set_state(*state)[0]
        np.testing.assert_array_equal(robot.sim.set_state(*state)[0], obs)  # exact sensors
        draws = np.stack([robot._observation(obs, 0.0, False, False).obs
                          for _ in range(4000)]) - obs
        std = draws.std(axis=0)
        np.testing.assert_allclose(std[0:3], 0.25 * 0.2, rtol=0.1)   # gyro, scale 0.25
        np.testing.assert_allclose(std[3:6], 0.2, rtol=0.1)          # gravity
        np.testing.assert_allclose(std[9:21], 0.2, rtol=0.1)         # joint angles
        np.testing.assert_allclose(std[21:33], 0.05 * 0.2, rtol=0.1)  # joint velocities
        assert (std[6:9] == 0).all() and (std[33:45] == 0).all()     # commands, last action
    finally:
        robot.sock.close()
    noisy = SimRobot("Go2Walk", GO2_TASK, port=0, verbose=False)  # the training's noise
    try:
        noisy.sim.reset()
        state = noisy.sim.get_state()
        assert (noisy.sim.set_state(*state)[0] != noisy.sim.set_state(*state)[0]).any()
    finally:
        noisy.sock.close()


def test_the_gap_is_refused_where_it_has_no_meaning_or_two_names():
    with pytest.raises(ValueError, match="drives position servos.*saturation"):
        SimRobot("Go2Walk", GO2_TASK, port=0, verbose=False, gap=RealityGap(saturation=0.5))
    with pytest.raises(ValueError, match="does not draw noise_scale per task; the robot's is "
                                         "obs_noise_scale"):
        SimRobot("Go2Walk", dict(GO2_TASK, noise_scale=2.0), port=0, verbose=False)
    drawn = dataclasses.replace(metarobot.make_family("HalfCheetahVel"), parameters=(
        metarobot.parameters.Uniform("goal_velocity", 0.0, 2.0),
        metarobot.parameters.ActuatorRange("noise_scale", 0.5, 2.0)))
    with pytest.raises(ValueError, match="draws noise_scale per task: give it in the task"):
        SimRobot(drawn, {"goal_velocity": 1.0, "noise_scale": 1.0}, port=0, verbose=False,
                 gap=RealityGap(obs_noise_scale=1.0))
    with pytest.raises(ValueError, match="obs_noise_scale .* should be a factor"):
        RealityGap(obs_noise_scale=-1.0)


def test_the_robot_reports_its_gap_in_the_familys_names_and_the_run_records_it(tmp_path):
    gap = RealityGap(latency_ms=10.0, jitter_ms=2.0, obs_noise=0.01, obs_noise_scale=1.5)
    task = dict(GO2_TASK, command_delay_ms=15.0)
    robot = SimRobot("Go2Walk", task, port=0, verbose=False, gap=gap,
                     overrides={"horizon": 5})
    thread = threading.Thread(target=robot.serve, args=(60,), daemon=True)
    thread.start()
    try:
        udp = UdpRobot("127.0.0.1", robot.port)
        try:
            spec = udp.spec()
            report = run(Controller(metarobot.GaussianMLPPolicy(45, 12, (8,)),
                                    metarobot.make_family("Go2Walk", horizon=5)),
                         udp, limits=TOLERANT)
        finally:
            udp.close()
    finally:
        robot.shutdown()
        thread.join(timeout=10)
    assert spec.reality_gap == robot.reality_gap
    recorded = report["robot"]["reality_gap"]
    assert recorded["command_delay_ms"] == 15.0 and recorded["task"]["kp"] == 20.0
    assert (recorded["latency_ms"], recorded["jitter_ms"], recorded["noise_scale"],
            recorded["obs_noise"]) == (10.0, 2.0, 1.5, 0.01)
    assert report["stopped"] == "completed", report["detail"]


def test_spec_round_trips_the_gap_and_a_plain_robot_says_none():
    spec = RobotSpec(3, 2, 0.01, reality_gap={"latency_ms": 5.0})
    back = P.parse_spec(P.spec_payload(spec, 7, b"a" * 16, b"b" * 16))[0]
    assert back.reality_gap == {"latency_ms": 5.0}
    plain = P.parse_spec(P.spec_payload(RobotSpec(3, 2, 0.01), 7, b"a" * 16, b"b" * 16))[0]
    assert plain.reality_gap is None


def test_the_docs_table_names_every_sim_robot_flag_beside_its_family_parameter():
    """docs/hil.md's reality-gap table lists each of sim-robot's gap flags with the family
    parameter of the same meaning (or none) and its unit."""
    from metarobot.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {o for a in sub.choices["sim-robot"]._actions for o in a.option_strings
             if o.startswith("--")}
    gap_flags = {"--obs-noise-scale", "--obs-noise", "--latency-ms", "--jitter-ms", "--drop",
                 "--saturation", "--dynamics", "--task"}
    assert gap_flags <= flags
    text = (ROOT / "docs" / "hil.md").read_text()
    table = text.split("| sim-robot flag |")[1].split("\n\n")[0]
    rows = {re.findall(r"`(--[a-z-]+)", line)[0]: line for line in table.splitlines()
            if re.findall(r"`(--[a-z-]+)", line)}
    assert set(rows) == gap_flags
    assert "noise_scale" in rows["--obs-noise-scale"]
    assert "command_delay_ms" in rows["--latency-ms"] and "ms" in rows["--jitter-ms"]
    assert "dynamics" in rows["--dynamics"]


@pytest.mark.slow  # subprocesses
def test_the_commands_take_the_config_and_the_gap_in_one_line(go2_checkpoint, tmp_path):
    """export --motor-order writes the mirrored config; hil --deploy-config with it refuses a
    Go2 sim-robot (model order) before any command, naming the motor; sim-robot refuses the
    gap flags that have no meaning for its family, in one line each."""
    import subprocess
    import sys
    from test_deploy import one_line_error
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "export", str(go2_checkpoint),
                          "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                          "--motor-order", ",".join(MIRRORED)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"deployment config {tmp_path / 'm.deploy.json'}" in out.stdout
    assert motor_names(load_deployment_config(tmp_path / "m.deploy.json")) == MIRRORED
    robot = subprocess.Popen([sys.executable, "-m", "metarobot.cli", "sim-robot", "Go2Walk",
                              "--task", json.dumps(GO2_TASK), "--port", "0", "--latency-ms",
                              "20"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        url = robot.stdout.readline().split(" on ")[1].split(",")[0]
        gap_line = robot.stdout.readline()
        assert gap_line.startswith("reality gap: command_delay_ms 0.0 (task) + latency_ms 20")
        one_line_error(["hil", str(go2_checkpoint), "--robot", url, "--deploy-config",
                        str(tmp_path / "m.onnx"), "--report", str(tmp_path / "r")],
                       "action names: motor 0 is 'FR_hip' on the robot, 'FL_hip' in the "
                       "deployment config")
        assert not (tmp_path / "r").exists()
    finally:
        robot.terminate()
        robot.wait(timeout=30)
    (tmp_path / "bad.json").write_text("{}")
    one_line_error(["hil", str(go2_checkpoint), "--robot", "udp://127.0.0.1:9",
                    "--deploy-config", str(tmp_path / "bad.json")],
                   "is not a metarobot deployment config")
    one_line_error(["sim-robot", "Go2Walk", "--task", json.dumps(GO2_TASK), "--port", "0",
                    "--saturation", "0.5"], "drives position servos")
    out = subprocess.run([sys.executable, "-m", "metarobot.cli", "sim-robot", "Go2Walk",
                          "--task", json.dumps(GO2_TASK), "--obs-noise-scale", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "argument --obs-noise-scale: expected a finite number in " \
        "[0, 1000], got '-1'" in out.stderr  # argparse's error, after its usage


def test_a_family_declares_its_robots_motor_order_and_the_config_follows_it():
    """Go2Walk names its robot's order (the model's here: identity map); a family whose robot
    numbers the legs otherwise gets that map without any flag."""
    import dataclasses
    go2 = metarobot.make_family("Go2Walk")
    assert list(go2.motor_order) == MOTORS
    config = deployment_config(go2)
    assert [m["name"] for m in config["motors"]] == MOTORS
    assert [m["policy_index"] for m in config["motors"]] == list(range(12))
    mirrored = dataclasses.replace(go2, motor_order=tuple(MIRRORED))
    motors = deployment_config(mirrored)["motors"]
    assert [m["name"] for m in motors] == MIRRORED
    assert [m["policy_index"] for m in motors] == [MOTORS.index(n) for n in MIRRORED]
    with pytest.raises(ValueError, match="missing"):
        deployment_config(dataclasses.replace(go2, motor_order=tuple(MOTORS[:-1])))
