"""A Unitree go-family robot (Go2) as a Robot for the runner, over rt/lowstate and rt/lowcmd.

    robot = UnitreeRobot.from_url("unitree://lo?domain=1", controller.deploy)
    report = run(controller, robot, episodes=1, report_dir="hil-go2")

Before anything is sent: the deployment config must be a servo policy whose motors are the
Go2's in its own order (FR, FL, RR, RL x hip, thigh, calf; a mirrored or shuffled map is
refused), every observation term must have a sensor here, nobody else may be on rt/lowcmd
(it listens `listen` seconds: another controller, or the robot's own sport controller not
yet released), and rt/lowstate must be coming.

A command thread sends a LowCmd every 1 / command_hz seconds on the monotonic clock (tick k
at start + k / command_hz: no drift), each what the safety machine (metarobot.deploy.safety)
answers for the newest state: PASSIVE (damping) from the start; reset() ramps to the default
pose and holds it, then returns the first observation; the first controls hand over to the
policy, whose targets (default_pose + action_scale * controls, the config's gains) are held
between policy steps; stop() and every stop trigger go to damping, which the thread keeps
sending until close(). LowStates with a bad CRC are ignored and counted in rejected.

Observations are the deployment config's terms from the LowState: BodyAngularVelocity from
the IMU's gyroscope, ProjectedGravity from its quaternion (w, x, y, z), Qpos / Qvel from the
motors (by joint name), Command from the operator's fixed command, LastAction the last
controls in the policy's order (zeros after a reset); obs = clip(scale * (raw - offset)).

A LowState has no base position or linear velocity, so the robot alone gives no reward. With
`odometry` (a topic of SportModeState_ messages, rt/sportmodestate: the simulated robot's
and unitree_mujoco's; a motion-capture or estimator pipeline can publish the same), every
observation under the policy carries the family's reward of the step that led to it, the
core's own terms (MeasuredReward) on the measured state: the base's position and velocity
(world) from the odometry, its orientation and angular velocity from the LowState's IMU, the
joints and torque estimates from its motors, the operator's command and the last action. Its
running return travels with every reading, so adaptation on the robot (`--adapt-steps`) has
the reward training had. From the first step whose odometry is missing, older than
`odometry_timeout` or not finite, the episode's rewards end (NaN; said once in the log); a
state the family terminates in (base contact, tilt) ends the episode. Contacts are the model's
at the measured state: the odometry's height must be the base's above the ground (z = 0).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ...families import TaskFamily, make_family
from ..deployment import Sensors, check_deployment_config, observation_from_readings
from ..measured_reward import MeasuredReward
from ..robot import Reading, RobotSpec
from ..safety import MotorState, Phase, SafetyLimits, SafetyMachine, gravity_from_quaternion
from . import messages as M
from .dds import DdsLink, others_on, parse_unitree_url
from .idl import (LowCmd_, LowState_, MotorCmd_, SportModeState_, TOPIC_LOW_CMD,
                  TOPIC_LOW_STATE)

SENSED_TERMS = ("BodyAngularVelocity", "ProjectedGravity", "Command", "Qpos", "Qvel",
                "LastAction")


STOP_REQUESTED = "stop requested by the controller"


class RobotBusy(ValueError):
    """Someone else commands the robot (rt/lowcmd is not free)."""


def check_go2_config(config: Dict[str, Any]) -> None:
    """ValueError unless the config drives the Go2's 12 servos in its motor order and every
    observation term has a sensor on the robot."""
    check_deployment_config(config)
    if config["action"]["kind"] != "servo":
        raise ValueError(f"{config['family']} drives torques; a Unitree robot here takes "
                         f"position targets (a servo family such as Go2Walk)")
    names = [m["name"] for m in config["motors"]]
    if len(names) != len(M.GO2_MOTOR_NAMES):
        raise ValueError(f"the deployment config has {len(names)} motors, the Go2 "
                         f"{len(M.GO2_MOTOR_NAMES)}")
    for i, (robot, ours) in enumerate(zip(M.GO2_MOTOR_NAMES, names)):
        if robot != ours:
            raise ValueError(f"joint map: motor {i} is {robot!r} on the Go2, {ours!r} in the "
                             f"deployment config (a mirrored or shuffled map drives the wrong "
                             f"legs); the Go2's order is {', '.join(M.GO2_MOTOR_NAMES)}")
    for term in config["observation"]["terms"]:
        if term["kind"] not in SENSED_TERMS:
            raise ValueError(f"observation term {term['kind']} has no sensor on a Unitree "
                             f"robot (it reads {', '.join(SENSED_TERMS)})")


def safety_limits(config: Dict[str, Any], **overrides: Any) -> SafetyLimits:
    """The safety machine's limits from the deployment config: joint ranges and effort
    limits per motor, the tilt limit of the family's Tilt termination; overrides replace
    any field."""
    motors = config["motors"]
    low = [m["joint_range"][0] if m["joint_range"] else -math.inf for m in motors]
    high = [m["joint_range"][1] if m["joint_range"] else math.inf for m in motors]
    effort = [m["effort_limit"] if m["effort_limit"] is not None else math.inf
              for m in motors]
    fields: Dict[str, Any] = {"joint_low": low, "joint_high": high, "effort_limit": effort}
    tilt = config["limits"].get("tilt_max_degrees")
    if tilt is not None:
        fields["tilt_max_degrees"] = float(tilt)
    fields.update(overrides)
    return SafetyLimits(**fields)


def measured_state(low: Any, sport: Any, qpos_adr: np.ndarray, dof_adr: np.ndarray,
                   policy_index: np.ndarray):
    """A free-base robot's full state from a LowState and a SportModeState_: qpos (7 + n,) =
    base position (m, world; the odometry's), orientation quaternion w, x, y, z (the IMU's),
    and each motor's q at qpos_adr[motor]; qvel (6 + n,) = base linear velocity (m/s, world;
    the odometry's), angular velocity (rad/s, base frame; the gyroscope's), each motor's dq
    at dof_adr[motor]; and the torque estimates (n,) Nm in the policy's order (motor m is the
    policy's action policy_index[m])."""
    n = len(qpos_adr)
    ms = low.motor_state
    qpos, qvel = np.zeros(7 + n), np.zeros(6 + n)
    qpos[0:3], qpos[3:7] = sport.position, low.imu_state.quaternion
    qvel[0:3], qvel[3:6] = sport.velocity, low.imu_state.gyroscope
    qpos[qpos_adr] = [ms[i].q for i in range(n)]
    qvel[dof_adr] = [ms[i].dq for i in range(n)]
    torques = np.zeros(n)
    torques[policy_index] = [ms[i].tau_est for i in range(n)]
    return qpos, qvel, torques


