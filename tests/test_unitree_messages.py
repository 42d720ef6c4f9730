"""The go-family messages' C layout and the robot's CRC, checked against published values
and an independent bit-by-bit CRC; the IDL structs against the layouts."""

import random
import struct
import zlib

import pytest

from metarobot.deploy.unitree import messages as M


def bitwise_crc_of_words(words):
    """CRC-32/MPEG-2 as the robot's firmware describes it: each 32-bit word fed MSB first
    through poly 0x04C11DB7 from 0xFFFFFFFF, no reflection, no final xor."""
    crc = 0xFFFFFFFF
    for word in words:
        for bit in range(31, -1, -1):
            top = (crc >> 31) & 1
            crc = (crc << 1) & 0xFFFFFFFF
            if top ^ ((word >> bit) & 1):
                crc ^= 0x04C11DB7
    return crc


def bitwise_crc_of_bytes(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else \
                (crc << 1) & 0xFFFFFFFF
    return crc


def words_of(packed):
    return struct.unpack(f"<{len(packed) // 4 - 1}I", packed[:-4])


def test_sizes_are_the_robots():
    assert M.LOW_CMD.size == 812 and M.LOW_STATE.size == 1180
    assert M.MOTOR_CMD.size == 36 and M.MOTOR_STATE.size == 48
    assert M.IMU_STATE.size == 56 and M.BMS_STATE.size == 44 and M.BMS_CMD.size == 4


def offset_of(layout, name):
    """Byte offset of a top-level field, by packing a message with only that field set."""
    message = layout.blank()
    for field, kind, count in layout.fields:
        if field == name:
            setattr(message, name, [0xAB] * count if count else 0xAB)
    return layout.pack(message).index(0xAB)


def test_field_offsets_follow_c_alignment():
    # LowCmd: bandwidth (uint16) at 20, two bytes of padding, 20 MotorCmd_ of 36 bytes
    assert offset_of(M.LOW_CMD, "bandwidth") == 20
    assert offset_of(M.LOW_CMD, "wireless_remote") == 24 + 20 * 36 + 4
    assert offset_of(M.LOW_CMD, "gpio") == 802 and offset_of(M.LOW_CMD, "reserve") == 804
    assert offset_of(M.LOW_CMD, "crc") == 808
    assert offset_of(M.LOW_STATE, "foot_force") == 24 + 56 + 20 * 48 + 44
    assert offset_of(M.LOW_STATE, "tick") == 1100
    assert offset_of(M.LOW_STATE, "crc") == 1176


def test_crc32_mpeg2_check_value():
    assert M.crc32_mpeg2(b"123456789") == 0x0376E6E7
    assert bitwise_crc_of_bytes(b"123456789") == 0x0376E6E7
    assert M.crc32_mpeg2(b"123456789") != zlib.crc32(b"123456789")


def test_message_crc_is_the_word_wise_crc():
    cmd = M.new_message(M.LOW_CMD)
    # the known answer of a LowCmd of zeros with its head and level flag, derived bitwise
    assert bitwise_crc_of_words(words_of(M.LOW_CMD.pack(cmd))) == 0x322AC991
    assert M.message_crc(M.LOW_CMD, cmd) == 0x322AC991
    rng = random.Random(3)
    for _ in range(5):
        cmd = M.new_message(M.LOW_CMD)
        for k, motor in enumerate(cmd.motor_cmd[:12]):
            motor.mode, motor.q, motor.kp, motor.kd = 1, rng.uniform(-2, 2), 20.0, 0.5
        cmd.crc = rng.getrandbits(32)  # the crc field itself plays no part
        packed = M.LOW_CMD.pack(cmd)
        assert M.message_crc(M.LOW_CMD, cmd) == bitwise_crc_of_words(words_of(packed))
    state = M.LOW_STATE.blank()
    state.tick, state.motor_state[3].q, state.imu_state.quaternion[0] = 1234, -1.5, 1.0
    assert M.message_crc(M.LOW_STATE, state) == bitwise_crc_of_words(
        words_of(M.LOW_STATE.pack(state)))


def test_crc_catches_a_changed_word():
    cmd = M.new_message(M.LOW_CMD)
    cmd.crc = M.message_crc(M.LOW_CMD, cmd)
    assert M.crc_ok(M.LOW_CMD, cmd)
    cmd.motor_cmd[2].q = 0.5
    assert not M.crc_ok(M.LOW_CMD, cmd)


def test_pack_unpack_round_trip_and_bad_input():
    state = M.LOW_STATE.blank()
    state.motor_state[11].dq, state.foot_force = 2.5, [1, -2, 3, 4]
    back = M.LOW_STATE.unpack(M.LOW_STATE.pack(state))
    assert back.motor_state[11].dq == 2.5 and back.foot_force == [1, -2, 3, 4]
    assert M.new_message(M.LOW_CMD).head == [0xFE, 0xEF]
    assert M.new_message(M.LOW_CMD).level_flag == 0xFF
    with pytest.raises(ValueError, match="1180 bytes, got 10"):
        M.LOW_STATE.unpack(b"\0" * 10)
    state.foot_force = [1, 2, 3]
    with pytest.raises(ValueError, match="foot_force should hold 4"):
        M.LOW_STATE.pack(state)


def test_go2_motor_order():
    assert M.GO2_MOTOR_NAMES[:3] == ("FR_hip", "FR_thigh", "FR_calf")
    assert M.GO2_MOTOR_NAMES[3] == "FL_hip" and M.GO2_MOTOR_NAMES[6] == "RR_hip"
    assert M.GO2_MOTOR_NAMES[9:] == ("RL_hip", "RL_thigh", "RL_calf")


def test_idl_structs_match_the_layouts():
    pytest.importorskip("cyclonedds", reason="cyclonedds is not installed (the 'unitree' "
                                             "extra)")
    import typing
    from metarobot.deploy.unitree import idl as I
    for layout, cls in I.IDL_OF.items():
        assert cls.__idl__.idl_transformed_typename == layout.typename
        hints = typing.get_type_hints(cls, include_extras=True)
        assert list(hints) == [name for name, _, _ in layout.fields]
        # every byte 0x80: 128 fits uint8 not int8, 0x8080 int16 or uint16 only as declared,
        # and so on; a field of another width or sign fails the trip or changes the bytes
        message = layout.unpack(b"\x80" * layout.size)
        sample = I.to_idl(layout, message)
        back = I.from_idl(layout, cls.deserialize(sample.serialize()))
        assert layout.pack(back) == layout.pack(message), layout.typename
    cmd = M.new_message(M.LOW_CMD)
    cmd.motor_cmd[4].q, cmd.motor_cmd[4].kp = 0.25, 20.0
    sample = I.to_idl(M.LOW_CMD, cmd)
    assert M.message_crc(M.LOW_CMD, sample) == M.message_crc(M.LOW_CMD, cmd)
    # the default IDL samples are the layouts' new messages
    assert M.LOW_CMD.pack(I.LowCmd_()) == M.LOW_CMD.pack(M.new_message(M.LOW_CMD))
