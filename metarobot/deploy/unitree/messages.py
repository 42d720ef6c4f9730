"""Unitree's go-family low-level messages in their fixed C layout, and the CRC the robot checks;
plain Python (struct), no DDS library needed.

    cmd = new_message(LOW_CMD)                 # zeros, head 0xFE 0xEF, level_flag 0xFF
    cmd.motor_cmd[0].q = 0.1; ...
    cmd.crc = message_crc(LOW_CMD, cmd)        # over the packed message without the crc word
    data = LOW_CMD.pack(cmd)                   # 812 bytes, little-endian, C alignment

The layouts follow Unitree's published IDL (unitree_go::msg::dds_::LowCmd_, LowState_,
MotorCmd_, MotorState_, IMUState_, BmsCmd_, BmsState_): field names, order, types and array
sizes, each field at its natural C alignment, as the robot's firmware packs them before its
CRC. The CRC is CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, no reflection, no final
xor) over the packed message read as little-endian 32-bit words without the final crc word,
each word fed most significant bit first. It is not zlib's CRC-32: a message with zlib's
checksum is dropped by the robot without a word.

Messages are any objects with the IDL's attribute names: the IdlStruct classes of
metarobot.deploy.unitree.idl (DDS samples) or the namespaces new_message / unpack make.
"""

from __future__ import annotations

import struct
import types
import zlib
from typing import Any, List, Sequence, Tuple, Union

# (name, struct code or nested Layout, count): count 0 is a single value, n an array of n
Field = Tuple[str, Union[str, "Layout"], int]


class Layout:
    """A C struct of the IDL: its fields at their natural alignment, the struct format that
    packs it (little-endian, explicit padding), its size and alignment in bytes."""

    def __init__(self, typename: str, fields: Sequence[Field]):
        self.typename = typename
        self.fields = tuple(fields)
        self.format, self.size, self.align = self._compile()
        self._struct = struct.Struct(self.format)
        assert self._struct.size == self.size, (typename, self._struct.size, self.size)

    def _compile(self) -> Tuple[str, int, int]:
        fmt, at, align = ["<"], 0, 1
        for _, kind, count in self.fields:
            if isinstance(kind, Layout):
                size, a, code = kind.size, kind.align, kind.format[1:]
            else:
                size = a = struct.calcsize("<" + kind)
                code = kind
            pad = -at % a
            if pad:
                fmt.append(f"{pad}x")
            n = max(count, 1)
            fmt.append(code * n if isinstance(kind, Layout) else (f"{n}{code}" if count
                                                                 else code))
            at += pad + size * n
            align = max(align, a)
        tail = -at % align
        if tail:
            fmt.append(f"{tail}x")
        return "".join(fmt), at + tail, align

    # ------------------------------------------------------------------------ values
    def _flatten(self, message: Any, out: List[Any]) -> None:
        for name, kind, count in self.fields:
            value = getattr(message, name)
            if count:
                if len(value) != count:
                    raise ValueError(f"{self.typename}.{name} should hold {count} values, got "
                                     f"{len(value)}")
                if isinstance(kind, Layout):
                    for item in value:
                        kind._flatten(item, out)
                else:
                    out.extend(value)
            elif isinstance(kind, Layout):
                kind._flatten(value, out)
            else:
                out.append(value)

    def _build(self, values: Sequence[Any], at: int) -> Tuple[Any, int]:
        fields = {}
        for name, kind, count in self.fields:
            if isinstance(kind, Layout):
                if count:
                    items = []
                    for _ in range(count):
                        item, at = kind._build(values, at)
                        items.append(item)
                    fields[name] = items
                else:
                    fields[name], at = kind._build(values, at)
            elif count:
                fields[name] = list(values[at:at + count])
                at += count
            else:
                fields[name] = values[at]
                at += 1
        return types.SimpleNamespace(**fields), at

    def pack(self, message: Any) -> bytes:
        """The message (an object with the IDL's attribute names) as the C layout's bytes."""
        values: List[Any] = []
        self._flatten(message, values)
        try:
            return self._struct.pack(*values)
        except struct.error as exc:
            raise ValueError(f"{self.typename} does not pack: {exc}") from None

    def unpack(self, data: bytes) -> types.SimpleNamespace:
        """The C layout's bytes as a message (nested namespaces, arrays as lists)."""
        if len(data) != self.size:
            raise ValueError(f"{self.typename} is {self.size} bytes, got {len(data)}")
        message, _ = self._build(self._struct.unpack(data), 0)
        return message

    def blank(self) -> types.SimpleNamespace:
        """A message of zeros."""
        return self.unpack(bytes(self.size))

    def leaves(self, prefix: str = "") -> List[Tuple[str, str, int]]:
        """(dotted name, struct code, count) of every leaf field in order (tests, docs)."""
        out = []
        for name, kind, count in self.fields:
            if isinstance(kind, Layout):
                inner = kind.leaves()
                for k in range(max(count, 1)):
                    at = f"{prefix}{name}[{k}]." if count else f"{prefix}{name}."
                    out.extend((at + n, c, m) for n, c, m in inner)
            else:
                out.append((prefix + name, kind, count))
        return out


# struct codes of the IDL's types: octet/uint8 B, int16 h, uint16 H, int32 i, uint32 I, float f
MOTOR_CMD = Layout("unitree_go::msg::dds_::MotorCmd_", (
    ("mode", "B", 0), ("q", "f", 0), ("dq", "f", 0), ("tau", "f", 0), ("kp", "f", 0),
    ("kd", "f", 0), ("reserve", "I", 3)))
