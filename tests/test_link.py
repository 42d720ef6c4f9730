"""The robot link fails safe and obeys only its controller (protocol version 2), over loopback:
forged packets from other sockets, replays of old packets (within a session and across
sessions, with the real peer's source address), a second controller, a second run, garbage,
a killed runner (the robot's command timeout), signals to the runner, mismatched keys; and
fuzzing of the packet decoder. Robots run in this process (a SimRobot in a thread, to read
what it did) or as `metarobot sim-robot` processes started here on port 0 and ended by their
own process ids."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metarobot.deploy import protocol as P
from metarobot.deploy.controller import Controller
from metarobot.deploy.robot import RobotSpec
from metarobot.deploy.runner import run
from metarobot.deploy.sim_robot import SimRobot
from metarobot.deploy.udp import RobotBusy, UdpRobot

from test_deploy import CHEETAH, HIL_TOLERANT, TOLERANT, Server, check_accounting

KEY = b"0123456789abcdef0123456789abcdef"


class Robot:
    """A SimRobot of HalfCheetahVel served by a thread of this process on a free loopback
    port; every applied control is traced."""

    def __init__(self, key=None, horizon=40, command_timeout=1.0):
        self.sim = SimRobot("HalfCheetahVel", {"goal_velocity": 1.5}, port=0, key=key,
                            overrides={"horizon": horizon}, command_timeout=command_timeout,
                            verbose=False)
        self.sim.trace = []
        self.port = self.sim.port
        self.thread = threading.Thread(target=self.sim.serve, args=(300,), daemon=True)
        self.thread.start()

    def close(self):
        self.sim.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def robot(request):
    """A Robot; its key from the test's parameter. Episodes of 100 steps (1 s): long enough
    for a prober's packets to land inside a run on a loaded machine."""
    r = Robot(key=getattr(request, "param", None), horizon=100)
    try:
        yield r
    finally:
        r.close()


def controller():
    return Controller.from_checkpoint(CHEETAH)


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        time.sleep(0.002)


def returns_agree(report, sim, session):
    """The runner reports what the robot did: per episode of the session, the robot's own
    step count and return."""
    robot_side = [f for f in sim.finished if f["session"] == session]
    runner_side = [e for st in report["stages"] for e in st["episodes"]]
    assert [(f["steps"], f["return"]) for f in robot_side] == \
        [(e["steps"], pytest.approx(e["return"], rel=1e-6)) for e in runner_side]
    assert not any(f["safe"] for f in robot_side)


# ------------------------------------------------------------------ forged packets, garbage

