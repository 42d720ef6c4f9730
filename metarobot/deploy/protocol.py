"""The robot wire protocol, version 2 (docs/hil.md, byte by byte): UDP datagrams of a fixed
little-endian layout with a session id, an episode id, a per-direction sequence number, a
monotonic timestamp, an optional MAC (HMAC-SHA256, 16 bytes) and a CRC-32.

    packet = header (40 bytes) + payload + [mac (16 bytes) when flags bit 0] + crc32 (4 bytes)
    header = magic b"MRBT" | version u16 | type u16 | flags u16 | 0 u16 | session u64
             | episode u32 | seq u32 | stamp_ns u64 | length u32

This module is the format alone (encode, decode, payloads, keys, sequence windows); the two
sides of a link are metarobot.deploy.udp.UdpRobot (the runner's) and
metarobot.deploy.sim_robot.SimRobot (a robot's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import os
import stat
import struct
import time
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .robot import RobotSpec

MAGIC = b"MRBT"
VERSION = 2
# magic, version, type, flags, reserved, session, episode, seq, stamp_ns, payload length
HEADER = struct.Struct("<4sHHHHQIIQI")
CRC = struct.Struct("<I")
MAC_SIZE = 16
FLAG_MAC = 1
HELLO, SPEC, RESET, OBS, ACTION, STOP, ACK, ERROR = range(1, 9)
TYPE_NAMES = {HELLO: "HELLO", SPEC: "SPEC", RESET: "RESET", OBS: "OBS", ACTION: "ACTION",
              STOP: "STOP", ACK: "ACK", ERROR: "ERROR"}
NONCE_SIZE = 16
# step, flags (done, terminated, has_reward, safe), reward, the robot's return so far
OBS_HEAD = struct.Struct("<I4Bdd")
# session, runner's nonce (echoed), robot's nonce, obs_dim, act_dim, control period (s),
# command timeout (s)
SPEC_HEAD = struct.Struct(f"<Q{NONCE_SIZE}s{NONCE_SIZE}sIIdd")
ACTION_HEAD = struct.Struct("<I")
MAX_PACKET = 65_000
# a sequence number may jump ahead of the newest accepted by at most this much (lost packets
# in between); a bigger jump is refused, so that one forged packet cannot make every later
# real one look old
SEQ_WINDOW = 1 << 16
MIN_KEY_BYTES = 16


class ProtocolError(ValueError):
    """A datagram that is not a valid packet of this protocol (what is wrong, in words)."""


@dataclasses.dataclass(frozen=True)
class Packet:
    """A decoded packet. stamp: seconds on the sender's monotonic clock. signed: the bytes
    the MAC covers (header and payload); mac: the MAC, or b"" when the packet has none."""

    kind: int
    session: int
    episode: int
    seq: int
    stamp: float
    payload: bytes
    signed: bytes
    mac: bytes

    @property
    def name(self) -> str:
        return TYPE_NAMES[self.kind]


def mac(key: bytes, signed: bytes) -> bytes:
    """HMAC-SHA256 of the header and payload, truncated to 16 bytes."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:MAC_SIZE]


def encode(kind: int, *, session: int = 0, episode: int = 0, seq: int = 0,
           payload: bytes = b"", key: Optional[bytes] = None,
           stamp: Optional[float] = None) -> bytes:
    """A packet of kind, stamped now (time.monotonic) unless stamp is given; with key, a MAC
    (the key of the packet's session: handshake_key for session 0, else session_key)."""
    stamp = time.monotonic() if stamp is None else stamp
    head = HEADER.pack(MAGIC, VERSION, kind, FLAG_MAC if key is not None else 0, 0,
                       session, episode, seq & 0xFFFFFFFF, int(stamp * 1e9), len(payload))
    body = head + payload
    if key is not None:
        body += mac(key, body)
    return body + CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def decode(data: bytes) -> Packet:
    """The packet in a datagram, its MAC not yet checked (Packet.verify); ProtocolError
    saying what is wrong otherwise. Never raises anything else, whatever the bytes."""
    if len(data) < 8:
        raise ProtocolError(f"packet of {len(data)} bytes is shorter than a header "
                            f"({HEADER.size})")
    magic, version = data[:4], int.from_bytes(data[4:6], "little")
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this side speaks version {VERSION}")
    if len(data) < HEADER.size + CRC.size:
        raise ProtocolError(f"packet of {len(data)} bytes is shorter than a header and a "
                            f"checksum ({HEADER.size + CRC.size})")
    _, _, kind, flags, _, session, episode, seq, stamp_ns, length = HEADER.unpack_from(data)
    mac_size = MAC_SIZE if flags & FLAG_MAC else 0
    if flags & ~FLAG_MAC:
        raise ProtocolError(f"unknown flags {flags:#06x}")
    if HEADER.size + length + mac_size + CRC.size != len(data):
        raise ProtocolError(f"payload length {length} does not match the packet's "
                            f"{len(data) - HEADER.size - mac_size - CRC.size} bytes")
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if zlib.crc32(data[:-CRC.size]) & 0xFFFFFFFF != crc:
        raise ProtocolError("checksum mismatch (a corrupted packet)")
    if kind not in TYPE_NAMES:
        raise ProtocolError(f"unknown packet type {kind}")
    end = HEADER.size + length
    return Packet(kind, session, episode, seq, stamp_ns * 1e-9, bytes(data[HEADER.size:end]),
                  bytes(data[:end]), bytes(data[end:end + mac_size]))


