"""The runner's side of the wire protocol (version 2): a Robot over UDP.

    robot = UdpRobot.from_url("udp://127.0.0.1:9870", key=read_key_file("robot.key"))
    spec = robot.spec(); first = robot.reset(2.0); robot.send(first.step, controls) ...

HELLO opens a session (the robot's SPEC must echo this side's nonce, so an old SPEC cannot
be replayed); every later packet carries the session id, the episode id and a sequence
number, and with a key a MAC under the session's key. What comes back is taken only from the
robot. Without a key: the SPEC from the robot's IP address, any port (many robot stacks
answer from another socket than the one they listen on), then the session's packets only
from the address and port the SPEC came from. With a key: from any address, since the MAC
alone says who sent it. A packet of another session, with a wrong MAC,
an old or repeated sequence number or of another episode changes nothing: it is counted in
`rejected` by reason.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import protocol as P
from .robot import Reading, RobotSpec


class RobotBusy(ValueError):
    """The robot serves another controller."""


class UdpRobot:
    """A Robot over UDP (docs/hil.md). key: the shared key (protocol.read_key_file), or
    None for a robot without one. timeout: seconds to wait for the robot's SPEC.

    rejected: reason -> count of what this side dropped; robot_errors: the robot's ERROR
    messages (those outside the session that carry no valid MAC are marked unverified)."""

    def __init__(self, host: str, port: int, timeout: float = 2.0,
                 key: Optional[bytes] = None):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ValueError(f"cannot resolve the robot's host {host!r}: {exc.strerror}") \
                from None
        af, _, _, _, address = infos[0]
        self.url = f"udp://{'[' + host + ']' if ':' in host else host}:{port}"
        self.address = address
        self.sock = socket.socket(af, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("::", 0) if af == socket.AF_INET6 else ("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.key = key
        self._handshake_key = P.handshake_key(key) if key is not None else None
        self.rejected: Dict[str, int] = {}
        self.robot_errors: List[str] = []
        self.last_error = ""
        self.session = 0
        self.episode = 0
        self._session_key: Optional[bytes] = None
        self._inbound = P.SeqWindow()
        self._seq = 0
        self._last_step = -1
        self.peer: Optional[Tuple] = None  # where the SPEC came from
        if key is None and not _loopback(address[0]):
            print(f"warning: no key for the robot at {self.url}: anyone who can reach it can "
                  f"drive it, and anyone on the way can forge its observations (--key-file)",
                  file=sys.stderr, flush=True)
        try:
            self._spec = self._hello(timeout)
        except BaseException:
            self.sock.close()
            raise

    @classmethod
    def from_url(cls, url: str, timeout: float = 2.0,
                 key: Optional[bytes] = None) -> "UdpRobot":
        host, port = P.parse_address(url)
        return cls(host, port, timeout, key)

    # ------------------------------------------------------------------------- the wire
    def _sendto(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.address)
        except OSError:
            pass  # nobody listens (yet, or any more): the watchdog notices the silence

    def _send(self, kind: int, payload: bytes = b"") -> None:
        """A packet of the session."""
        self._seq += 1
        self._sendto(P.encode(kind, session=self.session, episode=self.episode, seq=self._seq,
                              payload=payload, key=self._session_key))

    def _reject(self, reason: str, detail: str = "") -> None:
        P.count(self.rejected, reason)
        self.last_error = f"{reason}: {detail}" if detail else reason

    def _from_robot(self, sender: Tuple, session: int) -> bool:
        if self.key is not None:
            return True
        if session != 0 and self.peer is not None:
            return sender[:2] == self.peer[:2]
        return sender[0] == self.address[0]

    def _receive(self) -> Optional[Tuple[P.Packet, float]]:
        """The next packet of the session that passed every check, and when it was read;
        None when none is waiting. Session-0 packets (SPEC, ERROR) come back unchecked but
        for their MAC."""
        while True:
            try:
                data, sender = self.sock.recvfrom(P.MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionRefusedError:  # an ICMP for an earlier send: the robot is gone
                continue
            received = time.monotonic()
            try:
                packet = P.decode(data)
            except P.ProtocolError as exc:
                self._reject("malformed", str(exc))
                continue
            if not self._from_robot(sender, packet.session):
                self._reject("not the robot", f"a datagram from {sender[0]}:{sender[1]}")
                continue
            if packet.session == 0:
                why = P.authentic(packet, self._handshake_key)
                if packet.kind == P.ERROR:
                    text = packet.payload.decode(errors="replace")
                    self.robot_errors.append(text if why is None else f"(unverified) {text}")
                    if why is not None:
                        continue
                elif why is not None:
                    self._reject("bad MAC", why)
                    continue
                self._sender = sender
                return packet, received
            if packet.session != self.session or self.session == 0:
                self._reject("other session")
                continue
            why = P.authentic(packet, self._session_key)
            if why is not None:
                self._reject("bad MAC", why)
                continue
            why = self._inbound.accept(packet.seq)
            if why is not None:
                self._reject(why)
                continue
            if packet.kind == P.ERROR:
                self.robot_errors.append(packet.payload.decode(errors="replace"))
                continue
            return packet, received

    def _wait(self, accept: Callable[[P.Packet], bool], timeout: float,
              resend: Optional[Callable[[], None]] = None) -> Optional[Tuple[P.Packet, float]]:
        """The next packet accept() takes within timeout; resend() every 0.1 s meanwhile."""
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + 0.1
        while True:
            got = self._receive()
            if got is not None:
                if accept(got[0]):
                    return got
                continue
            now = time.monotonic()
            if now >= deadline:
                return None
            if resend is not None and now >= next_resend:
                resend()
                next_resend = now + 0.1
            select.select([self.sock], [], [], min(deadline - now, next_resend - now, 0.01))

    # ------------------------------------------------------------------------ the session
    def _hello(self, timeout: float) -> RobotSpec:
        nonce = P.new_nonce()
        hello = P.encode(P.HELLO, payload=P.hello_payload(nonce), key=self._handshake_key)
        busy: List[str] = []

        def spec_or_busy(packet: P.Packet) -> bool:
            if packet.kind == P.ERROR and self.robot_errors \
                    and self.robot_errors[-1].startswith("busy"):
                busy.append(self.robot_errors[-1])
                return True
            return packet.kind == P.SPEC

        deadline = time.monotonic() + timeout
        self._sendto(hello)
        while True:
            # one deadline for the whole handshake: a robot that keeps sending unusable
            # SPECs is "no robot" after timeout, not a loop without end
            left = max(deadline - time.monotonic(), 0.0)
            got = self._wait(spec_or_busy, left, resend=lambda: self._sendto(hello))
            if got is None:
                detail = (f" (its last error: {self.robot_errors[-1]})"
                          if self.robot_errors else "")
                raise ValueError(f"no robot answered at {self.url} within {timeout:g} s"
                                 f"{detail}")
            if busy:
                raise RobotBusy(f"the robot at {self.url} is busy: another controller holds "
                                f"it (it frees itself when that one ends, or after its "
                                f"command timeout)")
            try:
                spec, session, echo, robot_nonce = P.parse_spec(got[0].payload)
            except P.ProtocolError as exc:
                self._reject("malformed", str(exc))
                continue
            if echo != nonce:  # a SPEC for another HELLO (an old one, replayed)
                self._reject("stale SPEC")
                continue
            break
        if not spec.command_timeout < 60:
            raise ValueError(f"the robot at {self.url} declares a command timeout of "
                             f"{spec.command_timeout:g} s; a robot must stop on its own "
                             f"within seconds of losing its controller")
        self.session, self.peer = session, self._sender
        if self.key is not None:
            self._session_key = P.session_key(self.key, session, nonce, robot_nonce)
        return spec

    def spec(self) -> RobotSpec:
        return self._spec

    def _reading(self, packet: P.Packet, received: float) -> Optional[Reading]:
        if packet.kind != P.OBS:
            self._reject("unexpected", f"a {packet.name} packet while running")
            return None
        if packet.episode != self.episode:
            self._reject("other episode")
            return None
        try:
            o = P.parse_obs(packet.payload, self._spec.obs_dim)
        except P.ProtocolError as exc:
            self._reject("malformed", str(exc))
            return None
        return Reading(o.obs, o.step, packet.stamp, received, o.reward, o.done, o.terminated,
                       o.ret, o.safe)

    def reset(self, timeout: float = 2.0) -> Reading:
        """A new episode (ids increase within the session, so an old one never collides);
        its first observation."""
        self.episode += 1
        self._send(P.RESET)
        first: List[Reading] = []

        def step_zero(packet: P.Packet) -> bool:
            reading = self._reading(packet, time.monotonic())
            if reading is not None and reading.step == 0:
                first.append(reading)
                return True
            return False
        got = self._wait(step_zero, timeout, resend=lambda: self._send(P.RESET))
        if got is None:
            detail = f" (its last error: {self.robot_errors[-1]})" if self.robot_errors else ""
            raise TimeoutError(f"the robot sent no first observation within {timeout:g} s of "
                               f"a reset{detail}")
        self._last_step = 0
        return first[0]

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
            reading = self._reading(*got)
            if reading is None:
                continue
            if reading.step <= self._last_step:  # a repeat of an ended episode's last word
                continue
            self._last_step = reading.step
            newest = reading

    def send(self, step: int, controls: np.ndarray) -> None:
        self._send(P.ACTION, P.action_payload(step, controls))

    def stop(self, timeout: float = 1.0) -> bool:
        """STOP until the robot acknowledges (resent every 0.1 s) or timeout; whether it did.
        It also ends the session."""
        if self.session == 0:
            return False
        self._send(P.STOP)
        return self._wait(lambda p: p.kind == P.ACK, timeout,
                          resend=lambda: self._send(P.STOP)) is not None

    def close(self) -> None:
        self.sock.close()


def _loopback(address: str) -> bool:
    return address == "::1" or address.startswith("127.") or address == "::ffff:127.0.0.1"
