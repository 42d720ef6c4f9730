"""The fixed-rate loop over loopback: a simulated robot (`metarobot sim-robot`, its own process)
at 50, 200 and 1000 Hz and the runner against it for 10,000 cycles each: period jitter
(|tick interval - period|), read-to-send latency (observation received -> controls sent, the
policy included) and deadline misses.

    python benchmarks/hil_loop.py [--rates 50 200 1000] [--cycles 10000]
"""

import argparse
import subprocess
import sys
import time

from metarobot.deploy.protocol import UdpRobot
from metarobot.deploy.runner import Controller, run

CHECKPOINT = "checkpoints/HalfCheetahVel.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0, 1000.0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    args = parser.parse_args()
    print("| rate | cycles | period jitter p50 / p99 / max (us) | read-to-send p50 / p99 / max "
          "(us) | deadline misses | stale cycles |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rate in args.rates:
        server = subprocess.Popen(
            [sys.executable, "-m", "metarobot.cli", "sim-robot", "HalfCheetahVel", "--task",
             '{"goal_velocity": 1.0}', "--port", "0", "--rate", str(rate), "--set",
             f"horizon={args.cycles + 10}", "--duration", str(args.cycles / rate + 60)],
            stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().split(" on ")[1].split(",")[0]
            robot = UdpRobot.from_url(url)
            start = time.monotonic()
            report = run(Controller.from_checkpoint(args.checkpoint), robot, episodes=1,
                         rate=rate, max_cycles=args.cycles)
            robot.close()
        finally:
            server.kill()
            server.wait()
        t = report["timing"]
        j, lat = t["period_jitter_us"], t["read_to_send_us"]
        print(f"| {rate:g} Hz | {t['cycles']} ({time.monotonic() - start:.0f} s) | "
              f"{j['p50']:.1f} / {j['p99']:.1f} / {j['max']:.0f} | {lat['p50']:.0f} / "
              f"{lat['p99']:.0f} / {lat['max']:.0f} | {t['deadline_misses']} | "
              f"{t['stale_cycles']} |", flush=True)


if __name__ == "__main__":
    main()