def authentic(packet: Packet, key: Optional[bytes]) -> Optional[str]:
    """None when the packet's MAC is right for key (or there is no key and no MAC); else
    why not, in words. Constant-time comparison."""
    if key is None:
        return "a MAC, but this side has no key" if packet.mac else None
    if not packet.mac:
        return "no MAC, and this side requires one (--key-file)"
    if not hmac.compare_digest(packet.mac, mac(key, packet.signed)):
        return "wrong MAC (another key, or a forged or altered packet)"
    return None


# --------------------------------------------------------------------------------- keys

def read_key_file(path: Union[str, Path]) -> bytes:
    """The shared key: the file's bytes with leading and trailing ASCII whitespace removed,
    at least 16 of them. ValueError naming the problem otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the key file {str(path)!r}: {exc.strerror}") from None
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key file {str(path)!r} holds {len(key)} bytes; a key needs at "
                         f"least {MIN_KEY_BYTES} (e.g. head -c 32 /dev/urandom | base64 > "
                         f"{path.name})")
    return key


def key_file_warning(path: Union[str, Path]) -> Optional[str]:
    """A warning when others than its owner may read the key file (None otherwise)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (f"warning: the key file {str(path)!r} is readable by other users "
                f"(chmod 600 {path})")
    return None


def handshake_key(key: bytes) -> bytes:
    """The key of session-0 packets (HELLO, SPEC, ERRORs outside a session)."""
    return hmac.new(key, b"metarobot-v2 handshake", hashlib.sha256).digest()


def session_key(key: bytes, session: int, runner_nonce: bytes, robot_nonce: bytes) -> bytes:
    """The key of one session's packets: fresh for every session (both sides' nonces), so
    that no packet of one session is valid in another."""
    return hmac.new(key, b"metarobot-v2 session" + struct.pack("<Q", session) + runner_nonce
                    + robot_nonce, hashlib.sha256).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def new_session_id() -> int:
    """A random non-zero u64 (0 means "no session")."""
    while True:
        value = int.from_bytes(os.urandom(8), "little")
        if value:
            return value


class SeqWindow:
    """One direction's sequence numbers in a session: a packet is fresh when its seq is
    above the newest accepted and at most SEQ_WINDOW above it. accept() says why not
    ("old", "repeated", "out of window") or None and then moves the window."""

    def __init__(self) -> None:
        self.newest = 0

    def check(self, seq: int) -> Optional[str]:
        if seq == self.newest:
            return "repeated"
        if seq < self.newest:
            return "old"
        if seq - self.newest > SEQ_WINDOW:
            return "out of window"
        return None

    def accept(self, seq: int) -> Optional[str]:
        why = self.check(seq)
        if why is None:
            self.newest = seq
        return why


# ----------------------------------------------------------------------------- payloads

def hello_payload(runner_nonce: bytes) -> bytes:
    return bytes(runner_nonce)


def parse_hello(payload: bytes) -> bytes:
    if len(payload) != NONCE_SIZE:
        raise ProtocolError(f"HELLO payload of {len(payload)} bytes, expected {NONCE_SIZE} "
                            f"(the runner's nonce)")
    return payload


def spec_payload(spec: RobotSpec, session: int, runner_nonce: bytes,
                 robot_nonce: bytes) -> bytes:
    fields = {"family": spec.family, "observation": list(spec.observation_names),
              "action": list(spec.action_names)}
    if spec.reality_gap is not None:  # a simulated robot's (receivers ignore unknown keys)
        fields["reality_gap"] = spec.reality_gap
    names = json.dumps(fields).encode()
    return SPEC_HEAD.pack(session, runner_nonce, robot_nonce, spec.obs_dim, spec.act_dim,
                          spec.control_period, spec.command_timeout) + names


