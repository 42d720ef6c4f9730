"""The robot wire protocol (docs/hil.md, byte by byte): UDP datagrams of a fixed little-endian
layout, a version, sequence numbers, monotonic timestamps and a CRC-32; and UdpRobot, the
runner's side of it.

    packet = header (24 bytes) + payload + crc32 (4 bytes, of header and payload)
    header = magic b"MRBT" | version u16 | type u16 | seq u32 | stamp_ns u64 | length u32

Runner -> robot: HELLO (spec please), RESET (episode id u32), ACTION (step u32, controls
f32 x act_dim), STOP (into the safe state). Robot -> runner: SPEC (obs_dim u32, act_dim u32,
control period f64, names as UTF-8 JSON), OBS (step u32, flags u8 x 4, reward f64, obs f32 x
obs_dim), ACK (of STOP), ERROR (a UTF-8 message: a packet the robot rejected).
"""

from __future__ import annotations

import dataclasses
import json
import math
import select
import socket
import struct
import time
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from .robot import Reading, RobotSpec

MAGIC = b"MRBT"
VERSION = 1
HEADER = struct.Struct("<4sHHIQI")  # magic, version, type, seq, stamp_ns, payload length
CRC = struct.Struct("<I")
HELLO, SPEC, RESET, OBS, ACTION, STOP, ACK, ERROR = range(1, 9)
TYPE_NAMES = {HELLO: "HELLO", SPEC: "SPEC", RESET: "RESET", OBS: "OBS", ACTION: "ACTION",
              STOP: "STOP", ACK: "ACK", ERROR: "ERROR"}
OBS_HEAD = struct.Struct("<I4Bd")      # step, flags (done, terminated, has_reward, 0), reward
SPEC_HEAD = struct.Struct("<IId")      # obs_dim, act_dim, control period (s)
MAX_PACKET = 65_000


class ProtocolError(ValueError):
    """A datagram that is not a valid packet of this protocol (what is wrong, in words)."""


@dataclasses.dataclass(frozen=True)
class Packet:
    kind: int
    seq: int
    stamp: float      # seconds, the sender's monotonic clock
    payload: bytes


def encode(kind: int, seq: int, payload: bytes = b"", stamp: Optional[float] = None) -> bytes:
    """A packet of kind with payload, stamped now (time.monotonic) unless stamp is given."""
    stamp = time.monotonic() if stamp is None else stamp
    head = HEADER.pack(MAGIC, VERSION, kind, seq & 0xFFFFFFFF, int(stamp * 1e9), len(payload))
    body = head + payload
    return body + CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def decode(data: bytes) -> Packet:
    """The packet in a datagram; ProtocolError saying what is wrong otherwise."""
    if len(data) < HEADER.size + CRC.size:
        raise ProtocolError(f"packet of {len(data)} bytes is shorter than a header and a "
                            f"checksum ({HEADER.size + CRC.size})")
    magic, version, kind, seq, stamp_ns, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this side speaks {VERSION}")
    if HEADER.size + length + CRC.size != len(data):
        raise ProtocolError(f"payload length {length} does not match the packet's "
                            f"{len(data) - HEADER.size - CRC.size} bytes")
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if zlib.crc32(data[:-CRC.size]) & 0xFFFFFFFF != crc:
        raise ProtocolError("checksum mismatch (a corrupted packet)")
    if kind not in TYPE_NAMES:
        raise ProtocolError(f"unknown packet type {kind}")
    return Packet(kind, seq, stamp_ns * 1e-9, bytes(data[HEADER.size:HEADER.size + length]))


def spec_payload(spec: RobotSpec) -> bytes:
    names = json.dumps({"observation": list(spec.observation_names),
                        "action": list(spec.action_names)}).encode()
    return SPEC_HEAD.pack(spec.obs_dim, spec.act_dim, spec.control_period) + names


