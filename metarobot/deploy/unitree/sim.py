"""A simulated Unitree go-family robot on the robot's own DDS topics: one simulation of a
servo family's task (Go2Walk) publishing rt/lowstate and obeying rt/lowcmd, paced to
wall-clock time at the physics rate.

    metarobot sim-robot Go2Walk --protocol unitree --interface lo --domain 1 --task '{...}'

Every physics step (the model's timestep, 5 ms for Go2Walk): the newest valid LowCmd whose
delay has passed drives each motor by the motor's PD law,
    tau = strength (tau_ff + kp' (q* - q) + kd' (dq* - dq)),
clipped to +-min(effort_limit, saturation_torque (1 - |dq| / max_velocity)) (the deployment
config's motor records), where kp' and kd' are the message's gains times the task's kp and kd
errors (task kp / nominal kp), strength the task's; a motor whose mode byte is 0 is off. Then
the step, and a LowState (IMU quaternion w, x, y, z and gyroscope in the base's frame,
accelerometer, rpy; per motor q, dq, ddq, tau_est; foot forces; tick in ms; crc), and a
SportModeState_ on rt/sportmodestate as unitree_mujoco's bridge publishes it: the base's
position (m) and linear velocity (m/s) in the world frame, exact, the body height and yaw
rate, and the same IMU (what a controller needs for the family's reward on the robot).

A LowCmd whose crc is not the robot's CRC, or whose head or level flag is wrong, is ignored
and counted. Without a valid LowCmd for the command timeout (or before the first) the motors
damp (tau = -damping dq). The gap to training: the task (--task, the family's parameters),
the link's latency and jitter on top of the task's command delay, drops of either way's
messages, extra sensor noise (each sensor in its own units) and the family's noise_scale,
a dynamics shift: the UDP simulated robot's RealityGap, read the same way.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import mujoco
import numpy as np

from ...actuators import actuator_settings
from ...families import make_family
from ..deployment import deployment_config
from ..safety import gravity_from_quaternion
from ..sim_robot import RealityGap, describe_gap, robot_family
from . import messages as M
from .dds import DdsLink
from .idl import (IMUState_, LowCmd_, LowState_, MotorState_, SportModeState_, TimeSpec_,
                  TOPIC_LOW_CMD, TOPIC_LOW_STATE, TOPIC_SPORT_STATE)

GRAVITY = 9.81


def _rpy(quaternion: np.ndarray) -> List[float]:
    w, x, y, z = quaternion
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return [roll, pitch, yaw]


class UnitreeSimRobot:
    """The simulated robot (module docstring); serve() runs it until stopped.

    family: a servo family with a free base (Go2Walk); task: every task parameter of the
    family (its names and units); command_timeout (s): damping after this long without a
    valid LowCmd; damping (Nm s/rad): the damping gain then."""

    def __init__(self, family: str, task: Dict[str, Any], *, interface: str = "lo",
                 domain: int = 1, gap: RealityGap = RealityGap(), seed: int = 0,
                 overrides: Optional[Dict[str, Any]] = None,
                 command_timeout: float = 0.1, damping: float = 1.0, verbose: bool = True):
        if not (isinstance(command_timeout, (int, float)) and 0 < command_timeout < 60):
            raise ValueError(f"command_timeout should be in (0, 60) s, got "
                             f"{command_timeout!r}")
        if gap.saturation != 1.0:
            raise ValueError("a Unitree robot drives position servos: saturation "
                             "(--saturation) has no meaning; weaken its motors with the task's "
                             "strength")
        noise_scale = None if gap.obs_noise_scale is None else float(gap.obs_noise_scale)
        self.family = robot_family(family, overrides, gap.dynamics, noise_scale)
        act = self.family.actuators
        if act is None or act.kind != "servo":
            raise ValueError(f"{self.family.name} has no PD servos: a Unitree robot's motors "
                             f"take position targets (Go2Walk does)")
        values = dict(task)
        if noise_scale is not None:
            values["noise_scale"] = noise_scale
        base_names = set(make_base_names(family, overrides))
        extra = [n for n in self.family.parameter_names
                 if n not in base_names and n != "noise_scale"]
        if extra:  # the dynamics shift: factors drawn once for this robot
            drawn = self.family.sample_tasks(1, seed=seed)[0].as_dict()
            values.update({n: drawn[n] for n in extra})
        self.task = self.family.task(**values)
        self.model = self.family.task_model(self.family.load_model(), self.task)
        m = self.model
        if m.nq < 7 or int(m.jnt_type[0]) != int(mujoco.mjtJoint.mjJNT_FREE):
            raise ValueError(f"{self.family.name}'s model has no free base: no IMU to publish")
        self.data = mujoco.MjData(m)
        self.deploy = deployment_config(self.family, model=m)
        motors = self.deploy["motors"]
        if len(motors) > M.MOTOR_SLOTS:
            raise ValueError(f"{len(motors)} motors, a LowState holds {M.MOTOR_SLOTS}")
        self.names = [r["name"] for r in motors]
        act_index = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in self.names]
        joints = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, r["joint"]) for r in motors]
        self.actuator = np.array(act_index)
        self.qpos_adr = m.jnt_qposadr[joints]
        self.dof_adr = m.jnt_dofadr[joints]
        # the motor model of this task, per motor in the robot's order
        row = {k: v for k, v in self.task.as_dict().items()}
        task_settings = actuator_settings(act, m, [row])
        nominal = actuator_settings(act, m, [{}])
        pick = self.actuator
        self.strength = np.array(task_settings["strength"])[pick]
        self.kp_factor = np.array(task_settings["kp"])[pick] / np.maximum(
            np.array(nominal["kp"])[pick], 1e-12)
        self.kd_factor = np.array(task_settings["kd"])[pick] / np.maximum(
            np.array(nominal["kd"])[pick], 1e-12)
        self.effort = np.array([r["effort_limit"] if r["effort_limit"] is not None
                                else math.inf for r in motors])
        self.saturation = np.array([r["saturation_torque"] if r["saturation_torque"]
                                    is not None else math.inf for r in motors])
        self.max_velocity = np.array([r["max_velocity"] if r["max_velocity"] is not None
                                      else math.inf for r in motors])
        self.command_delay = float(self.task.as_dict().get("command_delay_ms",
                                                         act.delay_range()[0])) * 1e-3
        # sensor noise as training's (its terms' noise times noise_scale) plus obs_noise
        scale = float(self.task.as_dict().get("noise_scale", 1.0))
        noise = {t["kind"]: t["noise_std"] * scale for t in self.deploy["observation"]["terms"]
                 if t["sensor"]}
        self.gyro_noise = math.hypot(noise.get("BodyAngularVelocity", 0.0), gap.obs_noise)
        self.q_noise = math.hypot(noise.get("Qpos", 0.0), gap.obs_noise)
        self.dq_noise = math.hypot(noise.get("Qvel", 0.0), gap.obs_noise)
        feet = [f"{leg}_foot" for leg in ("FR", "FL", "RR", "RL")]
        self.foot_geoms = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f) for f in feet]
        self.gap, self.rng = gap, np.random.default_rng(seed)
        self.dt = float(m.opt.timestep)
        self.command_timeout, self.damping = float(command_timeout), float(damping)
        self.reality_gap = describe_gap(self.family, self.task, gap, self.dt)
        self.verbose = verbose
        self.link = DdsLink(interface, domain)
        self.cmd_reader = self.link.reader(TOPIC_LOW_CMD, LowCmd_)
        self.state_writer = self.link.writer(TOPIC_LOW_STATE, LowState_)
        self.sport_writer = self.link.writer(TOPIC_SPORT_STATE, SportModeState_)
        self.rejected: Dict[str, int] = {}
        self.counts = {"commands": 0, "states": 0, "steps": 0, "timeouts": 0,
                       "dropped_in": 0, "dropped_out": 0}
        self._pending: List[Tuple[float, Any]] = []
        self._command: Optional[Any] = None   # the LowCmd in force
        self._last_valid = -math.inf
        self._obeying = False
        self._shutdown = False
        self._start = time.monotonic()
        self.reset()

    def reset(self) -> None:
        """The robot at the family's initial keyframe (standing), at rest."""
        m, d = self.model, self.data
        key = self.family.init_keyframe
        if key:
            mujoco.mj_resetDataKeyframe(m, d, mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_KEY,
                                                                key))
        else:
            mujoco.mj_resetData(m, d)
        mujoco.mj_forward(m, d)
        self._tau = np.zeros(len(self.names))

    def event(self, text: str) -> None:
        if self.verbose:
            print(f"t={time.monotonic():.6f} {text}", flush=True)

    def shutdown(self) -> None:
        self._shutdown = True

    # ------------------------------------------------------------------------ commands
    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _take_commands(self, now: float) -> None:
        for sample in self.cmd_reader.take(N=64):
            if not isinstance(sample, LowCmd_):
                continue
            if self.gap.drop and self.rng.random() < self.gap.drop:
                self.counts["dropped_in"] += 1
                continue
            if list(sample.head) != list(M.HEAD) or sample.level_flag != M.LEVEL_LOW:
                self._reject("bad head")
                continue
            if not M.crc_ok(M.LOW_CMD, sample):
                self._reject("bad crc")
                continue
            self.counts["commands"] += 1
            delay = self.command_delay + self.gap.latency_ms * 1e-3
            if self.gap.jitter_ms:
                delay += self.rng.uniform(-self.gap.jitter_ms, self.gap.jitter_ms) * 1e-3
            self._pending.append((now + max(delay, 0.0), sample))
            self._last_valid = now
        due = [p for p in self._pending if p[0] <= now]
        if due:
            self._command = due[-1][1]
            self._pending = [p for p in self._pending if p[0] > now]
        obeying = now - self._last_valid <= self.command_timeout
        if obeying != self._obeying:
            if obeying:
                self.event("obeying rt/lowcmd")
            else:
                self.counts["timeouts"] += 1
                self.event(f"damping: no valid rt/lowcmd for "
                           f"{self.command_timeout * 1e3:g} ms (command timeout)")
                self._pending.clear()
                self._command = None
            self._obeying = obeying

    def _torques(self) -> np.ndarray:
        """(n,) Nm per motor in the robot's order, from the command in force."""
        q = self.data.qpos[self.qpos_adr]
        dq = self.data.qvel[self.dof_adr]
        cmd = self._command
        if cmd is None or not self._obeying:
            tau = -self.damping * dq
        else:
            n = len(self.names)
            mc = cmd.motor_cmd
            on = np.array([mc[i].mode != 0 for i in range(n)])
            q_t = np.array([mc[i].q for i in range(n)], np.float64)
            dq_t = np.array([mc[i].dq for i in range(n)], np.float64)
            kp = np.array([mc[i].kp for i in range(n)], np.float64) * self.kp_factor
            kd = np.array([mc[i].kd for i in range(n)], np.float64) * self.kd_factor
            ff = np.array([mc[i].tau for i in range(n)], np.float64)
            tau = self.strength * (ff + kp * (q_t - q) + kd * (dq_t - dq))
            tau = np.where(on & np.isfinite(tau), tau, 0.0)
        envelope = np.minimum(self.effort, np.maximum(
            self.saturation * (1 - np.abs(dq) / self.max_velocity), 0.0))
        return np.clip(tau, -envelope, envelope)

    # --------------------------------------------------------------------------- state
    def _state(self, now: float) -> LowState_:
        d = self.data
        quat = np.array(d.qpos[3:7], np.float64)
        gyro = np.array(d.qvel[3:6], np.float64)  # a free joint's angular velocity: local
        if self.gyro_noise:
            gyro = gyro + self.rng.normal(0.0, self.gyro_noise, 3)
        # an accelerometer at rest reads +g along the body's up: minus the projected gravity
        accel = -GRAVITY * gravity_from_quaternion(quat)
        q = np.array(d.qpos[self.qpos_adr], np.float64)
        dq = np.array(d.qvel[self.dof_adr], np.float64)
        if self.q_noise:
            q = q + self.rng.normal(0.0, self.q_noise, q.shape)
        if self.dq_noise:
            dq = dq + self.rng.normal(0.0, self.dq_noise, dq.shape)
        ddq = np.array(d.qacc[self.dof_adr], np.float64)
        motors = [MotorState_() for _ in range(M.MOTOR_SLOTS)]
        for i in range(len(self.names)):
            s = motors[i]
            s.mode = M.MOTOR_MODE_SERVO
            s.q = s.q_raw = float(q[i])
            s.dq = s.dq_raw = float(dq[i])
            s.ddq = s.ddq_raw = float(ddq[i])
            s.tau_est = float(self._tau[i])
            s.temperature = 30
        forces = self._foot_forces()
        msg = LowState_(
            level_flag=M.LEVEL_LOW,
            imu_state=IMUState_(quaternion=[float(v) for v in quat],
                                gyroscope=[float(v) for v in gyro],
                                accelerometer=[float(v) for v in accel],
                                rpy=_rpy(quat), temperature=30),
            motor_state=motors,
            foot_force=forces, foot_force_est=forces,
            tick=int((now - self._start) * 1e3) & 0xFFFFFFFF,
            power_v=28.0)
        msg.crc = M.message_crc(M.LOW_STATE, msg)
        return msg

    def _sport_state(self, now: float, imu: IMUState_) -> SportModeState_:
        """The base's motion as the robot's high-level state: position and linear velocity in
        the world frame (a free joint's qvel[0:3] is the world's), the body's height, the
        yaw rate (base frame)."""
        d = self.data
        elapsed = now - self._start
        return SportModeState_(
            stamp=TimeSpec_(sec=int(elapsed), nanosec=int((elapsed % 1.0) * 1e9)),
            imu_state=imu, position=[float(v) for v in d.qpos[0:3]],
            body_height=float(d.qpos[2]), velocity=[float(v) for v in d.qvel[0:3]],
            yaw_speed=float(d.qvel[5]))

    def _foot_forces(self) -> List[int]:
        """Normal contact force on each foot (N, int16 as the robot's)."""
        m, d = self.model, self.data
        out = [0.0] * 4
        wrench = np.zeros(6)
        for c in range(d.ncon):
            con = d.contact[c]
            for k, g in enumerate(self.foot_geoms):
                if g >= 0 and g in (con.geom1, con.geom2):
                    mujoco.mj_contactForce(m, d, c, wrench)
                    out[k] += abs(wrench[0])
        return [int(max(-32768, min(32767, round(f)))) for f in out]

    # ---------------------------------------------------------------------------- loop
    def step(self, now: float) -> None:
        """One physics step: commands in, the PD law, mj_step, the state out."""
        self._take_commands(now)
        self._tau = self._torques()
        self.data.ctrl[self.actuator] = self._tau
        mujoco.mj_step(self.model, self.data)
        self.counts["steps"] += 1
        if self.gap.drop and self.rng.random() < self.gap.drop:
            self.counts["dropped_out"] += 1
            return
        state = self._state(now)
        self.state_writer.write(state)
        self.sport_writer.write(self._sport_state(now, state.imu_state))
        self.counts["states"] += 1

    def serve(self, duration: Optional[float] = None) -> None:
        """Steps at the physics rate on the monotonic clock (tick k at start + k dt, so no
        drift; after a stall it resynchronises) until duration seconds, shutdown(), Ctrl-C
        or SIGTERM (both end it the same way: the counts and the base's track printed)."""
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, lambda *_: self.shutdown()) if main else None
        start = time.monotonic()
        next_tick = start
        self.track = [(0.0, *map(float, self.data.qpos[:3]))]
        try:
            while not self._shutdown and (duration is None
                                          or time.monotonic() - start < duration):
                now = time.monotonic()
                if now < next_tick:
                    time.sleep(min(next_tick - now, 0.002))
                    continue
                self.step(now)
                if now - start >= len(self.track):  # the base's position each second
                    self.track.append((now - start, *map(float, self.data.qpos[:3])))
                next_tick += self.dt
                if next_tick < now - 10 * self.dt:  # a stall: skip ahead
                    next_tick = now + self.dt
        except KeyboardInterrupt:
            pass
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)
            self.event(f"stopped: {self.counts} rejected {self.rejected}")
            self.link.close()
            print(base_track(self.track), flush=True)


