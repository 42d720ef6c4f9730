"""The fixed-rate loop over loopback: a simulated robot (`metarobot sim-robot`, its own process)
at 200 and 1000 Hz and the runner against it for 10,000 cycles each, without and with a
shared key (every packet authenticated by HMAC-SHA256), in halves run side by side: tick
lateness (tick - scheduled), read-to-send latency (observation received -> controls sent, the
policy included), deadline misses, stale cycles and observations missed; then what the MAC
costs per packet.

    python benchmarks/hil_loop.py [--rates 200 1000] [--cycles 10000] [--dds-cycles 10000]
    python benchmarks/hil_loop.py --rates --dds-cycles 200     # a smoke run of the DDS row only

The DDS row (needs the unitree extra): the Go2Walk controller through UnitreeRobot against
`metarobot sim-robot Go2Walk --protocol unitree` on loopback, the policy at 50 Hz and LowCmds
at 500 Hz for --dds-cycles command cycles (a short stand before them is not counted). Each
LowCmd carries its send time (the monotonic clock in us, in the message's unused `reserve`
word, CRC recomputed) and a subscriber in its own process takes the arrival time: one-way
latency on loopback (both processes read the same CLOCK_MONOTONIC). Jitter is |interval
between consecutive LowCmds - the command period|; a deadline miss is an interval longer than
two periods (a command slot passed without a command).

The robot runs the cheetah at the benchmark's rate, not the policy's 10 ms, so the runner is
told to allow that mismatch; its command timeout is 2.5 s so that a stall of a shared
machine shows as deadline misses rather than ending the run, and the runner counts misses
and stale cycles instead of stopping on them.
"""

import argparse
import os
import signal
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


GO2 = str(ROOT / "checkpoints" / "Go2Walk-dr.safetensors")
GO2_TASK = ('{"payload": 0, "com_shift_x": 0, "friction": 1, "strength": 1, "kp": 20, '
            '"kd": 0.5, "command_delay_ms": 0}')


def listen(domain: int, seconds: float, out: str) -> None:
    """The subscriber process: one-way latency (us) of every rt/lowcmd with a send stamp."""
    from metarobot.deploy.unitree.dds import DdsLink
    from metarobot.deploy.unitree.idl import LowCmd_, TOPIC_LOW_CMD
    link = DdsLink("lo", domain)
    reader = link.reader(TOPIC_LOW_CMD, LowCmd_)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))  # the benchmark is done
    print("listening", flush=True)
    latency = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop:
        for msg in reader.take(N=64):
            now = (time.monotonic_ns() // 1000) & 0xFFFFFFFF
            if isinstance(msg, LowCmd_) and msg.reserve:
                latency.append((now - msg.reserve) & 0xFFFFFFFF)  # modulo the word's wrap
        time.sleep(0.0002)
    np.save(out, np.asarray(latency, np.float64))
    link.close()


def dds_loop(cycles: int, folder: Path) -> dict:
    """The DDS row: policy 50 Hz, LowCmds 500 Hz for `cycles` command cycles."""
    from metarobot.deploy.unitree import messages as M
    from metarobot.deploy.unitree.robot import UnitreeRobot, safety_limits

    class StampedRobot(UnitreeRobot):
        """Each LowCmd stamped with its send time (us) in `reserve`; the stamps kept."""
        stamps: list = []

        def _low_cmd(self, command):
            msg = super()._low_cmd(command)
            now = time.monotonic_ns() // 1000
            msg.reserve = now & 0xFFFFFFFF
            msg.crc = M.message_crc(M.LOW_CMD, msg)
            if self.machine.phase.value == "policy":
                self.stamps.append(now)
            return msg

    domain = 150 + os.getpid() % 50
    hz = 500.0
    seconds = cycles / hz
    sim = subprocess.Popen([sys.executable, "-m", "metarobot.cli", "sim-robot", "Go2Walk",
                            "--protocol", "unitree", "--interface", "lo", "--domain",
                            str(domain), "--task", GO2_TASK, "--duration", str(seconds + 60)],
                           stdout=subprocess.PIPE, text=True)
    listener = subprocess.Popen([sys.executable, __file__, "--listen", str(domain),
                                 str(seconds + 20), str(folder / "latency.npy")],
                                stdout=subprocess.PIPE, text=True)
    try:
        sim.stdout.readline()
        listener.stdout.readline()
        controller = Controller.from_checkpoint(GO2)
        robot = StampedRobot(controller.deploy, interface="lo", domain=domain,
                             command_hz=hz, episode_s=seconds,
                             limits=safety_limits(controller.deploy, stand_s=0.5),
                             passive_s=0.2, settle_s=0.2, verbose=False)
        start = time.monotonic()
        try:
            report = run(controller, robot, episodes=1, report_dir=folder, mcap=False,
                         limits=Limits(max_misses=10**9, stale_after=2.0))
        finally:
            robot.close()
        listener.terminate()  # its own process id: it saves what it took and ends
        listener.wait(timeout=30)
    finally:
        for proc in (sim, listener):
            if proc.poll() is None:
                proc.kill()  # its own process id
            proc.wait()
            proc.stdout.close()
    sent = np.asarray(StampedRobot.stamps[:cycles + 1], np.float64)
    intervals = np.diff(sent)
    period_us = 1e6 / hz
    return {"jitter": np.abs(intervals - period_us),
            "misses": int(np.sum(intervals > 2 * period_us)),
            "commands": int(intervals.size), "latency": np.load(folder / "latency.npy"),
            "policy_cycles": report["timing"]["cycles"], "stopped": report["stopped"],
            "seconds": time.monotonic() - start}


def dds_row(m: dict) -> str:
    j, lat = m["jitter"], m["latency"]
    return (f"| DDS (Unitree) | 50 / 500 Hz | {m['commands']} commands, {m['policy_cycles']} "
            f"policy cycles ({m['seconds']:.0f} s) | {np.percentile(j, 50):.0f} / "
            f"{np.percentile(j, 99):.0f} / {j.max():.0f} | {m['misses']} | "
            f"{np.percentile(lat, 50):.0f} / {np.percentile(lat, 99):.0f} / {lat.max():.0f} "
            f"({lat.size} received) | {m['stopped']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="*", default=[200.0, 1000.0],
                        help="the UDP rows' rates (none: no UDP rows)")
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--dds-cycles", type=int, default=10_000,
                        help="the DDS row's command cycles at 500 Hz (0: no DDS row)")
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    parser.add_argument("--listen", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:  # the DDS row's subscriber process
        listen(int(args.listen[0]), float(args.listen[1]), args.listen[2])
        return
    for name in ("cycles", "dds_cycles"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} should be >= 0")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    if args.rates:
        print("| rate | authentication | cycles | tick lateness p50 / p99 (us) | read-to-send "
              "p50 / p99 / max (us) | deadline misses | stale cycles | observations missed "
              "| stopped |")
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
    if args.dds_cycles:
        print()
        print("| link | policy / commands | cycles | command jitter p50 / p99 / max (us) | "
              "deadline misses | one-way latency p50 / p99 / max (us) | stopped |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        with tempfile.TemporaryDirectory() as tmp:
            print(dds_row(dds_loop(args.dds_cycles, Path(tmp))), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| packet | bytes without / with MAC | build (us) without / with | check (us) "
          "without / with | the MAC's cost per packet, both sides (us) |")
    print("| --- | --- | --- | --- | --- |")
    for line in mac_cost():
        print(line, flush=True)


if __name__ == "__main__":
    main()