@pytest.mark.parametrize("robot", [None, KEY], indirect=True, ids=["no key", "key"])
def test_packets_from_another_socket_change_nothing(robot):
    """A stranger who knows the session id (worst case: it saw the traffic) sends ACTION
    (a distinctive control), RESET, STOP, HELLO and garbage to the robot, and a forged OBS
    to the runner, from its own socket, all through a run: none of it acts, the run
    completes with the robot's own returns, and the robot refused each by reason."""
    key = robot.sim.key
    link = UdpRobot("127.0.0.1", robot.port, key=key)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.settimeout(0.01)
    runner_port = link.sock.getsockname()[1]
    stop = threading.Event()
    replies = []
    forged_controls = np.full(6, 0.777)

    def forge():
        wait_for(lambda: robot.sim.session is not None and robot.sim.session.established)
        sid = robot.sim.session.id
        seq = 10_000
        while not stop.is_set():
            seq += 1
            episode = robot.sim._episode_id
            for kind, payload, ep in ((P.ACTION, P.action_payload(3, forged_controls), episode),
                                      (P.RESET, b"", episode + 1), (P.STOP, b"", episode)):
                stranger.sendto(P.encode(kind, session=sid, episode=ep, seq=seq,
                                         payload=payload, key=P.handshake_key(KEY)),
                                ("127.0.0.1", robot.port))
            stranger.sendto(P.encode(P.HELLO, payload=P.hello_payload(P.new_nonce()),
                                     key=P.handshake_key(key) if key else None),
                            ("127.0.0.1", robot.port))
            stranger.sendto(os.urandom(50), ("127.0.0.1", robot.port))
            obs = P.Observation(5, np.full(20, 9.0, np.float32), 1e6, 1e6, True)
            stranger.sendto(P.encode(P.OBS, session=sid, episode=episode, seq=seq,
                                     payload=P.obs_payload(obs)), ("127.0.0.1", runner_port))
            try:
                replies.append(P.decode(stranger.recvfrom(P.MAX_PACKET)[0]))
            except (socket.timeout, P.ProtocolError):
                pass
            time.sleep(0.005)
    thread = threading.Thread(target=forge, daemon=True)
    thread.start()
    try:
        report = run(controller(), link, episodes=2, limits=TOLERANT)
    finally:
        stop.set()
        thread.join(timeout=10)
        link.close()
        stranger.close()
    assert report["stopped"] == "completed", report["detail"]
    check_accounting(report, 100)
    returns_agree(report, robot.sim, link.session)
    # (once the run's STOP ended its session, the stranger's HELLOs may open new ones)
    assert robot.sim.counts["episodes"] == 2
    assert {f["session"] for f in robot.sim.finished} == {link.session}
    assert not any(np.allclose(c, forged_controls) for _, _, c, _ in robot.sim.trace)
    rejected = robot.sim.rejected
    assert rejected["busy"] > 0 and rejected["malformed"] > 0
    assert rejected["bad MAC" if key else "not the session's peer"] > 0
    assert any(p.kind == P.ERROR and p.payload.startswith(b"busy") for p in replies)
    # the runner dropped the forged observations
    assert report["rejected_packets"]["bad MAC" if key else "not the robot"] > 0


class Relay:
    """A man in the middle on loopback: the runner talks to it as to the robot; it forwards
    both ways, keeps every datagram, and sends any of them again from the real peer's
    address (a replay with a forged source)."""

    def __init__(self, robot_port):
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.robot = ("127.0.0.1", robot_port)
        self.runner = None
        self.to_robot, self.to_runner = [], []
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import select
        while not self.closing:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            for sock in ready:
                data, sender = sock.recvfrom(P.MAX_PACKET)
                # kept decoded (once, here), so that picking packets to replay is cheap
                if sock is self.front:
                    self.runner = sender
                    self.back.sendto(data, self.robot)
                    self.to_robot.append((data, P.decode(data)))
                elif self.runner is not None:
                    self.front.sendto(data, self.runner)
                    self.to_runner.append((data, P.decode(data)))

    def replay_to_robot(self, data):
        self.back.sendto(data, self.robot)

    def replay_to_runner(self, data):
        self.front.sendto(data, self.runner)

    def close(self):
        self.closing = True
        self.thread.join(timeout=5)
        self.front.close()
        self.back.close()


def packets(records, kind, **fields):
    """The datagrams of (datagram, packet) records of kind whose fields have the values."""
    return [data for data, p in records
            if p.kind == kind and all(getattr(p, k) == v for k, v in fields.items())]


