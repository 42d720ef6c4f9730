"""The fixed-rate loop over loopback: a simulated robot (`metarobot sim-robot`, its own process)
at 200 and 1000 Hz and the runner against it for 10,000 cycles each, without and with a
shared key (every packet authenticated by HMAC-SHA256): period jitter (|tick interval -
period|), read-to-send latency (observation received -> controls sent, the policy included),
deadline misses, stale cycles and observations missed; then what the MAC costs per packet.

    python benchmarks/hil_loop.py [--rates 200 1000] [--cycles 10000]

The robot runs the cheetah at the benchmark's rate, not the policy's 10 ms, so the runner is
told to allow that mismatch; its command timeout is 500 ms so that a stall of a shared
machine shows as deadline misses rather than ending the run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from metarobot.deploy import protocol as P
from metarobot.deploy.controller import Controller
from metarobot.deploy.runner import run
from metarobot.deploy.udp import UdpRobot

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = str(ROOT / "checkpoints" / "HalfCheetahVel.safetensors")


def loop(rate: float, cycles: int, key_file, checkpoint: str) -> str:
    command = [sys.executable, "-m", "metarobot.cli", "sim-robot", "HalfCheetahVel", "--task",
               '{"goal_velocity": 1.0}', "--port", "0", "--rate", str(rate), "--set",
               f"horizon={2 * cycles + 100}", "--duration", str(cycles / rate + 60),
               "--command-timeout-ms", "500"]
    if key_file:
        command += ["--key-file", str(key_file)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" on ")[1].split(",")[0]
        robot = UdpRobot.from_url(url, key=P.read_key_file(key_file) if key_file else None)
        start = time.monotonic()
        try:
            report = run(Controller.from_checkpoint(checkpoint), robot, episodes=1, rate=rate,
                         max_cycles=cycles, allow_mismatch=True)
        finally:
            robot.close()
    finally:
        server.kill()  # its own process id
        server.wait()
        server.stdout.close()
    t = report["timing"]
    j, lat = t["period_jitter_us"], t["read_to_send_us"]
    return (f"| {rate:g} Hz | {'HMAC-SHA256' if key_file else 'none'} | {t['cycles']} "
            f"({time.monotonic() - start:.0f} s) | {j['p50']:.1f} / {j['p99']:.1f} | "
            f"{lat['p50']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} | {t['deadline_misses']} | "
            f"{t['stale_cycles']} | {report['observations_missed']} | {report['stopped']} |")


def mac_cost(number: int = 20_000) -> list:
    """Microseconds per packet to build (encode) and to check (decode + MAC) an OBS of the
    cheetah (20 observations) and an ACTION (6 controls), without and with the MAC."""
    key = P.session_key(b"k" * 32, 1, b"a" * 16, b"b" * 16)
    obs = P.obs_payload(P.Observation(7, np.zeros(20, np.float32), 1.0, 2.0))
    act = P.action_payload(7, np.zeros(6))
    rows = []
    for name, kind, payload in (("OBS (20 observations)", P.OBS, obs),
                                ("ACTION (6 controls)", P.ACTION, act)):
        cells = []
        for k in (None, key):
            data = P.encode(kind, session=1, episode=1, seq=1, payload=payload, key=k)

            def check():
                P.authentic(P.decode(data), k)
            build = timeit.timeit(lambda: P.encode(kind, session=1, episode=1, seq=1,
                                                   payload=payload, key=k), number=number)
            read = timeit.timeit(check, number=number)
            cells.append((build / number * 1e6, read / number * 1e6, len(data)))
        (b0, r0, n0), (b1, r1, n1) = cells
        rows.append(f"| {name} | {n0} / {n1} | {b0:.1f} / {b1:.1f} | {r0:.1f} / {r1:.1f} | "
                    f"{(b1 - b0) + (r1 - r0):.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 1000.0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs")
    print("| rate | authentication | cycles | period jitter p50 / p99 (us) | read-to-send "
          "p50 / p99 / max (us) | deadline misses | stale cycles | observations missed | "
          "stopped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "robot.key"
        key_file.write_bytes(os.urandom(32).hex().encode())
        key_file.chmod(0o600)
        for rate in args.rates:
            for key in (None, key_file):
                print(loop(rate, args.cycles, key, args.checkpoint), flush=True)
    print()
    print("| packet | bytes without / with MAC | build (us) without / with | check (us) "
          "without / with | the MAC's cost per packet, both sides (us) |")
    print("| --- | --- | --- | --- | --- |")
    for row in mac_cost():
        print(row, flush=True)


if __name__ == "__main__":
    main()
