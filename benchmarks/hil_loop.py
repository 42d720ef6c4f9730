"""The fixed-rate loop over loopback: a simulated robot (`metarobot sim-robot`, its own process)
at 200 and 1000 Hz and the runner against it for 10,000 cycles each, without and with a
shared key (every packet authenticated by HMAC-SHA256), in halves run side by side: tick
lateness (tick - scheduled), read-to-send latency (observation received -> controls sent, the
policy included), deadline misses, stale cycles and observations missed; then what the MAC
costs per packet.

    python benchmarks/hil_loop.py [--rates 200 1000] [--cycles 10000]

The robot runs the cheetah at the benchmark's rate, not the policy's 10 ms, so the runner is
told to allow that mismatch; its command timeout is 2.5 s so that a stall of a shared
machine shows as deadline misses rather than ending the run, and the runner counts misses
and stale cycles instead of stopping on them.
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
from metarobot.deploy.runner import Limits, run
from metarobot.deploy.udp import UdpRobot

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = str(ROOT / "checkpoints" / "HalfCheetahVel.safetensors")


def loop(rate: float, cycles: int, key_file, checkpoint: str, folder: Path) -> dict:
    """One run of `cycles` cycles at rate; the per-cycle read-to-send latency and tick
    lateness (us, from cycles.csv) and the report's counts."""
    command = [sys.executable, "-m", "metarobot.cli", "sim-robot", "HalfCheetahVel", "--task",
               '{"goal_velocity": 1.0}', "--port", "0", "--rate", str(rate), "--set",
               f"horizon={2 * cycles + 100}", "--duration", str(cycles / rate + 60),
               "--command-timeout-ms", "2500"]
    if key_file:
        command += ["--key-file", str(key_file)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" on ")[1].split(",")[0]
        robot = UdpRobot.from_url(url, key=P.read_key_file(key_file) if key_file else None)
        start = time.monotonic()
        try:
            # a benchmark counts misses and stale cycles rather than stopping on them
            report = run(Controller.from_checkpoint(checkpoint), robot, episodes=1, rate=rate,
                         max_cycles=cycles, allow_mismatch=True, report_dir=folder,
                         limits=Limits(max_misses=10**9, stale_after=2.0))
        finally:
            robot.close()
    finally:
        server.kill()  # its own process id
        server.wait()
        server.stdout.close()
    if report["stopped"] == "interrupted":
        raise SystemExit(f"interrupted ({report['detail']})")
    rows = np.genfromtxt(folder / "cycles.csv", delimiter=",", names=True)
    acted = rows[~np.isnan(rows["latency_us"])]
    t = report["timing"]
    return {"latency": acted["latency_us"], "lateness": rows["jitter_us"],
            "cycles": t["cycles"], "misses": t["deadline_misses"], "stale": t["stale_cycles"],
            "missed": report["observations_missed"], "seconds": time.monotonic() - start,
            "stopped": [report["stopped"]]}


def merged(parts: list) -> dict:
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("latency", "lateness")}
    out.update({k: sum(p[k] for p in parts) for k in ("cycles", "misses", "stale", "missed",
                                                       "seconds")})
    out["stopped"] = [s for p in parts for s in p["stopped"]]
    return out


def row(rate: float, auth: str, m: dict) -> str:
    lat, late = m["latency"], m["lateness"]
    stopped = ", ".join(sorted(set(m["stopped"])))
    return (f"| {rate:g} Hz | {auth} | {m['cycles']} ({m['seconds']:.0f} s) | "
            f"{np.percentile(late, 50):.1f} / {np.percentile(late, 99):.0f} | "
            f"{np.percentile(lat, 50):.0f} / {np.percentile(lat, 99):.0f} / {lat.max():.0f} | "
            f"{m['misses']} | {m['stale']} | {m['missed']} | {stopped} |")


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
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print("| rate | authentication | cycles | tick lateness p50 / p99 (us) | read-to-send "
          "p50 / p99 / max (us) | deadline misses | stale cycles | observations missed | "
          "stopped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "robot.key"
        key_file.write_bytes(os.urandom(32).hex().encode())
        key_file.chmod(0o600)
        for rate in args.rates:
            # side by side: halves in the order none, key, key, none, so that a change of
            # the machine's load during the run falls on both alike
            parts = {None: [], key_file: []}
            for i, key in enumerate((None, key_file, key_file, None)):
                parts[key].append(loop(rate, args.cycles // 2, key, args.checkpoint,
                                       Path(tmp) / f"{rate:g}-{i}"))
            print(row(rate, "none", merged(parts[None])), flush=True)
            print(row(rate, "HMAC-SHA256", merged(parts[key_file])), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| packet | bytes without / with MAC | build (us) without / with | check (us) "
          "without / with | the MAC's cost per packet, both sides (us) |")
    print("| --- | --- | --- | --- | --- |")
    for line in mac_cost():
        print(line, flush=True)


if __name__ == "__main__":
    main()