def base_track(track: List[Tuple[float, float, float, float]]) -> str:
    """A line on where the simulated robot's base went: its world position (x, y, z) m each
    second and its fastest speed over any second (what tells a walking controller from a
    standing one; a real robot's lowstate has no base position)."""
    if len(track) < 2:
        return "base track: under a second served"
    t, x, y, z = (np.array(c) for c in zip(*track))
    speed = np.hypot(np.diff(x), np.diff(y)) / np.maximum(np.diff(t), 1e-9)
    cells = " ".join(f"({a:.2f},{b:.2f},{c:.2f})" for a, b, c in zip(x, y, z))
    return (f"base track: moved {math.hypot(x[-1] - x[0], y[-1] - y[0]):.2f} m in "
            f"{t[-1]:.0f} s, fastest {speed.max():.2f} m/s over a second, height "
            f"{z.min():.2f}-{z.max():.2f} m; (x,y,z) each second: {cells}")


def make_base_names(family: str, overrides: Optional[Dict[str, Any]]) -> List[str]:
    """The family's own task parameters (without a dynamics shift)."""
    return list(make_family(family, **(overrides or {})).parameter_names)


def main_args(family: str, task: Dict[str, Any], *, interface: str, domain: int,
              gap: RealityGap, seed: int, overrides: Optional[Dict[str, Any]] = None,
              duration: Optional[float] = None, command_timeout: Optional[float] = None,
              damping: float = 1.0) -> int:
    """The sim-robot command over DDS: serve until stopped."""
    robot = UnitreeSimRobot(family, task, interface=interface, domain=domain, gap=gap,
                            seed=seed, overrides=overrides,
                            command_timeout=0.1 if command_timeout is None
                            else command_timeout, damping=damping)
    g = robot.reality_gap
    print(f"sim-robot {robot.family.name} {robot.task!r} on unitree://{interface}?domain="
          f"{domain} (rt/lowstate at {1 / robot.dt:g} Hz, rt/lowcmd), command timeout "
          f"{robot.command_timeout * 1e3:g} ms", flush=True)
    print(f"reality gap: command_delay_ms {g['command_delay_ms']} (task) + latency_ms "
          f"{g['latency_ms']:g} +- jitter_ms {g['jitter_ms']:g} (link); noise_scale "
          f"{g['noise_scale']:g}, obs_noise {g['obs_noise']:g}; drop {g['drop']:g}; "
          f"dynamics {g['dynamics']}", flush=True)
    robot.serve(duration)
    return 0