BMS_CMD = Layout("unitree_go::msg::dds_::BmsCmd_", (("off", "B", 0), ("reserve", "B", 3)))
LOW_CMD = Layout("unitree_go::msg::dds_::LowCmd_", (
    ("head", "B", 2), ("level_flag", "B", 0), ("frame_reserve", "B", 0), ("sn", "I", 2),
    ("version", "I", 2), ("bandwidth", "H", 0), ("motor_cmd", MOTOR_CMD, 20),
    ("bms_cmd", BMS_CMD, 0), ("wireless_remote", "B", 40), ("led", "B", 12), ("fan", "B", 2),
    ("gpio", "B", 0), ("reserve", "I", 0), ("crc", "I", 0)))
IMU_STATE = Layout("unitree_go::msg::dds_::IMUState_", (
    ("quaternion", "f", 4), ("gyroscope", "f", 3), ("accelerometer", "f", 3), ("rpy", "f", 3),
    ("temperature", "B", 0)))
MOTOR_STATE = Layout("unitree_go::msg::dds_::MotorState_", (
    ("mode", "B", 0), ("q", "f", 0), ("dq", "f", 0), ("ddq", "f", 0), ("tau_est", "f", 0),
    ("q_raw", "f", 0), ("dq_raw", "f", 0), ("ddq_raw", "f", 0), ("temperature", "B", 0),
    ("lost", "I", 0), ("reserve", "I", 2)))
BMS_STATE = Layout("unitree_go::msg::dds_::BmsState_", (
    ("version_high", "B", 0), ("version_low", "B", 0), ("status", "B", 0), ("soc", "B", 0),
    ("current", "i", 0), ("cycle", "H", 0), ("bq_ntc", "B", 2), ("mcu_ntc", "B", 2),
    ("cell_vol", "H", 15)))
LOW_STATE = Layout("unitree_go::msg::dds_::LowState_", (
    ("head", "B", 2), ("level_flag", "B", 0), ("frame_reserve", "B", 0), ("sn", "I", 2),
    ("version", "I", 2), ("bandwidth", "H", 0), ("imu_state", IMU_STATE, 0),
    ("motor_state", MOTOR_STATE, 20), ("bms_state", BMS_STATE, 0), ("foot_force", "h", 4),
    ("foot_force_est", "h", 4), ("tick", "I", 0), ("wireless_remote", "B", 40),
    ("bit_flag", "B", 0), ("adc_reel", "f", 0), ("temperature_ntc1", "B", 0),
    ("temperature_ntc2", "B", 0), ("power_v", "f", 0), ("power_a", "f", 0),
    ("fan_frequency", "H", 4), ("reserve", "I", 0), ("crc", "I", 0)))

LOW_CMD_SIZE, LOW_STATE_SIZE = 812, 1180   # what the robot's firmware packs
assert LOW_CMD.size == LOW_CMD_SIZE and LOW_STATE.size == LOW_STATE_SIZE

HEAD = (0xFE, 0xEF)        # every go-family LowCmd starts with it
LEVEL_LOW = 0xFF           # level_flag of low-level (joint) control
MOTOR_MODE_SERVO = 0x01    # a motor's mode byte: PMSM servo (0: off)
MOTOR_SLOTS = 20           # motor_cmd / motor_state entries; the Go2 uses the first 12

# the Go2's motors in its own order: FR 0-2, FL 3-5, RR 6-8, RL 9-11; hip, thigh, calf
GO2_MOTOR_NAMES = tuple(f"{leg}_{part}" for leg in ("FR", "FL", "RR", "RL")
                        for part in ("hip", "thigh", "calf"))


def new_message(layout: Layout) -> types.SimpleNamespace:
    """A message of zeros; a LowCmd with its head and the low-level flag set."""
    message = layout.blank()
    if layout is LOW_CMD:
        message.head = list(HEAD)
        message.level_flag = LEVEL_LOW
    return message


# ------------------------------------------------------------------------------- the CRC

# each byte with its bits reversed: a reflected CRC (zlib's) of bit-reversed input is the
# bit-reversed unreflected CRC, which lets zlib's C loop do CRC-32/MPEG-2's work
_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of bytes, each fed most significant bit first (check value of
    b"123456789": 0x0376E6E7). CRC-32/BZIP2 is the same register with a final xor of
    0xFFFFFFFF, and zlib's CRC-32 its mirror image."""
    mirrored = zlib.crc32(bytes(data).translate(_REVERSED_BITS))
    return _reverse32(mirrored) ^ 0xFFFFFFFF


def words_crc(packed: bytes) -> int:
    """The robot's CRC of a packed message: its little-endian 32-bit words but the last
    (the crc field itself), each fed most significant bit first."""
    if len(packed) % 4:
        raise ValueError(f"a packed message is whole 32-bit words, got {len(packed)} bytes")
    n = len(packed) // 4 - 1
    words = struct.unpack(f"<{n}I", packed[:4 * n])
    return crc32_mpeg2(struct.pack(f">{n}I", *words))


def message_crc(layout: Layout, message: Any) -> int:
    """The crc field the robot expects for this message (its own crc field plays no part)."""
    return words_crc(layout.pack(message))


def crc_ok(layout: Layout, message: Any) -> bool:
    """Whether the message's crc field is the robot's CRC of the rest."""
    return int(message.crc) == message_crc(layout, message)
