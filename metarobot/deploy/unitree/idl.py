"""The go-family messages as cyclonedds IDL structs (final extensibility, fields in the IDL's
order), so that our samples are Unitree's on the wire: topic types
"unitree_go::msg::dds_::LowCmd_" and "unitree_go::msg::dds_::LowState_" on rt/lowcmd and
rt/lowstate. messages.py holds the same layouts as C structs (for the CRC); the tests check
that the two agree field by field.
"""

# no `from __future__ import annotations`: cyclonedds reads the annotations as types
import types as _types
from dataclasses import dataclass, field
from typing import Any

try:
    import cyclonedds.idl as idl
    import cyclonedds.idl.annotations as annotate
    import cyclonedds.idl.types as t
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError(f"the Unitree bridge needs cyclonedds (pip install "
                      f"'metarobot[unitree]'): {exc}") from None

from . import messages as M

TOPIC_LOW_CMD = "rt/lowcmd"
TOPIC_LOW_STATE = "rt/lowstate"
# the robot's own state estimate (its sport service's; unitree_mujoco's bridge publishes it from
# the simulation): where a motion-capture or estimator pipeline can put the base's motion
TOPIC_SPORT_STATE = "rt/sportmodestate"


def _zeros(n: int, value: Any = 0):
    return field(default_factory=lambda: [value] * n)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class MotorCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.MotorCmd_"):
    mode: t.uint8 = 0
    q: t.float32 = 0.0
    dq: t.float32 = 0.0
    tau: t.float32 = 0.0
    kp: t.float32 = 0.0
    kd: t.float32 = 0.0
    reserve: t.array[t.uint32, 3] = _zeros(3)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class BmsCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.BmsCmd_"):
    off: t.uint8 = 0
    reserve: t.array[t.uint8, 3] = _zeros(3)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class LowCmd_(idl.IdlStruct, typename="unitree_go.msg.dds_.LowCmd_"):
    head: t.array[t.uint8, 2] = field(default_factory=lambda: list(M.HEAD))
    level_flag: t.uint8 = M.LEVEL_LOW
    frame_reserve: t.uint8 = 0
    sn: t.array[t.uint32, 2] = _zeros(2)
    version: t.array[t.uint32, 2] = _zeros(2)
    bandwidth: t.uint16 = 0
    motor_cmd: t.array[MotorCmd_, 20] = field(
        default_factory=lambda: [MotorCmd_() for _ in range(M.MOTOR_SLOTS)])
    bms_cmd: BmsCmd_ = field(default_factory=BmsCmd_)
    wireless_remote: t.array[t.uint8, 40] = _zeros(40)
    led: t.array[t.uint8, 12] = _zeros(12)
    fan: t.array[t.uint8, 2] = _zeros(2)
    gpio: t.uint8 = 0
    reserve: t.uint32 = 0
    crc: t.uint32 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class IMUState_(idl.IdlStruct, typename="unitree_go.msg.dds_.IMUState_"):
    quaternion: t.array[t.float32, 4] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0])
    gyroscope: t.array[t.float32, 3] = _zeros(3, 0.0)
    accelerometer: t.array[t.float32, 3] = _zeros(3, 0.0)
    rpy: t.array[t.float32, 3] = _zeros(3, 0.0)
    temperature: t.uint8 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class MotorState_(idl.IdlStruct, typename="unitree_go.msg.dds_.MotorState_"):
    mode: t.uint8 = 0
    q: t.float32 = 0.0
    dq: t.float32 = 0.0
    ddq: t.float32 = 0.0
    tau_est: t.float32 = 0.0
    q_raw: t.float32 = 0.0
    dq_raw: t.float32 = 0.0
    ddq_raw: t.float32 = 0.0
    temperature: t.uint8 = 0
    lost: t.uint32 = 0
    reserve: t.array[t.uint32, 2] = _zeros(2)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class BmsState_(idl.IdlStruct, typename="unitree_go.msg.dds_.BmsState_"):
    version_high: t.uint8 = 0
    version_low: t.uint8 = 0
    status: t.uint8 = 0
    soc: t.uint8 = 0
    current: t.int32 = 0
    cycle: t.uint16 = 0
    bq_ntc: t.array[t.uint8, 2] = _zeros(2)
    mcu_ntc: t.array[t.uint8, 2] = _zeros(2)
    cell_vol: t.array[t.uint16, 15] = _zeros(15)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class LowState_(idl.IdlStruct, typename="unitree_go.msg.dds_.LowState_"):
    head: t.array[t.uint8, 2] = field(default_factory=lambda: list(M.HEAD))
    level_flag: t.uint8 = 0
    frame_reserve: t.uint8 = 0
    sn: t.array[t.uint32, 2] = _zeros(2)
    version: t.array[t.uint32, 2] = _zeros(2)
    bandwidth: t.uint16 = 0
    imu_state: IMUState_ = field(default_factory=IMUState_)
    motor_state: t.array[MotorState_, 20] = field(
        default_factory=lambda: [MotorState_() for _ in range(M.MOTOR_SLOTS)])
    bms_state: BmsState_ = field(default_factory=BmsState_)
    foot_force: t.array[t.int16, 4] = _zeros(4)
    foot_force_est: t.array[t.int16, 4] = _zeros(4)
    tick: t.uint32 = 0
    wireless_remote: t.array[t.uint8, 40] = _zeros(40)
    bit_flag: t.uint8 = 0
    adc_reel: t.float32 = 0.0
    temperature_ntc1: t.uint8 = 0
    temperature_ntc2: t.uint8 = 0
    power_v: t.float32 = 0.0
    power_a: t.float32 = 0.0
    fan_frequency: t.array[t.uint16, 4] = _zeros(4)
    reserve: t.uint32 = 0
    crc: t.uint32 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class TimeSpec_(idl.IdlStruct, typename="unitree_go.msg.dds_.TimeSpec_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class PathPoint_(idl.IdlStruct, typename="unitree_go.msg.dds_.PathPoint_"):
    t_from_start: t.float32 = 0.0
    x: t.float32 = 0.0
    y: t.float32 = 0.0
    yaw: t.float32 = 0.0
    vx: t.float32 = 0.0
    vy: t.float32 = 0.0
    vyaw: t.float32 = 0.0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class SportModeState_(idl.IdlStruct, typename="unitree_go.msg.dds_.SportModeState_"):
    """The go-family's high-level state (no CRC): what here reads it is the base's motion,
    position (m) and velocity (m/s) in the world (odometry) frame, and the IMU. Every field of
    Unitree's type, path_point included: a final struct pairs only with its exact twin."""
    stamp: TimeSpec_ = field(default_factory=TimeSpec_)
    error_code: t.uint32 = 0
    imu_state: IMUState_ = field(default_factory=IMUState_)
    mode: t.uint8 = 0
    progress: t.float32 = 0.0
    gait_type: t.uint8 = 0
    foot_raise_height: t.float32 = 0.0
    position: t.array[t.float32, 3] = _zeros(3, 0.0)
    body_height: t.float32 = 0.0
    velocity: t.array[t.float32, 3] = _zeros(3, 0.0)
    yaw_speed: t.float32 = 0.0
    range_obstacle: t.array[t.float32, 4] = _zeros(4, 0.0)
    foot_force: t.array[t.int16, 4] = _zeros(4)
    foot_position_body: t.array[t.float32, 12] = _zeros(12, 0.0)
    foot_speed_body: t.array[t.float32, 12] = _zeros(12, 0.0)
    path_point: t.array[PathPoint_, 10] = field(
        default_factory=lambda: [PathPoint_() for _ in range(10)])


# the IDL struct of each C layout (conversions, the tests' field-by-field check)
IDL_OF = {M.MOTOR_CMD: MotorCmd_, M.BMS_CMD: BmsCmd_, M.LOW_CMD: LowCmd_,
          M.IMU_STATE: IMUState_, M.MOTOR_STATE: MotorState_, M.BMS_STATE: BmsState_,
          M.LOW_STATE: LowState_}


def to_idl(layout: M.Layout, message: Any) -> idl.IdlStruct:
    """A message (namespace or IDL struct) as the layout's IDL struct, a DDS sample."""
    cls = IDL_OF[layout]
    values = {}
    for name, kind, count in layout.fields:
        value = getattr(message, name)
        if isinstance(kind, M.Layout):
            value = ([to_idl(kind, v) for v in value] if count else to_idl(kind, value))
        elif count:
            value = list(value)
        values[name] = value
    return cls(**values)


def from_idl(layout: M.Layout, sample: Any) -> _types.SimpleNamespace:
    """A DDS sample as a namespace message of the layout (arrays as lists)."""
    values = {}
    for name, kind, count in layout.fields:
        value = getattr(sample, name)
        if isinstance(kind, M.Layout):
            value = ([from_idl(kind, v) for v in value] if count else from_idl(kind, value))
        elif count:
            value = list(value)
        values[name] = value
    return _types.SimpleNamespace(**values)
