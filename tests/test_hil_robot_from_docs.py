"""docs/hil.md's protocol is enough to write a robot from it alone: ROBOT below is such a robot
(standard library and numpy only, no metarobot; its names come from the export's metadata,
as a robot engineer would take them), run as its own process; `metarobot hil`'s runner
drives it with a shared key through two episodes, and what it reports is what the robot
did."""

import json
import subprocess
import sys

import pytest

from metarobot.deploy.controller import Controller
from metarobot.deploy.export import export
from metarobot.deploy.runner import run
from metarobot.deploy.udp import UdpRobot

from test_deploy import CHEETAH, TOLERANT, check_accounting

ROBOT = r'''
import hashlib, hmac, json, os, select, socket, struct, sys, time, zlib
import numpy as np

meta = json.load(open(sys.argv[1]))
key = open(sys.argv[2], "rb").read().strip()
HEADER = struct.Struct("<4sHHHHQIIQI")     # 40 bytes
PERIOD, TIMEOUT, HORIZON = meta["control_period"], 0.5, 30
OBS_DIM, ACT_DIM = meta["obs_dim"], meta["act_dim"]
kh = hmac.new(key, b"metarobot-v2 handshake", hashlib.sha256).digest()

def mac_of(k, signed):
    return hmac.new(k, signed, hashlib.sha256).digest()[:16]

def packet(kind, session, episode, seq, payload, k):
    head = HEADER.pack(b"MRBT", 2, kind, 1, 0, session, episode, seq,
                       time.monotonic_ns(), len(payload))
    body = head + payload
    body += hmac.new(k, body, hashlib.sha256).digest()[:16]
    return body + struct.pack("<I", zlib.crc32(body))

def parse(data):
    if len(data) < 44 or data[:4] != b"MRBT":
        return None
    _, version, kind, flags, _, session, episode, seq, _, length = HEADER.unpack_from(data)
    if version != 2 or flags != 1 or len(data) != 40 + length + 16 + 4:
        return None
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        return None
    return kind, session, episode, seq, data[40:40 + length], data[:40 + length], \
        data[40 + length:40 + length + 16]

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
session = None   # dict: id, peer, key, highest, out, ended, last
episode, step, ret, running, safe = 0, 0, 0.0, False, True
controls, last_command, obs = np.zeros(ACT_DIM), 0.0, np.zeros(OBS_DIM, np.float32)
next_tick = time.monotonic() + PERIOD

def send(kind, payload):
    session["out"] += 1
    sock.sendto(packet(kind, session["id"], episode, session["out"], payload, session["key"]),
                session["peer"])

def send_obs(reward, done):
    flags = struct.pack("<I4Bdd", step, done, 0, 1, safe, reward, ret)
    send(4, flags + obs.astype("<f4").tobytes())

while True:
    now = time.monotonic()
    ready, _, _ = select.select([sock], [], [], max(0.0, next_tick - now))
    now = time.monotonic()
    if ready:
        data, sender = sock.recvfrom(65536)
        p = parse(data)
        if p is None:
            continue
        kind, sid, ep, seq, payload, signed, mac = p
        if sid == 0:
            if kind != 1 or not hmac.compare_digest(mac, mac_of(kh, signed)):
                continue
            alive = (session and not session["ended"] and session["est"]
                     and now - session["last"] < TIMEOUT)
            if alive:
                busy = b"busy: another controller holds this robot"
                sock.sendto(packet(8, 0, 0, 0, busy, kh), sender)
                continue
            nonce_c, nonce_r = payload, os.urandom(16)
            new_id = int.from_bytes(os.urandom(8), "little") | 1
            ks = hmac.new(key, b"metarobot-v2 session" + struct.pack("<Q", new_id) + nonce_c
                          + nonce_r, hashlib.sha256).digest()
            session = dict(id=new_id, peer=sender, key=ks, highest=0, out=0, ended=False,
                           est=False, last=now)
            names = json.dumps({"family": meta["family"],
                                "observation": meta["observation_names"],
                                "action": [a["name"] for a in meta["actions"]]}).encode()
            spec = struct.pack("<Q16s16sIIdd", new_id, nonce_c, nonce_r, OBS_DIM, ACT_DIM,
                               PERIOD, TIMEOUT) + names
            sock.sendto(packet(2, 0, 0, 0, spec, kh), sender)
            episode, running, safe = 0, False, True
            continue
        if session is None or sid != session["id"]:
            continue
        if not hmac.compare_digest(mac, mac_of(session["key"], signed)):
            continue
        if not session["highest"] < seq <= session["highest"] + 65536:
            continue
        session.update(highest=seq, peer=sender, est=True, last=now)
        if kind == 3 and ep > episode:          # RESET of a new episode
            episode, step, ret, running, safe = ep, 0, 0.0, True, False
            obs = np.zeros(OBS_DIM, np.float32)
            controls, last_command = np.zeros(ACT_DIM), now
            send_obs(0.0, 0)
            next_tick = now + PERIOD
        elif kind == 3 and ep == episode and step == 0:
            send_obs(0.0, 0)
        elif kind == 5 and ep == episode and running and not safe:
            controls = np.frombuffer(payload, "<f4", ACT_DIM, 4).astype(np.float64)
            last_command = now
        elif kind == 6:
            running, safe = False, True
            session["ended"] = True
            send(7, b"")
        continue
    next_tick += PERIOD
    if not running:
        continue
    if now - last_command > TIMEOUT:
        safe, controls = True, np.zeros(ACT_DIM)
    step += 1
    reward = -0.1 * float(np.sum(controls ** 2))
    ret += reward
    obs = (0.01 * np.sin(step + np.arange(OBS_DIM))).astype(np.float32)
    done = step >= HORIZON
    send_obs(reward, int(done))
    if done:
        running = False
        print(json.dumps({"episode": episode, "steps": step, "return": ret}), flush=True)
'''


@pytest.mark.slow  # a subprocess
def test_a_robot_written_from_the_docs_alone_runs_with_a_key(tmp_path):
    assert "import metarobot" not in ROBOT and "from metarobot" not in ROBOT
    meta = export(CHEETAH, "onnx", tmp_path / "cheetah.onnx")
    (tmp_path / "robot.py").write_text(ROBOT)
    (tmp_path / "robot.key").write_bytes(b"a key of at least sixteen bytes\n")
    robot = subprocess.Popen([sys.executable, str(tmp_path / "robot.py"),
                              str(tmp_path / "cheetah.onnx.json"), str(tmp_path / "robot.key")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(robot.stdout.readline())
        link = UdpRobot("127.0.0.1", port, key=b"a key of at least sixteen bytes")
        try:
            assert link.spec().family == meta["family"] == "HalfCheetahVel"
            report = run(Controller.from_checkpoint(CHEETAH), link, episodes=2, limits=TOLERANT)
        finally:
            link.close()
        assert report["stopped"] == "completed", report["detail"]
        assert report["robot_acknowledged_stop"] and report["agreement"]["differences"] == []
        check_accounting(report, 30)
        robot_side = [json.loads(robot.stdout.readline()) for _ in range(2)]
        runner_side = report["stages"][0]["episodes"]
        assert [r["return"] for r in robot_side] == \
            [pytest.approx(e["return"], rel=1e-9) for e in runner_side]
        assert all(r["return"] < 0 for r in robot_side)  # the policy's controls did arrive
    finally:
        robot.kill()  # its own process id
        robot.wait(timeout=10)
        robot.stdout.close()
        robot.stderr.close()
