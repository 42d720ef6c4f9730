"""The Unitree link over DDS on loopback: the controller against the suite's own simulated
Go2 process, every stop trigger, a second rt/lowcmd publisher refused, bad CRCs ignored and
counted, a mirrored joint map refused, and our rt/lowcmd read by a subscriber written here
from Unitree's IDL alone."""

import csv
import dataclasses
import itertools
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds is not installed (pip install "
                                         "'metarobot[unitree]'): the DDS link cannot run")

import cyclonedds.idl as idl  # noqa: E402
import cyclonedds.idl.annotations as annotate  # noqa: E402
import cyclonedds.idl.types as t  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from metarobot.deploy.controller import Controller  # noqa: E402
from metarobot.deploy.deployment import deployment_config, motor_targets  # noqa: E402
from metarobot.deploy.runner import run  # noqa: E402
from metarobot.deploy.safety import Phase  # noqa: E402
from metarobot.deploy.unitree import idl as ours  # noqa: E402
from metarobot.deploy.unitree import messages as M  # noqa: E402
from metarobot.deploy.unitree.dds import DdsLink  # noqa: E402
from metarobot.deploy.unitree.robot import (RobotBusy, UnitreeRobot, measured_state,  # noqa: E402
                                            safety_limits)
from metarobot.deploy.sim_robot import RealityGap  # noqa: E402
from metarobot.deploy.unitree.sim import UnitreeSimRobot, base_track  # noqa: E402
from metarobot.families import make_family  # noqa: E402

pytestmark = pytest.mark.slow

TASK = {"payload": 0.0, "com_shift_x": 0.0, "friction": 1.0, "strength": 1.0, "kp": 20.0,
        "kd": 0.5, "command_delay_ms": 0.0}