@pytest.mark.parametrize("robot", [None, KEY], indirect=True, ids=["no key", "key"])
def test_replayed_packets_change_nothing(robot):
    """Two runs through a relay that records everything; during the second run's second
    episode (of three), the relay replays from the real peer's address: the first run's
    HELLO, ACTION and OBS (another session), the second run's episode-1 RESET, ACTIONs and OBS
    (old sequence numbers) and its newest ACTION (repeated). The run completes with the
    robot's own returns; each replay is dropped and counted by its kind."""
    key = robot.sim.key
    relay = Relay(robot.port)
    try:
        link = UdpRobot("127.0.0.1", relay.port, key=key)
        try:
            first = run(controller(), link, episodes=1, limits=TOLERANT)
        finally:
            link.close()
        assert first["stopped"] == "completed", first["detail"]
        old_session = list(relay.to_robot), list(relay.to_runner)
        old_hello = packets(old_session[0], P.HELLO)[0]
        link = UdpRobot("127.0.0.1", relay.port, key=key)
        session = link.session
        done, fired = threading.Event(), threading.Event()
        old_actions = packets(old_session[0], P.ACTION)[5:10]
        old_obs = packets(old_session[1], P.OBS)[5:10]

        def replay():
            wait_for(lambda: robot.sim._episode_id == 2 and robot.sim.step_index > 10
                     or done.is_set())
            if done.is_set():
                return
            now_robot, now_runner = list(relay.to_robot), list(relay.to_runner)
            mine = dict(session=session)
            shots = ([(relay.replay_to_robot, d) for d in
                      [old_hello] + old_actions
                      + packets(now_robot, P.RESET, episode=1, **mine)
                      + packets(now_robot, P.ACTION, episode=1, **mine)[-10:]
                      + packets(now_robot, P.ACTION, episode=2, **mine)[-1:]]
                     + [(relay.replay_to_runner, d) for d in
                        old_obs + packets(now_runner, P.OBS, episode=1, **mine)[-10:]])
            for send, data in shots:
                send(data)
            if robot.sim._episode_id == 2:
                fired.set()  # within the run, with an episode to spare
        thread = threading.Thread(target=replay, daemon=True)
        thread.start()
        try:
            second = run(controller(), link, episodes=3, limits=TOLERANT)
        finally:
            done.set()
            thread.join(timeout=20)
            link.close()
    finally:
        relay.close()
    assert second["stopped"] == "completed", second["detail"]
    assert fired.is_set(), "the replays came too late (a very loaded machine?)"
    check_accounting(second, 100)
    returns_agree(second, robot.sim, session)
    assert robot.sim.counts["episodes"] == 4 and robot.sim.counts["sessions"] == 2
    r = robot.sim.rejected
    # the newest ACTION replayed is "repeated", or "old" when a newer one came first
    assert r["busy"] >= 1 and r["unknown session"] >= 5, r
    assert r["old"] + r.get("repeated", 0) >= 12, r
    runner = second["rejected_packets"]
    assert runner["other session"] >= 5 and runner["old"] >= 10, runner


# ------------------------------------------------------------- second runs, second runners

def test_two_runs_in_a_row_both_complete_and_a_second_runner_is_refused(robot):
    """Episode ids are per session, so the second run never collides with the first; while
    one controller holds the robot, another gets a clear refusal; once it ended, the next
    one gets the robot."""
    for _ in range(2):
        link = UdpRobot("127.0.0.1", robot.port)
        try:
            report = run(controller(), link, episodes=1, limits=TOLERANT)
        finally:
            link.close()
        assert report["stopped"] == "completed", report["detail"]
        returns_agree(report, robot.sim, link.session)
    first = UdpRobot("127.0.0.1", robot.port)
    result = {}
    thread = threading.Thread(target=lambda: result.update(run(controller(), first,
                                                               episodes=3, limits=TOLERANT)))
    thread.start()
    try:
        wait_for(lambda: robot.sim.session.established and robot.sim.step_index > 5)
        with pytest.raises(RobotBusy, match="is busy: another controller holds it"):
            UdpRobot("127.0.0.1", robot.port)
    finally:
        thread.join(timeout=60)
        first.close()
    assert result["stopped"] == "completed", result["detail"]
    check_accounting(result, 100)
    again = UdpRobot("127.0.0.1", robot.port)  # the first ended its session with STOP
    again.close()


@pytest.mark.parametrize("robot", [KEY], indirect=True)
def test_a_wrong_or_missing_key_is_named(robot, tmp_path):
    with pytest.raises(ValueError, match=r"no robot answered .* wrong MAC"):
        UdpRobot("127.0.0.1", robot.port, timeout=0.5, key=b"another key of 32 bytes........")
    with pytest.raises(ValueError, match=r"no robot answered .* requires one"):
        UdpRobot("127.0.0.1", robot.port, timeout=0.5)
    assert robot.sim.session is None and robot.sim.counts["episodes"] == 0