def parse_spec(payload: bytes) -> Tuple[RobotSpec, int, bytes, bytes]:
    """(spec, session, runner's nonce as echoed, robot's nonce)."""
    if len(payload) < SPEC_HEAD.size:
        raise ProtocolError(f"SPEC payload of {len(payload)} bytes, at least {SPEC_HEAD.size}")
    session, echo, robot_nonce, obs_dim, act_dim, period, timeout = \
        SPEC_HEAD.unpack_from(payload)
    try:
        names = json.loads(payload[SPEC_HEAD.size:].decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"SPEC names are not UTF-8 JSON: {exc}") from None
    if not isinstance(names, dict):
        raise ProtocolError("SPEC names should be a JSON object")
    try:
        gap = names.get("reality_gap")
        spec = RobotSpec(obs_dim, act_dim, period, tuple(names.get("observation", ())),
                         tuple(names.get("action", ())), str(names.get("family", "")),
                         timeout, gap if isinstance(gap, dict) else None)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"SPEC: {exc}") from None
    if session == 0:
        raise ProtocolError("SPEC names session 0")
    return spec, session, echo, robot_nonce


@dataclasses.dataclass(frozen=True)
class Observation:
    """An OBS payload. reward: of the step that led here (NaN if the robot computes none);
    ret: the robot's own return of the episode so far (NaN if none); safe: the robot is in
    its safe state (it stopped obeying controls: a command timeout, a STOP)."""

    step: int
    obs: np.ndarray
    reward: float = math.nan
    ret: float = math.nan
    done: bool = False
    terminated: bool = False
    safe: bool = False


def obs_payload(o: Observation) -> bytes:
    has_reward = not math.isnan(o.reward)
    head = OBS_HEAD.pack(o.step, int(o.done), int(o.terminated), int(has_reward),
                         int(o.safe), o.reward if has_reward else 0.0,
                         o.ret if has_reward else 0.0)
    return head + np.asarray(o.obs, "<f4").tobytes()


def parse_obs(payload: bytes, obs_dim: int) -> Observation:
    want = OBS_HEAD.size + 4 * obs_dim
    if len(payload) != want:
        raise ProtocolError(f"OBS payload of {len(payload)} bytes, expected {want} for "
                            f"{obs_dim} observations")
    step, done, terminated, has_reward, safe, reward, ret = OBS_HEAD.unpack_from(payload)
    if any(flag > 1 for flag in (done, terminated, has_reward, safe)):
        raise ProtocolError("OBS flags should be 0 or 1")
    obs = np.frombuffer(payload, "<f4", obs_dim, OBS_HEAD.size).astype(np.float32)
    nan = math.nan
    return Observation(step, obs, reward if has_reward else nan, ret if has_reward else nan,
                       bool(done), bool(terminated), bool(safe))


def action_payload(step: int, controls: np.ndarray) -> bytes:
    return ACTION_HEAD.pack(step) + np.asarray(controls, "<f4").tobytes()


def parse_action(payload: bytes, act_dim: int) -> Tuple[int, np.ndarray]:
    """(step answered, controls (act_dim,) float64)."""
    want = ACTION_HEAD.size + 4 * act_dim
    if len(payload) != want:
        raise ProtocolError(f"ACTION payload of {len(payload)} bytes, expected {want} for "
                            f"{act_dim} controls")
    (step,) = ACTION_HEAD.unpack_from(payload)
    return step, np.frombuffer(payload, "<f4", act_dim, ACTION_HEAD.size).astype(np.float64)


def parse_address(url: str) -> Tuple[str, int]:
    """'udp://HOST:PORT', 'udp://[IPv6]:PORT' (or without 'udp://') -> (host, port);
    ValueError naming the expected form otherwise."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme != "udp":
        raise ValueError(f"the robot speaks UDP: the address should be udp://HOST:PORT, got "
                         f"{url!r}")
    text = rest if sep else url
    if text.startswith("["):
        host, close, tail = text[1:].partition("]")
        port = tail[1:] if close and tail.startswith(":") else ""
    else:
        host, colon, port = text.rpartition(":")
        if not colon or ":" in host:
            host, port = "", ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"robot address should be udp://HOST:PORT (udp://[ADDRESS]:PORT for "
                         f"IPv6), got {url!r}")
    return host, int(port)


def count(counter: Dict[str, int], reason: str) -> None:
    counter[reason] = counter.get(reason, 0) + 1