# DDS domains of this run: away from 0 (robots) and 1 (unitree_mujoco), apart per pid
_BASE = 100 + (os.getpid() % 20) * 6
_domains = itertools.count(_BASE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("go2") / "run"
    subprocess.run([sys.executable, "-m", "metarobot.cli", "train", "--family", "Go2Walk",
                    "--algo", "trpo", "--iterations", "1", "--meta-batch-size", "2",
                    "--trajectories-per-task", "2", "--set", "horizon=25", "--hidden-sizes",
                    "8", "--out", str(out), "--quiet"], check=True, capture_output=True,
                   timeout=300)
    return out / "checkpoints" / "latest.safetensors"


@pytest.fixture(scope="module")
def sim_domain():
    """The suite's own simulated Go2 process on loopback, ended by its own pid."""
    import json
    domain = next(_domains)
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarobot.cli", "sim-robot", "Go2Walk", "--protocol",
         "unitree", "--interface", "lo", "--domain", str(domain), "--task", json.dumps(TASK),
         "--duration", "600"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("sim-robot Go2Walk"), line
        yield domain
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def robot_for(controller, domain, command_hz=None, odometry=None, **limits):
    return UnitreeRobot(controller.deploy, interface="lo", domain=domain, episode_s=0.4,
                        limits=safety_limits(controller.deploy, stand_s=0.5, **limits),
                        passive_s=0.2, settle_s=0.2, verbose=False, command_hz=command_hz,
                        odometry=odometry, family=controller.family)


def run_closing(controller, robot, **kw):
    """One episode per stage on the robot (run's keywords), the robot closed whatever
    happens; the report."""
    try:
        return run(controller, robot, episodes=1, **kw)
    finally:
        robot.close()


def phases(robot):
    return [tr.target for tr in robot.transitions[1:]]


def test_passive_stand_policy_stop_against_the_sim_robot(checkpoint, sim_domain, tmp_path):
    controller = Controller.from_checkpoint(checkpoint)
    robot = robot_for(controller, sim_domain)
    try:
        report = run(controller, robot, episodes=1, report_dir=tmp_path / "report")
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    # the episode's end (episode_s) stands the robot again before the stop
    assert phases(robot) == [Phase.STAND, Phase.HOLD, Phase.POLICY, Phase.STAND, Phase.STOP]
    assert robot.transitions[-1].reason == "stop requested by the controller"
    assert report["timing"]["cycles"] >= 10 and report["robot_acknowledged_stop"]
    assert any("hold -> policy" in e for e in report["robot_log"])
    assert robot.sent > 100 and not robot.rejected


def test_the_log_records_the_clamped_targets_the_motors_got(checkpoint, sim_domain, tmp_path):
    """With a tight target-step limit the safety machine clamps the policy's targets; the
    MCAP's position_target is what the motors were given (each step within the limit), not
    the policy's own targets."""
    from mcap.reader import make_reader
    controller = Controller.from_checkpoint(checkpoint)
    step = 0.01
    robot = robot_for(controller, sim_domain, max_target_step=step, max_clamped_steps=10**6)
    try:
        report = run(controller, robot, episodes=1, report_dir=tmp_path / "report")
    finally:
        robot.close()
    assert report["stopped"] == "completed", report["detail"]
    assert robot.machine.clamped_total > 0  # the policy asked for larger steps
    with open(tmp_path / "report" / "run.mcap", "rb") as f:
        actions = [json.loads(m.data) for _, channel, m in make_reader(f).iter_messages()
                   if channel.topic == "/action"]
    targets = np.array([a["position_target"] for a in actions], np.float64)
    asked = np.array([motor_targets(controller.deploy, np.asarray(a["controls"]))
                      for a in actions])
    assert len(targets) > 5
    assert np.abs(np.diff(targets, axis=0)).max() <= step + 1e-9
    assert np.abs(targets - asked).max() > step  # the policy's own targets were not sent


@pytest.mark.parametrize("trigger,limits,reason", [
    ("tilt", {"tilt_max_degrees": 1e-3}, "tilt"),
    ("joint", {"joint_margin": 1.0}, "joint limit"),
    ("torque", {"effort_limit": [1e-3] * 12, "over_torque_s": 0.01}, "torque"),
    ("stale", {"state_timeout": 1e-4}, "stale state"),
    ("jump", {"max_target_step": 1e-9, "max_clamped_steps": 1}, "target jumps"),
])
def test_every_stop_trigger(checkpoint, sim_domain, trigger, limits, reason):
    controller = Controller.from_checkpoint(checkpoint)
    # the stale-state trigger: LowCmds at 1 kHz against LowStates at 200 Hz, so that most
    # command ticks find no new state (at equal rates a loaded machine can deliver a fresh
    # one to every tick)
    robot = robot_for(controller, sim_domain, command_hz=1000.0 if trigger == "stale" else None,
                      **limits)
    try:
        report = run(controller, robot, episodes=1)
    finally:
        robot.close()
    assert robot.machine.phase is Phase.STOP
    assert robot.machine.stop_reason.startswith(reason), robot.machine.stop_reason
    assert report["stopped"] == "robot safe state"
    assert any(e.startswith(f"safety stop: {reason}") for e in report["robot_errors"])


def test_non_finite_state_stops(checkpoint):
    """A robot reporting NaN (a lost encoder) stops the run: a LowState publisher here."""
    controller = Controller.from_checkpoint(checkpoint)
    domain = next(_domains)
    link = DdsLink("lo", domain)
    writer = link.writer(ours.TOPIC_LOW_STATE, ours.LowState_)
    try:
        def publish(q):
            msg = ours.LowState_()
            for i, value in enumerate(q):
                msg.motor_state[i].q = value
            msg.crc = M.message_crc(M.LOW_STATE, msg)
            writer.write(msg)
        home = list(make_family("Go2Walk").actuators.default_pose)
        import threading
        bad = threading.Event()
        done = threading.Event()

        def loop():
            while not done.is_set():
                publish([math.nan] + home[1:] if bad.is_set() else home)
                time.sleep(0.005)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        robot = robot_for(controller, domain)
        bad.set()
        time.sleep(0.1)
        robot.close()
        done.set()
        thread.join()
        assert robot.machine.stop_reason.startswith("non-finite q"), robot.machine.stop_reason
    finally:
        link.close()


def test_second_lowcmd_publisher_refused(checkpoint, sim_domain):
    controller = Controller.from_checkpoint(checkpoint)
    other = DdsLink("lo", sim_domain)
    other.writer(ours.TOPIC_LOW_CMD, ours.LowCmd_)  # a publisher that says nothing yet
    try:
        time.sleep(0.2)
        with pytest.raises(RobotBusy, match="another controller commands the robot"):
            robot_for(controller, sim_domain)
    finally:
        other.close()


def test_bad_crc_lowstate_ignored_and_counted(checkpoint, sim_domain):
    controller = Controller.from_checkpoint(checkpoint)
    robot = robot_for(controller, sim_domain)
    forger = DdsLink("lo", sim_domain)
    writer = forger.writer(ours.TOPIC_LOW_STATE, ours.LowState_)
    try:
        forged = ours.LowState_()
        for i in range(12):
            forged.motor_state[i].q = 3.0  # far outside every limit: obeyed, it would stop
        forged.crc = M.message_crc(M.LOW_STATE, forged) ^ 1
        for _ in range(40):
            writer.write(forged)
            time.sleep(0.005)
        time.sleep(0.05)
        assert robot.rejected.get("bad crc", 0) > 0
        reading = robot.reset(2.0)
        assert robot.machine.phase is Phase.HOLD and not reading.safe
    finally:
        forger.close()
        robot.close()


def test_sim_robot_ignores_and_counts_bad_crc():
    domain = next(_domains)
    sim = UnitreeSimRobot("Go2Walk", TASK, interface="lo", domain=domain, verbose=False)
    link = DdsLink("lo", domain)
    writer = link.writer(ours.TOPIC_LOW_CMD, ours.LowCmd_)
    try:
        cmd = ours.LowCmd_()
        for i in range(12):
            cmd.motor_cmd[i] = ours.MotorCmd_(mode=1, q=0.0, kp=1000.0, kd=1.0)
        cmd.crc = M.message_crc(M.LOW_CMD, cmd) ^ 0x80000000
        time.sleep(0.3)  # discovery
        for _ in range(10):
            writer.write(cmd)
            time.sleep(0.01)
            sim.step(time.monotonic())
        assert sim.rejected.get("bad crc", 0) > 0 and sim.counts["commands"] == 0
        assert sim._command is None  # still damping: nothing obeyed
        cmd.crc = M.message_crc(M.LOW_CMD, cmd)
        for _ in range(10):
            writer.write(cmd)
            time.sleep(0.01)
            sim.step(time.monotonic())
        assert sim.counts["commands"] > 0 and sim._command is not None
    finally:
        link.close()
        sim.link.close()


def test_mirrored_joint_map_refused(checkpoint):
    controller = Controller.from_checkpoint(checkpoint)
    family = make_family("Go2Walk")
    order = [f"{leg}_{part}" for leg in ("FL", "FR", "RL", "RR")
             for part in ("hip", "thigh", "calf")]  # left and right swapped
    mirrored = deployment_config(family, motor_order=order)
    with pytest.raises(ValueError, match="joint map: motor 0 is 'FR_hip' on the Go2, "
                                         "'FL_hip' in the deployment config"):
        UnitreeRobot(mirrored, interface="lo", domain=next(_domains), verbose=False)
    assert controller.deploy["motors"][0]["name"] == "FR_hip"


# ---------------------------------------------------------------- an independent subscriber
# Unitree's IDL (unitree_go/msg/LowCmd_.idl and its parts), declared here again on purpose:
# nothing of metarobot's declarations or packer is used to read our messages back

@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class MotorCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.MotorCmd_"):
    mode: t.uint8
    q: t.float32
    dq: t.float32
    tau: t.float32
    kp: t.float32
    kd: t.float32
    reserve: t.array[t.uint32, 3]


@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class BmsCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.BmsCmd_"):
    off: t.uint8
    reserve: t.array[t.uint8, 3]


@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class LowCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.LowCmd_"):
    head: t.array[t.uint8, 2]
    level_flag: t.uint8
    frame_reserve: t.uint8
    sn: t.array[t.uint32, 2]
    version: t.array[t.uint32, 2]
    bandwidth: t.uint16
    motor_cmd: t.array[MotorCmd_, 20]
    bms_cmd: BmsCmd_
    wireless_remote: t.array[t.uint8, 40]
    led: t.array[t.uint8, 12]
    fan: t.array[t.uint8, 2]
    gpio: t.uint8
    reserve: t.uint32
    crc: t.uint32


# the C layout, 4-byte aligned: head, level_flag, frame_reserve, sn, version, bandwidth, pad;
# 20 x (mode, pad, q, dq, tau, kp, kd, reserve[3]); bms_cmd; wireless_remote, led, fan, gpio,
# pad; reserve; crc
_LOW_CMD_C = "<4B4IH2x" + "B3x5f3I" * 20 + "4B" + "55Bx2I"


def _independent_crc(cmd):
    values = [*cmd.head, cmd.level_flag, cmd.frame_reserve, *cmd.sn, *cmd.version,
              cmd.bandwidth]
    for m in cmd.motor_cmd:
        values += [m.mode, m.q, m.dq, m.tau, m.kp, m.kd, *m.reserve]
    values += [cmd.bms_cmd.off, *cmd.bms_cmd.reserve, *cmd.wireless_remote, *cmd.led,
               *cmd.fan, cmd.gpio, cmd.reserve, cmd.crc]
    packed = struct.pack(_LOW_CMD_C, *values)
    assert len(packed) == 812
    crc = 0xFFFFFFFF
    for (word,) in struct.iter_unpack("<I", packed[:-4]):
        for bit in range(31, -1, -1):
            top = (crc >> 31) & 1
            crc = (crc << 1) & 0xFFFFFFFF
            if top ^ ((word >> bit) & 1):
                crc ^= 0x04C11DB7
    return crc


def take_some(reader, count, timeout=3.0):
    """At least count samples from reader (fewer if timeout seconds pass first)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += reader.take(N=16)
        time.sleep(0.01)
    return got


def test_independent_subscriber_reads_our_lowcmd(checkpoint, sim_domain):
    controller = Controller.from_checkpoint(checkpoint)
    # the domain on lo as our links make it (a bare DomainParticipant would make it on every
    # interface first, and a robot's link could not bind it to lo after); its readers below
    # are the test's own
    link = DdsLink("lo", sim_domain)
    participant = link.participant
    reader = DataReader(participant, Topic(participant, "rt/lowcmd", LowCmd_))
    robot = robot_for(controller, sim_domain)
    try:
        got = take_some(reader, 5)
        robot.reset(2.0)
        time.sleep(0.05)
        got_stand = reader.take(N=64)
    finally:
        robot.close()
        link.close()
    assert len(got) >= 5 and got_stand
    for cmd in got + got_stand:
        assert list(cmd.head) == [0xFE, 0xEF] and cmd.level_flag == 0xFF
        assert cmd.crc == _independent_crc(cmd)
    passive = got[0]
    assert all(m.mode == 1 and m.kp == 0.0 and m.kd > 0 for m in passive.motor_cmd[:12])
    assert all(m.mode == 0 and m.kp == 0.0 for m in passive.motor_cmd[12:])
    held = got_stand[-1]  # the default pose in the Go2's order, the config's gains
    home = controller.deploy["motors"]
    np.testing.assert_allclose([m.q for m in held.motor_cmd[:12]],
                               [r["default_pose"] for r in home], atol=1e-6)
    assert [m.kp for m in held.motor_cmd[:12]] == [25.0] * 12  # Go2Walk's kp


# Unitree's SportModeState_ (unitree_go/msg/SportModeState_.idl and its parts), declared here
# again: a final struct pairs only with its exact twin, so a reader of Unitree's own type must
# get the simulated robot's messages

@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class TimeSpec_(idl.IdlStruct, typename="unitree_go.msg.dds_.TimeSpec_"):
    sec: t.int32
    nanosec: t.uint32


@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class IMUState_(idl.IdlStruct, typename="unitree_go.msg.dds_.IMUState_"):
    quaternion: t.array[t.float32, 4]
    gyroscope: t.array[t.float32, 3]
    accelerometer: t.array[t.float32, 3]
    rpy: t.array[t.float32, 3]
    temperature: t.uint8


@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class PathPoint_(idl.IdlStruct, typename="unitree_go.msg.dds_.PathPoint_"):
    t_from_start: t.float32
    x: t.float32
    y: t.float32
    yaw: t.float32
    vx: t.float32
    vy: t.float32
    vyaw: t.float32


@dataclasses.dataclass
@annotate.final
@annotate.autoid("sequential")
class SportModeState_(idl.IdlStruct, typename="unitree_go.msg.dds_.SportModeState_"):
    stamp: TimeSpec_
    error_code: t.uint32
    imu_state: IMUState_
    mode: t.uint8
    progress: t.float32
    gait_type: t.uint8
    foot_raise_height: t.float32
    position: t.array[t.float32, 3]
    body_height: t.float32
    velocity: t.array[t.float32, 3]
    yaw_speed: t.float32
    range_obstacle: t.array[t.float32, 4]
    foot_force: t.array[t.int16, 4]
    foot_position_body: t.array[t.float32, 12]
    foot_speed_body: t.array[t.float32, 12]
    path_point: t.array[PathPoint_, 10]


def test_unitrees_sportmodestate_type_reads_the_sim_robots_odometry(sim_domain):
    link = DdsLink("lo", sim_domain)  # the domain on lo, as above; the type is the test's
    participant = link.participant
    reader = DataReader(participant, Topic(participant, "rt/sportmodestate", SportModeState_))
    try:
        got = take_some(reader, 5)
    finally:
        link.close()
    assert len(got) >= 5
    last = got[-1]
    assert last.body_height == pytest.approx(last.position[2]) and 0.0 < last.body_height < 0.5
    assert np.isfinite(last.velocity).all()
    assert abs(np.linalg.norm(last.imu_state.quaternion) - 1.0) < 1e-5
    assert last.stamp.sec >= 0 and len(last.path_point) == 10


@pytest.mark.parametrize("odometry", [None, "rt/no_odometry_here"])
def test_episode_end_holds_the_pose_and_adaptation_needs_a_reward_source(checkpoint,
                                                                          sim_domain,
                                                                          tmp_path, odometry):
    """--adapt-steps over DDS: at the episode's end the robot stands and holds its pose
    (no policy timeout while the runner adapts); a LowState carries no reward, and without
    odometry (none asked for, or a topic nobody publishes) there is none, so the adaptation
    step stops the run from HOLD, naming the missing reward. The MCAP log holds the
    LowState's own joints and IMU and every safety transition."""
    from mcap.reader import make_reader
    controller = Controller.from_checkpoint(checkpoint)
    # the untrained policy's sampled actions jump: not what this test is about
    robot = robot_for(controller, sim_domain, odometry=odometry, max_target_step=10.0)
    report = run_closing(controller, robot, adapt_steps=1, report_dir=tmp_path / "report")
    assert report["stopped"] == "no reward to adapt on", (report["detail"], report["robot_log"])
    assert "does the robot report rewards" in report["detail"]
    # the episode's end sent the robot back to its pose, and the stop came from there
    assert phases(robot) == [Phase.STAND, Phase.HOLD, Phase.POLICY, Phase.STAND, Phase.STOP]
    assert report["swaps"] == []
    by_topic = {}
    with open(tmp_path / "report" / "run.mcap", "rb") as f:
        for _, channel, message in make_reader(f).iter_messages():
            by_topic.setdefault(channel.topic, []).append(json.loads(message.data))
    assert len(by_topic["/imu"]) == len(by_topic["/joints"]) == report["timing"]["cycles"]
    assert [(m["source"], m["target"]) for m in by_topic["/safety"]][1:] == [
        ("passive", "stand"), ("stand", "hold"), ("hold", "policy"), ("policy", "stand"),
        ("run", "stopped"), ("stand", "stop")]  # the run stops, then the robot damps
    first = by_topic["/joints"][0]
    assert first["name"] == list(M.GO2_MOTOR_NAMES)
    # the LowState's joints against the same cycle's observation: its Qpos term reads
    # q - default_pose per joint (in the model's joint order), as the family defines it
    obs = np.array(by_topic["/observation"][0]["obs"])
    term = next(t for t in controller.deploy["observation"]["terms"] if t["kind"] == "Qpos")
    motor = {m["joint"]: i for i, m in enumerate(controller.deploy["motors"])}
    for k, joint in enumerate(term["joints"]):
        assert first["position"][motor[joint]] == pytest.approx(
            obs[term["start"] + k] + term["offset"][k], abs=1e-5)
    # the IMU's gravity is the observation's (the same LowState quaternion), and the robot
    # is on its feet (how level it stands after the stand-up varies with the machine's load:
    # the simulated robot keeps wall-clock time)
    gravity = np.array(by_topic["/imu"][0]["projected_gravity"])
    term = next(t for t in controller.deploy["observation"]["terms"]
                if t["kind"] == "ProjectedGravity")
    scale = term.get("scale", 1.0)
    np.testing.assert_allclose(obs[term["start"]:term["start"] + 3],
                               scale * gravity - scale * np.asarray(term.get("offset") or 0.0),
                               atol=1e-5)
    assert gravity[2] < -0.5 and abs(np.linalg.norm(gravity) - 1.0) < 1e-3


def test_the_measured_state_is_the_simulated_robots():
    """What the reward reads on the robot side: the full state rebuilt from the simulated
    robot's LowState and SportModeState_ messages is its MuJoCo state (to float32, the
    messages' precision), joints in the model's order, torques in the policy's."""
    sim = UnitreeSimRobot("Go2Walk", TASK, interface="lo", domain=next(_domains),
                          gap=RealityGap(obs_noise_scale=0.0), verbose=False)
    try:
        for k in range(60):  # no commands: it damps and sags, every joint moving
            sim.step(time.monotonic())
        now = time.monotonic()
        low = sim._state(now)
        sport = sim._sport_state(now, low.imu_state)
    finally:
        sim.link.close()
    m, motors = sim.model, sim.deploy["motors"]
    qpos_adr = np.array([m.joint(r["joint"]).qposadr[0] for r in motors])
    dof_adr = np.array([m.joint(r["joint"]).dofadr[0] for r in motors])
    policy_index = np.array([r["policy_index"] for r in motors])
    qpos, qvel, torques = measured_state(low, sport, qpos_adr, dof_adr, policy_index)
    np.testing.assert_allclose(qpos, sim.data.qpos, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(qvel, sim.data.qvel, rtol=1e-6, atol=1e-5)
    assert np.abs(sim.data.qvel[6:]).min() > 0 and np.abs(sim.data.qvel[:3]).max() > 1e-3
    # torques in the policy's (the actuators') order: the sim's per motor, mapped
    actuator_of_motor = sim.actuator
    np.testing.assert_allclose(torques[actuator_of_motor], sim._tau, rtol=1e-6, atol=1e-6)
    assert np.abs(sim._tau).max() > 0


def test_adaptation_on_the_robot_with_odometry(checkpoint, sim_domain, tmp_path):
    """With the simulated robot's rt/sportmodestate as odometry, every step under the policy
    carries Go2Walk's reward (the core's terms on the measured state; the floor keeps it
    >= 0), the running return is their sum, and --adapt-steps runs: the episode's data adapt
    the policy, swapped in while the robot holds its pose, and the second stage runs the
    adapted policy."""
    controller = Controller.from_checkpoint(checkpoint)
    before = {k: v.clone() for k, v in controller.params.items()}
    robot = robot_for(controller, sim_domain, odometry="rt/sportmodestate",
                      max_target_step=10.0)
    report = run_closing(controller, robot, adapt_steps=1, report_dir=tmp_path / "report")
    assert report["stopped"] == "completed", (report["detail"], report["robot_log"])
    assert [s["robot_phase"] for s in report["swaps"]] == ["hold"]
    assert any("adapted policy swapped in" in e for e in report["robot_log"])
    assert not all(bool((controller.params[k] == before[k]).all()) for k in before)
    rows = list(csv.DictReader(open(tmp_path / "report" / "cycles.csv")))
    for stage in ("0", "1"):
        acted = [r for r in rows if r["stage"] == stage and r["reward"] not in ("", "nan")]
        rewards = np.array([float(r["reward"]) for r in acted])
        assert len(rewards) >= 10 and np.all(np.isfinite(rewards)) and rewards.min() >= 0
        assert rewards.max() > 0  # standing still under a zero command tracks it
        np.testing.assert_allclose(float(acted[-1]["ret"]), rewards.sum(), rtol=1e-5)
    returns = [s["mean_return"] for s in report["stages"]]
    assert len(returns) == 2 and all(r is not None and math.isfinite(r) for r in returns), \
        report["stages"]


def test_the_committed_controller_walks_over_dds(sim_domain):
    """checkpoints/Go2Walk-dr.safetensors through the whole path (passive -> stand -> hold ->
    policy -> stand -> stop) with a 0.5 m/s forward command: the simulated robot's own
    odometry, read here, says its base went more than 0.5 m in the 3 s episode (1.3 m when
    written, also under a training run's load; standing drifts about 0.2 m), with the
    family's reward measured on the way."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    controller = Controller.from_checkpoint(root / "checkpoints" / "Go2Walk-dr.safetensors")
    link = DdsLink("lo", sim_domain)
    reader = link.reader("rt/sportmodestate", ours.SportModeState_)
    robot = None
    try:
        robot = UnitreeRobot(controller.deploy, interface="lo", domain=sim_domain,
                             episode_s=3.0, commands=(0.5, 0.0, 0.0),
                             limits=safety_limits(controller.deploy, stand_s=0.5),
                             passive_s=0.2, settle_s=0.2, verbose=False,
                             odometry="rt/sportmodestate", family=controller.family)
        reader.take(N=4096)
        robot.reset(2.0)  # standing, before the policy
        start = np.array(take_some(reader, 1)[-1].position)
        report = run(controller, robot, episodes=1)  # the run resets again: a second stand
        end = np.array(take_some(reader, 1)[-1].position)
    finally:
        if robot is not None:
            robot.close()
        link.close()
    assert report["stopped"] == "completed", (report["detail"], report["robot_log"])
    assert np.hypot(*(end - start)[:2]) > 0.5, (start, end)
    ret = report["stages"][0]["mean_return"]
    assert ret is not None and ret > 0, report["stages"]


def test_the_sim_robot_says_where_its_base_went():
    line = base_track([(0.0, 0.0, 0.0, 0.30), (1.0, 0.5, 0.0, 0.30), (2.0, 1.5, 0.0, 0.28)])
    assert "moved 1.50 m in 2 s, fastest 1.00 m/s over a second, height 0.28-0.30 m" in line
    assert base_track([(0.0, 0.0, 0.0, 0.3)]) == "base track: under a second served"