class UnitreeRobot:
    """The Go2 over DDS (module docstring). config: the deployment config (the controller's
    deploy); interface, domain: where the robot is (its Ethernet interface and domain 0; the
    simulated one lo and 1). command_hz: LowCmds per second (default the config's physics
    rate, at which the policy's PD loop ran in training). commands: the operator's command
    (the config's command names, e.g. vx, vy m/s, yaw_rate rad/s), fixed for the run.
    episode_s: an episode ends after so long under the policy (None: only a stop ends it).
    limits: the safety machine's (default safety_limits(config)). passive_s, settle_s (s):
    the least time in PASSIVE before the stand, and in HOLD before the first observation.
    listen (s): how long to listen for another rt/lowcmd publisher; timeout (s): for the
    first rt/lowstate. odometry: the topic of the base's motion (SportModeState_), for the
    family's reward on the robot (module docstring); family: the policy's task family, whose
    reward that is (default the config's family by name); odometry_timeout (s): an older
    odometry gives no reward (default the larger of 50 ms and three command periods: the
    command thread takes the messages in)."""

    def __init__(self, config: Dict[str, Any], *, interface: str = "lo", domain: int = 0,
                 command_hz: Optional[float] = None, commands: Sequence[float] = (),
                 episode_s: Optional[float] = None, limits: Optional[SafetyLimits] = None,
                 passive_s: float = 0.5, settle_s: float = 0.5, listen: float = 0.2,
                 timeout: float = 2.0, verbose: bool = True, odometry: Optional[str] = None,
                 family: Optional[TaskFamily] = None,
                 odometry_timeout: Optional[float] = None):
        check_go2_config(config)
        if odometry is not None and not (isinstance(odometry, str) and odometry.strip()):
            raise ValueError(f"odometry should be a topic name (rt/sportmodestate), got "
                             f"{odometry!r}")
        if odometry_timeout is not None and not (isinstance(odometry_timeout, (int, float))
                                                 and odometry_timeout > 0):
            raise ValueError(f"odometry_timeout should be > 0 seconds, got "
                             f"{odometry_timeout!r}")
        self.config = config
        motors = config["motors"]
        n = len(motors)
        rate = command_hz if command_hz is not None else config["rates"]["physics_hz"]
        if not (isinstance(rate, (int, float)) and 1 <= rate <= 2000):
            raise ValueError(f"command_hz should be in [1, 2000], got {rate!r}")
        names = (config["commands"] or {}).get("names", [])
        commands = tuple(float(c) for c in commands) or (0.0,) * len(names)
        if len(commands) != len(names) or not all(math.isfinite(c) for c in commands):
            raise ValueError(f"commands should be {len(names)} finite numbers "
                             f"({', '.join(names) or 'none'}), got {list(commands)}")
        if episode_s is not None and not (isinstance(episode_s, (int, float))
                                          and episode_s > 0):
            raise ValueError(f"episode_s should be > 0 seconds (or None), got {episode_s!r}")
        self.commands = dict(zip(names, commands))
        # the reward's command vector (the family's order), fixed for the run
        self._command_vector = list(commands) or None
        self.odometry_topic = odometry
        self.odometry_timeout = (float(odometry_timeout) if odometry_timeout is not None
                                 else max(0.05, 3.0 / rate))
        self.reward: Optional[MeasuredReward] = None
        if odometry is not None:
            self.reward = MeasuredReward(family if family is not None
                                         else make_family(config["family"]))
            model = self.reward.sim.models[0]
            if model.jnt_type[0] != 0 or model.nq != 7 + n or model.nv != 6 + n:
                raise ValueError(f"{config['family']}'s model is not a free base with the "
                                 f"{n} motors' joints: no reward from odometry")
            # the full state's layout: the free base, then each motor's joint
            self._qpos_adr = np.array([model.joint(m["joint"]).qposadr[0] for m in motors])
            self._dof_adr = np.array([model.joint(m["joint"]).dofadr[0] for m in motors])
        self._odometry: Optional[Any] = None        # newest SportModeState_
        self._odometry_at = -math.inf
        self._return = 0.0
        self._measuring = False                     # the reward's episode has its first state
        self.command_period = 1.0 / rate
        self.episode_s = episode_s
        self.passive_s, self.settle_s = float(passive_s), float(settle_s)
        self.verbose = verbose
        self.default_pose = np.array([m["default_pose"] for m in motors])
        self.action_scale = np.array([m["action_scale"] for m in motors])
        self.policy_index = np.array([m["policy_index"] for m in motors])
        joint_motor = {m["joint"]: i for i, m in enumerate(motors)}
        self._joint_motors = {t["start"]: np.array([joint_motor[j] for j in t["joints"]])
                              for t in config["observation"]["terms"]
                              if t["kind"] in ("Qpos", "Qvel")}
        self.limits = limits if limits is not None else safety_limits(config)
        if self.limits.policy_timeout <= config["rates"]["control_period_s"]:
            raise ValueError(f"the safety limits' policy_timeout ({self.limits.policy_timeout:g}"
                             f" s) should be longer than a policy step "
                             f"({config['rates']['control_period_s']:g} s)")
        self.rejected: Dict[str, int] = {}
        self.robot_errors: List[str] = []
        self.events: List[str] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._fresh = threading.Condition(self._lock)
        self._state: Optional[Any] = None          # newest valid LowState
        self._state_at = -math.inf                 # when it came (monotonic)
        self._state_seq = 0                        # valid LowStates so far
        self._read_seq = 0                         # the last one read()
        self._step = 0
        self._policy_since: Optional[float] = None
        self._last_action = np.zeros(n)
        self._sent_after_stop = threading.Event()
        self._closing = False
        self.url = f"unitree://{interface}?domain={domain}"
        self.link = DdsLink(interface, domain)
        try:
            found = others_on(self.link, TOPIC_LOW_CMD, LowCmd_, listen)
            if found:
                raise RobotBusy(f"another controller commands the robot at {self.url}: "
                                f"{'; '.join(found)} (the robot's sport controller until "
                                f"it is released, or another program): nothing sent")
            self.state_reader = self.link.reader(TOPIC_LOW_STATE, LowState_)
            self.odometry_reader = (self.link.reader(odometry, SportModeState_)
                                    if odometry is not None else None)
            deadline = time.monotonic() + timeout
            while self._state is None:
                self._take_states()
                if time.monotonic() > deadline:
                    raise ValueError(f"no rt/lowstate at {self.url} within {timeout:g} s "
                                     f"(is the robot on, on this interface and domain?)")
                time.sleep(0.005)
            self.machine = SafetyMachine(self.limits, self.default_pose,
                                         [m["kp"] for m in motors], [m["kd"] for m in motors],
                                         time.monotonic())
            self._log(str(self.machine.transitions[-1]))
            self._logged = 1
            self.cmd_writer = self.link.writer(TOPIC_LOW_CMD, LowCmd_)
        except BaseException:
            self.link.close()
            raise
        self._spec = RobotSpec(int(config["observation"]["size"]), n,
                               float(config["rates"]["control_period_s"]),
                               tuple(config["observation"]["names"]), M.GO2_MOTOR_NAMES,
                               config["family"],
                               # the policy may fall silent this long before the robot damps
                               self.limits.policy_timeout)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._command_loop, name="lowcmd", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url: str, config: Dict[str, Any], **kw: Any) -> "UnitreeRobot":
        interface, domain = parse_unitree_url(url)
        return cls(config, interface=interface, domain=domain, **kw)

    # ----------------------------------------------------------------------- the wire
    def _log(self, text: str) -> None:
        self.events.append(text)
        if self.verbose:
            print(f"unitree: {text}", flush=True)

    def _take_states(self) -> None:
        """Takes the waiting LowStates (and odometry); keeps the newest valid one."""
        if self.odometry_reader is not None:
            for sample in self.odometry_reader.take(N=64):
                if isinstance(sample, SportModeState_):
                    with self._lock:
                        self._odometry, self._odometry_at = sample, time.monotonic()
        for sample in self.state_reader.take(N=64):
            if not isinstance(sample, LowState_):
                continue
            if not M.crc_ok(M.LOW_STATE, sample):
                self.rejected["bad crc"] = self.rejected.get("bad crc", 0) + 1
                continue
            with self._lock:
                self._state, self._state_at = sample, time.monotonic()
                self._state_seq += 1
                self._fresh.notify_all()

    def _motor_state(self) -> Optional[MotorState]:
        s = self._state
        if s is None:
            return None
        n = len(self.default_pose)
        ms = s.motor_state
        return MotorState(self._state_at, np.array([ms[i].q for i in range(n)], np.float64),
                          np.array([ms[i].dq for i in range(n)], np.float64),
                          gravity_from_quaternion(s.imu_state.quaternion),
                          np.array([ms[i].tau_est for i in range(n)], np.float64))

    def _low_cmd(self, command) -> LowCmd_:
        msg = LowCmd_()
        for i in range(len(self.default_pose)):
            msg.motor_cmd[i] = MotorCmd_(mode=M.MOTOR_MODE_SERVO, q=float(command.q[i]),
                                         dq=float(command.dq[i]), tau=float(command.tau_ff[i]),
                                         kp=float(command.kp[i]), kd=float(command.kd[i]))
        msg.crc = M.message_crc(M.LOW_CMD, msg)
        return msg

    def _command_loop(self) -> None:
        """Every command period: the newest state through the safety machine, a LowCmd out."""
        k = 0
        t0 = time.monotonic()
        while True:
            k += 1
            due = t0 + k * self.command_period
            left = due - time.monotonic()
            if left > 0:
                time.sleep(left)
            elif left < -10 * self.command_period:  # a stall: skip the ticks past
                k = int((time.monotonic() - t0) / self.command_period)
            self._take_states()
            now = time.monotonic()
            with self._lock:
                command = self.machine.command(now, self._motor_state())
                # every transition since the last command, also those reset(), send() and
                # stop() made in the runner's thread
                new = self.machine.transitions[self._logged:]
                self._logged = len(self.machine.transitions)
                stopped = self.machine.phase is Phase.STOP
            for t in new:
                self._log(str(t))
                if t.target is Phase.STOP and t.reason != STOP_REQUESTED:
                    self.robot_errors.append(f"safety stop: {t.reason}")
            self.cmd_writer.write(self._low_cmd(command))
            self.sent += 1
            if stopped:
                self._sent_after_stop.set()
                if self._closing:
                    return

    # ------------------------------------------------------------------------- Robot
    def spec(self) -> RobotSpec:
        return self._spec

    def _observation(self) -> np.ndarray:
        s = self._state
        n = len(self.default_pose)
        q = np.array([s.motor_state[i].q for i in range(n)], np.float64)
        dq = np.array([s.motor_state[i].dq for i in range(n)], np.float64)
        readings = []
        for t in self.config["observation"]["terms"]:
            kind = t["kind"]
            if kind == "BodyAngularVelocity":
                readings.append(list(s.imu_state.gyroscope))
            elif kind == "ProjectedGravity":
                readings.append(gravity_from_quaternion(s.imu_state.quaternion))
            elif kind == "Command":
                readings.append([self.commands[c] for c in t["commands"]])
            elif kind == "Qpos":
                readings.append(q[self._joint_motors[t["start"]]])
            elif kind == "Qvel":
                readings.append(dq[self._joint_motors[t["start"]]])
            else:  # LastAction: the policy's order
                readings.append(self._last_action)
        return observation_from_readings(self.config, readings)

    def _measured_state(self, now: float):
        """(the full state (qpos, qvel) and the torques (policy order) from the newest LowState
        and odometry, ""); (None, why) when the odometry is missing or older than
        odometry_timeout, or a value is not finite."""
        if self._odometry is None:
            return None, f"no {self.odometry_topic} message yet"
        age = now - self._odometry_at
        if age > self.odometry_timeout:
            return None, (f"{self.odometry_topic} is {age * 1e3:.0f} ms old (at most "
                          f"{self.odometry_timeout * 1e3:g} ms)")
        state = measured_state(self._state, self._odometry, self._qpos_adr, self._dof_adr,
                               self.policy_index)
        if not all(np.isfinite(x).all() for x in state):
            return None, "a non-finite state or torque estimate"
        return state, ""

    def _measure(self, step: int, now: float):
        """The family's reward of the step that led to this reading, whether the state is
        terminal, and the running return (NaN where unknown); under the lock."""
        if self.reward is None:
            return math.nan, False, math.nan
        state, why = self._measured_state(now)
        if step == 0:  # the episode's first reading: the reward's episode starts here
            self._measuring, self._return = state is not None, 0.0
            if state is not None:
                self.reward.reset(state[0], state[1])
            else:
                self._log(f"no reward this episode: {why}")
            return math.nan, False, (0.0 if self._measuring else math.nan)
        if state is None or not self._measuring:
            if self._measuring:  # the episode's rewards end at the first unmeasured step
                self._log(f"the episode's rewards end at step {step}: {why}")
            self._measuring = False
            return math.nan, False, math.nan
        reward, terminated, _ = self.reward.step(state[0], state[1], self._last_action,
                                                 self._command_vector, state[2])
        self._return += reward
        return reward, terminated, self._return

    def _reading(self, now: float) -> Reading:
        """The newest state as an observation (under the lock)."""
        self._read_seq = self._state_seq
        step = self._step
        self._step += 1
        reward, terminated, ret = self._measure(step, now)
        done = terminated or (self.episode_s is not None and self._policy_since is not None
                              and now - self._policy_since >= self.episode_s)
        if done and self.machine.phase is Phase.POLICY:
            # the episode's end: back to the default pose at once, so that the robot holds
            # it (no policy timeout) while the runner adapts or starts the next episode
            self.machine.start_stand(now, self._motor_state())
        s = self._state
        n = len(self.default_pose)
        # the LowState's own readings for the logs: motors in the Go2's order, the IMU
        sensors = Sensors(np.array([s.motor_state[i].q for i in range(n)], np.float64),
                          np.array([s.motor_state[i].dq for i in range(n)], np.float64),
                          gravity_from_quaternion(s.imu_state.quaternion),
                          np.array(s.imu_state.gyroscope, np.float64))
        return Reading(self._observation(), step, s.tick * 1e-3, now, reward=reward,
                       done=done, terminated=terminated, ret=ret,
                       safe=self.machine.phase is Phase.STOP, sensors=sensors)

    def reset(self, timeout: float = 2.0) -> Reading:
        """To the default pose: after at least passive_s in PASSIVE, the ramp (stand_s), then
        settle_s held; the first observation. Waits the stand's time plus timeout seconds;
        TimeoutError when the robot does not get there."""
        wait_passive = self._started + self.passive_s - time.monotonic()
        if wait_passive > 0:
            time.sleep(wait_passive)
        with self._lock:
            now = time.monotonic()
            if self.machine.phase is not Phase.STOP:
                self.machine.start_stand(now, self._motor_state())
            self._policy_since = None
            self._last_action = np.zeros(len(self.default_pose))
            self._step = 0
        deadline = time.monotonic() + self.limits.stand_s + self.settle_s + timeout
        while True:
            with self._lock:
                phase = self.machine.phase
                if phase is Phase.STOP:
                    return self._reading(time.monotonic())
                if phase is Phase.HOLD:
                    held = self.machine.transitions[-1].time
                    if time.monotonic() - held >= self.settle_s:
                        return self._reading(time.monotonic())
            if time.monotonic() > deadline:
                raise TimeoutError(f"the robot did not reach its default pose within "
                                   f"{self.limits.stand_s + self.settle_s + timeout:g} s "
                                   f"(phase {phase.value})")
            time.sleep(0.005)

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._state_seq == self._read_seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._fresh.wait(left)
            return self._reading(time.monotonic())

    def send(self, step: int, controls: np.ndarray) -> None:
        """Controls (12,) in the Go2's motor order: targets default_pose + action_scale *
        controls, held until the next."""
        c = np.asarray(controls, np.float64)
        if c.shape != self.default_pose.shape:
            raise ValueError(f"controls should be {self.default_pose.shape[0]} values, got "
                             f"{c.shape}")
        with self._lock:
            now = time.monotonic()
            if self.machine.phase is Phase.HOLD:
                self.machine.start_policy(now)
                self._policy_since = now
            self.machine.set_policy_targets(now, self.default_pose + self.action_scale * c)
            self._last_action = np.zeros_like(c)
            self._last_action[self.policy_index] = c

    def commanded_targets(self) -> Optional[np.ndarray]:
        """The joint targets (12,) rad in motor order that the last send() put on the motors,
        after the safety machine's clamp (what the MCAP log records); None outside POLICY."""
        with self._lock:
            return self.machine.policy_targets if self.machine.phase is Phase.POLICY else None

    def policy_swapped(self, reason: str, timeout: float = 5.0) -> str:
        """Records a new policy (adapted between episodes) in the safety machine's
        transitions; waits up to timeout seconds for the stand to reach HOLD. The phase it
        was swapped in ("hold"); ValueError when the robot is not holding its pose."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.machine.phase is Phase.HOLD or time.monotonic() > deadline:
                    self.machine.swap_policy(time.monotonic(), reason)
                    return self.machine.phase.value
            time.sleep(0.005)

    def stop(self, timeout: float = 1.0) -> bool:
        """Damping now (the safety machine's STOP); whether a damping LowCmd went out within
        timeout seconds."""
        with self._lock:
            self.machine.stop(time.monotonic(), STOP_REQUESTED)
        return self._sent_after_stop.wait(timeout)

    def close(self, linger: float = 0.3) -> None:
        """Stops (if not yet), keeps damping for linger seconds, then ends the command thread
        and leaves the DDS domain."""
        self.stop()
        time.sleep(linger)
        self._closing = True
        self._thread.join(timeout=1.0)
        self.link.close()

    @property
    def transitions(self):
        return list(self.machine.transitions)