@pytest.mark.slow  # subprocesses
def test_a_robot_with_a_key_refuses_a_controller_without_one(tmp_path):
    (tmp_path / "robot.key").write_bytes(KEY + b"\n")
    (tmp_path / "robot.key").chmod(0o600)
    server = Server("--key-file", str(tmp_path / "robot.key"))
    try:
        link = UdpRobot("127.0.0.1", server.port, key=P.read_key_file(tmp_path / "robot.key"))
        try:
            report = run(controller(), link, episodes=1, limits=TOLERANT)
        finally:
            link.close()
        assert report["stopped"] == "completed"
        out = subprocess.run([sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot",
                              server.url, "--connect-timeout", "0.5"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and "requires one (--key-file)" in out.stderr
    finally:
        server.close()


# -------------------------------------------------------------- a killed or signalled runner

def hil(url, report, *args):
    return subprocess.Popen([sys.executable, "-m", "metarobot.cli", "hil", CHEETAH, "--robot",
                             url, "--report", str(report), *HIL_TOLERANT, *args],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def robot_events(server, until, timeout=60.0):
    """Lines of the robot's log up to the first with `until` (its stdout, read here)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = server.proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if until in line:
            return lines
    raise AssertionError(f"the robot never logged {until!r}: {lines}")


def event_time(line):
    return float(line.split()[0][2:])  # "t=SECONDS ..." on the shared monotonic clock


@pytest.mark.slow  # subprocesses
def test_a_killed_runner_leaves_the_robot_in_its_safe_state_within_its_timeout(tmp_path):
    server = Server(horizon=100000, command_timeout_ms=100)
    runner = hil(server.url, tmp_path / "r")
    try:
        robot_events(server, "established", timeout=180)
        # a loaded machine may take tens of seconds to start a Python with torch
        wait_for(lambda: (tmp_path / "r" / "cycles.csv").exists()
                 and (tmp_path / "r" / "cycles.csv").stat().st_size > 20_000, timeout=180)
        killed = time.monotonic()
        runner.kill()  # SIGKILL to its own process id: no STOP, nothing written after
        runner.wait(timeout=10)
        line = robot_events(server, "safe state")[-1]
        assert "no command for" in line and "command timeout 100 ms" in line
        # the robot's own clock: within its timeout of the runner's last command (before
        # the kill), plus a control period and a loaded machine's wake-up
        assert event_time(line) - killed < 0.1 + 0.2
        # the robot is free again once the dead session's lease ran out
        time.sleep(0.15)
        link = UdpRobot("127.0.0.1", server.port)
        link.close()
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=10)
        runner.stdout.close()
        runner.stderr.close()
        server.close()


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_ends_the_run_with_stop_and_a_report(tmp_path, signame):
    server = Server(horizon=100000)
    runner = hil(server.url, tmp_path / "r")
    try:
        # a loaded machine may take tens of seconds to start a Python with torch
        wait_for(lambda: (tmp_path / "r" / "cycles.csv").exists()
                 and (tmp_path / "r" / "cycles.csv").stat().st_size > 20_000, timeout=180)
        runner.send_signal(getattr(signal, signame))
        out, err = runner.communicate(timeout=120)
        assert runner.returncode == 1, err
        assert f"stopped: interrupted ({signame})" in out
        report = json.loads((tmp_path / "r" / "report.json").read_text())
        assert report["stopped"] == "interrupted" and report["detail"] == signame
        assert report["robot_acknowledged_stop"] and report["signals"] == [signame]
        assert report["stages"][0]["interrupted_returns"] and not report["stages"][0]["returns"]
        line = robot_events(server, "safe state")[-1]
        assert "STOP from the controller" in line
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=10)
        server.close()


# ----------------------------------------------------------------------------- fuzzing

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_the_decoder_raises_only_its_own_error_on_any_bytes(data):
    try:
        packet = P.decode(data)
    except P.ProtocolError:
        return
    for parse in (lambda b: P.parse_obs(b, 3), lambda b: P.parse_action(b, 2), P.parse_spec,
                  P.parse_hello):
        try:
            parse(packet.payload)
        except P.ProtocolError:
            pass


VALID = [P.encode(P.OBS, session=7, episode=1, seq=3,
                  payload=P.obs_payload(P.Observation(2, np.ones(3, np.float32), 1.0, 2.0))),
         P.encode(P.SPEC, payload=P.spec_payload(
             RobotSpec(3, 2, 0.01, ("a", "b", "c"), ("u", "v"), "F", 0.05), 9, b"n" * 16,
             b"m" * 16), key=P.handshake_key(KEY)),
         P.encode(P.ACTION, session=7, episode=1, seq=4, payload=P.action_payload(1, np.ones(2)),
                  key=KEY)]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                        max_size=4), st.integers(0, 400))
def test_corrupted_valid_packets_raise_only_the_protocols_error(good, flips, cut):
    data = bytearray(good)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    data = bytes(data[:cut]) if cut < len(data) else bytes(data)
    try:
        packet = P.decode(data)
    except P.ProtocolError:
        return
    P.authentic(packet, KEY)
    for parse in (lambda b: P.parse_obs(b, 3), lambda b: P.parse_action(b, 2), P.parse_spec):
        try:
            parse(packet.payload)
        except P.ProtocolError:
            pass


@pytest.fixture(scope="module")
def idle_robot():
    sim = SimRobot("HalfCheetahVel", {"goal_velocity": 1.0}, port=0, key=KEY, verbose=False)
    yield sim
    sim.sock.close()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=120),
                      st.sampled_from(VALID).map(lambda b: b[:-4] + os.urandom(4))))
def test_the_robot_survives_any_datagram(idle_robot, data):
    idle_robot._handle(data, ("127.0.0.1", 9), time.monotonic())
    assert idle_robot.session is None  # nothing without a valid MAC opens a session


# ------------------------------------------------------------------------ the safe state

def test_the_damping_safe_state_opposes_each_joints_velocity():
    """A robot whose controller falls silent mid-episode: after its command timeout it
    applies -D x each actuated joint's velocity (clipped), says so in every observation, and
    obeys no late ACTION."""
    sim = SimRobot("HalfCheetahVel", {"goal_velocity": 1.5}, port=0, verbose=False,
                   command_timeout=0.3, safe_state="damping", damping=0.5,
                   overrides={"horizon": 1000})
    sim.trace = []
    thread = threading.Thread(target=sim.serve, args=(60,), daemon=True)
    thread.start()
    link = UdpRobot("127.0.0.1", sim.port)
    try:
        link.reset(2.0)
        # drive it (a command every 10 ms, well within its timeout), then fall silent
        driving = time.monotonic()
        while time.monotonic() - driving < 0.5 or (not any(not t[3] for t in sim.trace)
                                                   and time.monotonic() - driving < 10):
            link.send(0, np.full(6, 0.9))
            time.sleep(0.01)
        wait_for(lambda: sim.safe and len(sim.trace) > 0 and sim.trace[-1][3], timeout=5)
        link.send(999, np.full(6, 0.9))  # too late: the safe state holds
        wait_for(lambda: len([t for t in sim.trace if t[3]]) > 10, timeout=5)
        safe_reading = None
        deadline = time.monotonic() + 2
        while safe_reading is None and time.monotonic() < deadline:
            r = link.read(timeout=0.05)
            safe_reading = r if r is not None and r.safe else None
        assert safe_reading is not None
    finally:
        link.close()
        sim.shutdown()
        thread.join(timeout=10)
    driven = [c for _, _, c, safe in sim.trace if not safe]
    damped = [c for _, _, c, safe in sim.trace if safe]
    assert np.allclose(driven[-1], 0.9)
    assert not any(np.allclose(c, 0.9) for c in damped)
    assert max(np.abs(c).max() for c in damped) > 0  # it moves: damping, not zero torque
    assert sim.counts["timeouts"] == 1 and sim.rejected["in the safe state"] >= 1


def test_a_robot_that_answers_from_another_port_is_heard():
    """Many robot stacks listen on one socket and send from another: the runner takes the
    SPEC from any port of the robot's address and the session from where the SPEC came."""
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", 0))
    listen.settimeout(3.0)
    speak = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    speak.bind(("127.0.0.1", 0))
    spec = RobotSpec(3, 1, 0.01, command_timeout=0.5)

    def robot():
        data, peer = listen.recvfrom(P.MAX_PACKET)
        nonce = P.parse_hello(P.decode(data).payload)
        speak.sendto(P.encode(P.SPEC, payload=P.spec_payload(spec, 42, nonce, P.new_nonce())),
                     peer)
        while True:
            p = P.decode(listen.recvfrom(P.MAX_PACKET)[0])
            if p.kind == P.RESET:
                obs = P.Observation(0, np.zeros(3, np.float32), 0.0, 0.0)
                speak.sendto(P.encode(P.OBS, session=42, episode=p.episode, seq=1,
                                      payload=P.obs_payload(obs)), peer)
                return
    thread = threading.Thread(target=robot, daemon=True)
    thread.start()
    try:
        link = UdpRobot("127.0.0.1", listen.getsockname()[1])
        assert link.peer[1] == speak.getsockname()[1] and link.session == 42
        assert link.reset(2.0).step == 0
        link.close()
    finally:
        thread.join(timeout=5)
        listen.close()
        speak.close()


def test_the_link_runs_over_ipv6_loopback():
    sim = SimRobot("HalfCheetahVel", {"goal_velocity": 1.5}, port=0, host="::1",
                   overrides={"horizon": 20}, command_timeout=1.0, verbose=False)
    thread = threading.Thread(target=sim.serve, args=(60,), daemon=True)
    thread.start()
    try:
        link = UdpRobot.from_url(f"udp://[::1]:{sim.port}", key=None)
        try:
            report = run(controller(), link, episodes=1, limits=TOLERANT)
        finally:
            link.close()
    finally:
        sim.shutdown()
        thread.join(timeout=10)
    assert report["stopped"] == "completed", report["detail"]
    check_accounting(report, 20)


def test_both_sides_warn_without_a_key_off_loopback(capsys):
    from metarobot.deploy.sim_robot import RealityGap, main_args
    main_args("HalfCheetahVel", '{"goal_velocity": 1.0}', 0, "0.0.0.0", RealityGap(), 0,
              duration=0.01)
    assert "listens on 0.0.0.0 without a key: anyone who can reach" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no robot answered"):
        UdpRobot("192.0.2.1", 9870, timeout=0.2)  # TEST-NET-1: nobody there
    assert "no key for the robot at udp://192.0.2.1:9870" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no robot answered"):
        UdpRobot("127.0.0.1", 9, timeout=0.2)
    assert "warning" not in capsys.readouterr().err


def test_key_files_are_read_stripped_and_checked(tmp_path):
    path = tmp_path / "robot.key"
    path.write_bytes(b"  " + KEY + b"\n")
    path.chmod(0o644)
    assert P.read_key_file(path) == KEY
    assert "readable by other users (chmod 600" in P.key_file_warning(path)
    path.chmod(0o600)
    assert P.key_file_warning(path) is None
    with pytest.raises(ValueError, match="cannot read the key file"):
        P.read_key_file(tmp_path / "missing.key")
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="holds 5 bytes; a key needs at least 16"):
        P.read_key_file(path)