def parse_spec(payload: bytes) -> RobotSpec:
    if len(payload) < SPEC_HEAD.size:
        raise ProtocolError(f"SPEC payload of {len(payload)} bytes, at least {SPEC_HEAD.size}")
    obs_dim, act_dim, period = SPEC_HEAD.unpack_from(payload)
    try:
        names = json.loads(payload[SPEC_HEAD.size:].decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"SPEC names are not UTF-8 JSON: {exc}") from None
    try:
        return RobotSpec(obs_dim, act_dim, period, tuple(names.get("observation", ())),
                         tuple(names.get("action", ())))
    except ValueError as exc:
        raise ProtocolError(f"SPEC: {exc}") from None


def obs_payload(step: int, obs: np.ndarray, reward: float = math.nan, done: bool = False,
                terminated: bool = False) -> bytes:
    has_reward = not math.isnan(reward)
    head = OBS_HEAD.pack(step, int(done), int(terminated), int(has_reward), 0,
                         reward if has_reward else 0.0)
    return head + np.asarray(obs, "<f4").tobytes()


def parse_obs(payload: bytes, obs_dim: int) -> Tuple[int, np.ndarray, float, bool, bool]:
    """(step, obs, reward (NaN if none), done, terminated)."""
    want = OBS_HEAD.size + 4 * obs_dim
    if len(payload) != want:
        raise ProtocolError(f"OBS payload of {len(payload)} bytes, expected {want} for "
                            f"{obs_dim} observations")
    step, done, terminated, has_reward, _, reward = OBS_HEAD.unpack_from(payload)
    obs = np.frombuffer(payload, "<f4", obs_dim, OBS_HEAD.size).astype(np.float32)
    return step, obs, (reward if has_reward else math.nan), bool(done), bool(terminated)


def action_payload(step: int, controls: np.ndarray) -> bytes:
    return struct.pack("<I", step) + np.asarray(controls, "<f4").tobytes()


def parse_action(payload: bytes, act_dim: int) -> Tuple[int, np.ndarray]:
    want = 4 + 4 * act_dim
    if len(payload) != want:
        raise ProtocolError(f"ACTION payload of {len(payload)} bytes, expected {want} for "
                            f"{act_dim} controls")
    (step,) = struct.unpack_from("<I", payload)
    return step, np.frombuffer(payload, "<f4", act_dim, 4).astype(np.float64)


def parse_address(url: str) -> Tuple[str, int]:
    """'udp://HOST:PORT' (or 'HOST:PORT') -> (host, port)."""
    text = url[len("udp://"):] if url.startswith("udp://") else url
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"robot address should be udp://HOST:PORT, got {url!r}")
    return host, int(port)


class UdpRobot:
    """The runner's side of the wire protocol: a Robot over UDP.

    Counts what it rejects (packets that fail to decode, wrong types, stale sequence numbers)
    in `rejected` (reason -> count) and keeps the last reason in `last_error`; the ERROR
    packets a robot sends back are kept in `robot_errors`."""

    def __init__(self, host: str, port: int, timeout: float = 2.0):
        self.address = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.connect(self.address)
        self.sock.setblocking(False)
        self.seq = 0
        self.episode = 0
        self.rejected: Dict[str, int] = {}
        self.last_error = ""
        self.robot_errors: List[str] = []
        self._last_step = -1
        self._spec = self._hello(timeout)

    @classmethod
    def from_url(cls, url: str, timeout: float = 2.0) -> "UdpRobot":
        host, port = parse_address(url)
        return cls(host, port, timeout)

    def _send(self, kind: int, payload: bytes = b"") -> None:
        self.seq += 1
        try:
            self.sock.send(encode(kind, self.seq, payload))
        except (ConnectionRefusedError, OSError):
            pass  # nobody listens (yet, or any more): the watchdog notices the silence

    def _reject(self, reason: str) -> None:
        key = reason.split(":")[0] if ":" in reason else reason
        self.rejected[key] = self.rejected.get(key, 0) + 1
        self.last_error = reason

    def _receive(self) -> Optional[Tuple[Packet, float]]:
        """The next valid packet waiting and when it was read, or None."""
        while True:
            try:
                data = self.sock.recv(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionRefusedError:  # an ICMP for an earlier send: the robot is gone
                continue
            received = time.monotonic()
            try:
                packet = decode(data)
            except ProtocolError as exc:
                self._reject(f"malformed: {exc}")
                continue
            if packet.kind == ERROR:
                self.robot_errors.append(packet.payload.decode(errors="replace"))
                continue
            return packet, received

    def _wait(self, kinds: Tuple[int, ...], timeout: float, resend=None
              ) -> Optional[Tuple[Packet, float]]:
        """The next packet of one of kinds within timeout; resend() every 0.1 s meanwhile."""
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            got = self._receive()
            if got is not None:
                if got[0].kind in kinds:
                    return got
                continue
            now = time.monotonic()
            if resend is not None and now >= next_resend:
                resend()
                next_resend = now + 0.1
            time.sleep(0.0005)
        return None

    def _hello(self, timeout: float) -> RobotSpec:
        self._send(HELLO)
        got = self._wait((SPEC,), timeout, resend=lambda: self._send(HELLO))
        if got is None:
            detail = f" (its last error: {self.robot_errors[-1]})" if self.robot_errors else ""
            raise ValueError(f"no robot answered at udp://{self.address[0]}:{self.address[1]} "
                             f"within {timeout:g} s{detail}")
        return parse_spec(got[0].payload)

    def spec(self) -> RobotSpec:
        return self._spec

    def reset(self, timeout: float = 2.0) -> Reading:
        self.episode += 1
        payload = struct.pack("<I", self.episode)
        self._send(RESET, payload)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self._wait((OBS,), deadline - time.monotonic(),
                             resend=lambda: self._send(RESET, payload))
            if got is None:
                break
            reading = self._reading(*got)
            if reading is not None and reading.step == 0:
                self._last_step = 0
                return reading
        raise TimeoutError(f"the robot sent no first observation within {timeout:g} s of a "
                           f"reset")

    def _reading(self, packet: Packet, received: float) -> Optional[Reading]:
        try:
            step, obs, reward, done, terminated = parse_obs(packet.payload, self._spec.obs_dim)
        except ProtocolError as exc:
            self._reject(f"malformed: {exc}")
            return None
        return Reading(obs, step, packet.stamp, received, reward, done, terminated)

    def read(self, timeout: float = 0.0) -> Optional[Reading]:
        newest = None
        deadline = time.monotonic() + timeout
        while True:
            got = self._receive()
            if got is None:
                left = deadline - time.monotonic()
                if newest is not None or left <= 0:
                    return newest
                if left > 0.002:
                    select.select([self.sock], [], [], left - 0.002)
                # the last 2 ms: poll rather than sleep, so that the CPU is awake (and its
                # caches warm) when the observation comes: waking a sleeping core and a
                # cold policy evaluation cost hundreds of microseconds
                continue
            if got[0].kind != OBS:
                self._reject(f"unexpected: a {TYPE_NAMES[got[0].kind]} packet while running")
                continue
            reading = self._reading(*got)
            if reading is None:
                continue
            if reading.step <= self._last_step:  # a repeat or a reordered older one
                continue
            self._last_step = reading.step
            newest = reading

    def send(self, step: int, controls: np.ndarray) -> None:
        self._send(ACTION, action_payload(step, controls))

    def stop(self, timeout: float = 0.5) -> bool:
        """STOP until the robot acknowledges (resent every 0.1 s) or timeout; whether it did."""
        self._send(STOP)
        return self._wait((ACK,), timeout, resend=lambda: self._send(STOP)) is not None

    def close(self) -> None:
        self.sock.close()

