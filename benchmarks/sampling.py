"""Closed-loop sampling throughput of metarobot against the ceiling and other samplers.

HalfCheetah with Gymnasium's physics (frame_skip 5), a 2 x 100 ReLU Gaussian MLP policy in the
loop, N simulations, 1 .. nproc threads; every row measured in this one run, best of --repeats.

  ceiling          a single-thread C loop of mj_step, / frame_skip, x threads
  metarobot rollout  BatchSim.rollout: the policy evaluated in C++ inside the loop
  metarobot step     BatchSim.step with the torch policy in Python
  mujoco.batch       MuJoCo's Python batch + torch policy + numpy observations and rewards
  gymnasium Sync/Async VectorEnv of HalfCheetah-v5 + torch policy (N = 16)
  envpool          HalfCheetah-v5 + torch policy, when envpool is installed

Prints a markdown table of env-steps/s with the ratio to the ceiling at the same thread count.

  python benchmarks/sampling.py                       # N in 16, 256, 1024
  python benchmarks/sampling.py --sizes 16 256 --threads 2 --horizon 100
  python benchmarks/sampling.py --mixed              # also: mixed tasks vs one task per batch
  python benchmarks/sampling.py --terrain            # only: mixed terrains vs one terrain
  python benchmarks/sampling.py --actuators          # only: PD servos at decimation 4
  python benchmarks/sampling.py --go2                # only: Go2Walk against its servo loop

--terrain times AntTerrainDir and Walker2DTerrainVel: 8 tasks on 8 terrains (every kind, then
three more layouts) x 32 simulations in one call, against 256 simulations on each one of those
terrains. Episodes there end when the robot falls, so rates count valid env-steps.

--actuators times HalfCheetahVelServo at decimation 4 (PD servos at every physics step, a
20 ms command delay, noisy joint sensors, strength per task) against the servo ceiling: plain C
loops of the same PD law, limits and delay around mj_step on the same model, one per thread,
run at once; and, as a control, HalfCheetahVel's motors at the same frame_skip against plain
mj_step loops. Each rollout call is paired with a ceiling run of as many physics steps per
thread right before it, the pairs alternating repeats times.

--go2 times Go2Walk (12 servos at decimation 4 of 5 ms, 20 ms delay, its observation, legged
rewards with contact forces, commands) against the same servo ceiling on the Go2 model; its
episodes end when the robot falls, so rates count valid env-steps.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import time
from typing import Callable, Dict, List

import mujoco
import numpy as np
import torch

import metarobot
from metarobot import _core

FRAME_SKIP = 5


def best_rate(fn: Callable[[], int], repeats: int, min_seconds: float = 0.5) -> float:
    """Highest steps/s over repeats; fn runs once and returns the env steps it made."""
    best = 0.0
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while True:
            steps += fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, steps / elapsed)
    return best


def ceiling_rate(model: mujoco.MjModel, horizon: int, repeats: int) -> float:
    """Env steps/s of one thread: a plain C loop of mj_step, frame_skip steps per env step."""
    nstep = 40_000
    _core.time_mj_step_loop(model._address, 2000, FRAME_SKIP, horizon)
    best = min(_core.time_mj_step_loop(model._address, nstep, FRAME_SKIP, horizon, seed=r)
               for r in range(repeats))
    return nstep / best / FRAME_SKIP


def torch_actions(policy: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy(torch.from_numpy(obs)).sample().numpy()


def bench_rollout(family, n, threads, horizon, repeats):
    sim = metarobot.BatchSim(family, family.sample_tasks(n, seed=0), num_threads=threads)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    sim.rollout(policy, horizon=5)

    def run():
        sim.rollout(policy, horizon=horizon)
        return n * horizon
    return best_rate(run, repeats)


def bench_step(family, n, threads, horizon, repeats):
    sim = metarobot.BatchSim(family, family.sample_tasks(n, seed=0), num_threads=threads)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    state = {"obs": sim.reset()}

    def run():
        obs = state["obs"]
        for _ in range(horizon):
            obs, rew, term, trunc, info = sim.step(torch_actions(policy, obs))
        state["obs"] = obs
        return n * horizon
    return best_rate(run, repeats)


def bench_mujoco_batch(model, n, threads, horizon, repeats):
    from mujoco import batch as mjbatch
    b = mjbatch.Batch(model, n, nthread=threads)
    qpos, qvel, ctrl = b.bind("qpos"), b.bind("qvel"), b.bind("ctrl")
    policy = metarobot.GaussianMLPPolicy(model.nq - 1 + model.nv, model.nu)
    dt = model.opt.timestep * FRAME_SKIP
    b.reset()

    def run():
        for t in range(horizon):
            obs = np.concatenate([qpos[:, 1:], qvel], axis=1).astype(np.float32)
            actions = torch_actions(policy, obs)
            x_before = qpos[:, 0].copy()
            ctrl[:] = actions
            b.step(nstep=FRAME_SKIP)
            # computed as a sampler must, though unused here
            _ = (qpos[:, 0] - x_before) / dt - 0.1 * np.square(actions).sum(1)
        b.reset()
        return n * horizon
    return best_rate(run, repeats)


def bench_gymnasium(n, vector_cls, horizon, repeats):
    import gymnasium as gym
    envs = vector_cls([lambda: gym.make("HalfCheetah-v5") for _ in range(n)])
    policy = metarobot.GaussianMLPPolicy(17, 6)
    state = {"obs": envs.reset(seed=0)[0].astype(np.float32)}

    def run():
        obs = state["obs"]
        for _ in range(horizon):
            obs, rew, term, trunc, info = envs.step(torch_actions(policy, obs))
            obs = obs.astype(np.float32)
        state["obs"] = obs
        return n * horizon
    try:
        return best_rate(run, repeats)
    finally:
        envs.close()


def bench_envpool(n, threads, horizon, repeats):
    import envpool
    env = envpool.make_gymnasium("HalfCheetah-v5", num_envs=n, batch_size=n, num_threads=threads)
    policy = metarobot.GaussianMLPPolicy(17, 6)
    state = {"obs": env.reset()[0].astype(np.float32)}

    def run():
        obs = state["obs"]
        for _ in range(horizon):
            obs, rew, term, trunc, info = env.step(torch_actions(policy, obs).astype(np.float64))
            obs = obs.astype(np.float32)
        state["obs"] = obs
        return n * horizon
    return best_rate(run, repeats)


def bench_mixed(family_name: str, threads: int, horizon: int, repeats: int) -> List[Dict]:
    """8 tasks x 32 simulations in one call against 256 simulations of one task, per task."""
    family = metarobot.make_family(family_name, frame_skip=FRAME_SKIP)
    tasks = family.sample_tasks(8, seed=0)
    rows = []
    mixed = bench_rollout_tasks(family, tasks, 32, threads, horizon, repeats)
    singles = [bench_rollout_tasks(family, [t], 256, threads, horizon, repeats) for t in tasks]
    rows.append(dict(case=f"{family_name}: 8 tasks x 32 in one batch", rate=mixed,
                     ratio=mixed / np.mean(singles)))
    rows.append(dict(case=f"{family_name}: 1 task x 256 (mean of the 8)",
                     rate=float(np.mean(singles)), ratio=1.0))
    return rows


def bench_rollout_tasks(family, tasks, per_task, threads, horizon, repeats, policy=None):
    sim = metarobot.BatchSim(family, tasks, envs_per_task=per_task, num_threads=threads)
    if policy is None:
        policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)

    def run():
        traj = sim.rollout(policy, horizon=horizon)
        return int(traj.valid.sum())  # == num_envs * horizon without terminations
    return best_rate(run, repeats)


def terrain_tasks(family) -> List:
    """Eight tasks on eight terrains: every kind at difficulty 0.5, then rough, slopes and
    stairs with other layouts and difficulty 1."""
    from metarobot.terrain import KINDS
    base = family.sample_tasks(1, seed=0)[0].as_dict()
    layouts = [(k, 0.5, 1) for k in range(len(KINDS))] + [(1, 1.0, 2), (2, 1.0, 2), (3, 1.0, 2)]
    return [family.task(**dict(base, terrain=float(k), difficulty=d, terrain_seed=float(s)))
            for k, d, s in layouts]


def bench_mixed_terrain(family_name: str, threads: int, horizon: int, repeats: int) -> List[Dict]:
    """8 terrains x 32 simulations in one call against 256 simulations on each terrain."""
    from metarobot.terrain import KINDS
    family = metarobot.make_family(family_name)
    tasks = terrain_tasks(family)
    torch.manual_seed(0)
    probe = metarobot.BatchSim(family, tasks[:1])
    policy = metarobot.GaussianMLPPolicy(probe.observation_dim, probe.action_dim)
    mixed = bench_rollout_tasks(family, tasks, 32, threads, horizon, repeats, policy)
    singles = [bench_rollout_tasks(family, [t], 256, threads, horizon, repeats, policy)
               for t in tasks]
    rows = [dict(case=f"{family_name}: 8 terrains x 32 in one batch", rate=mixed,
                 ratio=mixed / np.mean(singles))]
    for t, rate in zip(tasks, singles):
        rows.append(dict(case=f"{family_name}: 256 on {KINDS[int(t['terrain'])]} (difficulty "
                              f"{t['difficulty']:g}, seed {int(t['terrain_seed'])})",
                         rate=rate, ratio=rate / np.mean(singles)))
    return rows


def servo_family(decimation: int, horizon: int):
    """HalfCheetahVelServo at the given decimation with a fixed 20 ms command delay (the
    ceiling loop runs one delay)."""
    base = metarobot.make_family("HalfCheetahVelServo")
    return base.with_overrides(frame_skip=decimation, horizon=horizon,
                               actuators=dict(base.actuators.as_dict(), delay_ms=20.0))


def go2_family(horizon: int):
    """Go2Walk with a fixed 20 ms command delay (the ceiling loop runs one delay)."""
    base = metarobot.make_family("Go2Walk", horizon=horizon)
    params = tuple(p for p in base.parameters if getattr(p, "quantity", "") != "command_delay_ms")
    return dataclasses.replace(base, parameters=params,
                               actuators=dataclasses.replace(base.actuators, delay_ms=20.0))


def bench_actuators(sizes, threads_list, horizon, repeats, decimation=4, go2=False
                    ) -> List[Dict]:
    """Servo rollouts against the servo C loop, motor rollouts against the mj_step loop (go2:
    Go2Walk against its servo loop, no motor control). Each rollout call is paired with a
    ceiling run of the same physics steps per thread, run right before it; the pairs
    alternate repeats times. Returns the best rate of each and the median of the pairs'
    ratios (steadier than best over best on a shared machine). Rates count valid env-steps."""
    servo = go2_family(horizon) if go2 else servo_family(decimation, horizon)
    motors = metarobot.make_family("HalfCheetahVel", frame_skip=decimation, horizon=horizon)
    model = servo.load_model()
    settings = servo.actuator_settings(model, servo.sample_tasks(1, seed=0))

    def concurrently(loop, nstep, threads):
        """Env steps/s of `threads` copies of a C loop run at once (each releases the GIL):
        on a shared machine the cores the rollout gets, not threads x one idle core."""
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            seconds = list(pool.map(loop, [nstep] * threads, range(threads)))
        return sum(nstep / s for s in seconds) / decimation

    # the ceiling's episodes start where the family's do (Go2Walk: standing, keyframe home)
    key = -1 if servo.init_keyframe is None else model.key(servo.init_keyframe).id

    def servo_ceiling(nstep, threads):
        return concurrently(lambda k, seed: _core.time_servo_loop(
            model._address, settings, k, decimation, horizon, seed, key), nstep, threads)

    def motor_ceiling(nstep, threads):
        return concurrently(lambda k, seed: _core.time_mj_step_loop(
            model._address, k, decimation, horizon, seed), nstep, threads)
    rows = []
    for threads in threads_list:
        for n in sizes:
            cases = [("Go2Walk (12 servos, legged terms)" if go2 else
                      "servos (PD every physics step)", servo, servo_ceiling)]
            if not go2:
                cases.append(("motors (no actuator model)", motors, motor_ceiling))
            for name, family, ceiling in cases:
                sim = metarobot.BatchSim(family, family.sample_tasks(n, seed=0),
                                         num_threads=threads)
                torch.manual_seed(0)
                policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
                sim.rollout(policy, horizon=5)
                nstep = max(n * horizon * decimation // threads, 40_000)
                ceiling(2000, 1)
                rates, tops = [], []
                for _ in range(repeats):  # alternating, so both see the same load
                    tops.append(ceiling(nstep, threads))
                    start = time.perf_counter()
                    traj = sim.rollout(policy, horizon=horizon)
                    rates.append(int(traj.valid.sum()) / (time.perf_counter() - start))
                ratio = float(np.median(np.array(rates) / np.array(tops)))
                rows.append(dict(sampler=name, n=n, threads=threads, rate=max(rates),
                                 ceiling=max(tops), ratio=ratio))
                print(f"  {name:<32} N={n:<5} threads={threads}: {max(rates):>10,.0f} "
                      f"env-steps/s, ceiling {max(tops):>10,.0f}: median pair ratio "
                      f"{ratio:.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--threads", type=int, nargs="+",
                        default=list(range(1, (os.cpu_count() or 1) + 1)))
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-gymnasium", action="store_true")
    parser.add_argument("--mixed", action="store_true",
                        help="also time a batch of mixed tasks against one task per batch")
    parser.add_argument("--terrain", action="store_true",
                        help="only time batches of mixed terrains against one terrain each")
    parser.add_argument("--actuators", action="store_true",
                        help="only time servo rollouts at decimation 4 against the servo loop")
    parser.add_argument("--go2", action="store_true",
                        help="only time Go2Walk rollouts against the Go2 servo loop")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the policy is small; the simulation threads get the cores
    if args.actuators or args.go2:
        what = ("Go2Walk, 12 servos at decimation 4 (timestep 0.005 s)" if args.go2 else
                "HalfCheetah servos at decimation 4 (timestep 0.01 s)")
        print(f"{what}, policy 2 x 100 ReLU, horizon {args.horizon}, {os.cpu_count()} CPUs, "
              f"MuJoCo {mujoco.__version__}\n")
        rows = bench_actuators(args.sizes, args.threads, args.horizon, args.repeats,
                               go2=args.go2)
        print("\n| rollout | N | threads | env-steps/s (best) | ceiling (best) | best / best "
              "| median of paired ratios |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['sampler']} | {r['n']} | {r['threads']} | {r['rate']:,.0f} | "
                  f"{r['ceiling']:,.0f} | {r['rate'] / r['ceiling']:.2f} | {r['ratio']:.2f} |")
        return
    if args.terrain:
        threads = max(args.threads)
        print(f"Mixed terrains in one call ({threads} threads, rollout, horizon {args.horizon}, "
              f"MuJoCo {mujoco.__version__}); ratios to the mean of the one-terrain batches:\n")
        print("| batch | valid env-steps/s | vs mean of one-terrain batches |")
        print("| --- | --- | --- |")
        for name in ("AntTerrainDir", "Walker2DTerrainVel"):
            for row in bench_mixed_terrain(name, threads, args.horizon, args.repeats):
                print(f"| {row['case']} | {row['rate']:,.0f} | {row['ratio']:.2f} |", flush=True)
        return

    family = metarobot.make_family("HalfCheetahDir", frame_skip=FRAME_SKIP, horizon=args.horizon)
    model = family.load_model()
    try:
        import envpool  # noqa: F401 (only whether it imports)
        have_envpool = True
    except ImportError:
        have_envpool = False
    print(f"HalfCheetah, frame_skip {FRAME_SKIP}, policy 2 x 100 ReLU, horizon {args.horizon}, "
          f"{os.cpu_count()} CPUs, MuJoCo {mujoco.__version__}, torch {torch.__version__}")
    rows = []

    def add(sampler, n, threads, measure):
        # the ceiling is timed right before each row, so that both see the same machine load
        ceiling = ceiling_rate(model, args.horizon, args.repeats) * threads
        rate = measure()
        rows.append((sampler, n, threads, rate, ceiling))
        print(f"  {sampler:<26} N={n:<5} threads={threads}: {rate:>10,.0f} env-steps/s, "
              f"ceiling {ceiling:>10,.0f}: {rate / ceiling:.2f}x", flush=True)

    for threads in args.threads:
        for n in args.sizes:
            add("metarobot rollout", n, threads,
                lambda: bench_rollout(family, n, threads, args.horizon, args.repeats))
            add("metarobot step + torch", n, threads,
                lambda: bench_step(family, n, threads, args.horizon, args.repeats))
            add("mujoco.batch + torch", n, threads,
                lambda: bench_mujoco_batch(model, n, threads, args.horizon, args.repeats))
            if have_envpool:
                add("envpool + torch", n, threads,
                    lambda: bench_envpool(n, threads, args.horizon, args.repeats))
    if not args.skip_gymnasium:
        import gymnasium as gym
        threads = max(args.threads)
        add("gymnasium SyncVectorEnv", 16, 1,
            lambda: bench_gymnasium(16, gym.vector.SyncVectorEnv, args.horizon, args.repeats))
        add("gymnasium AsyncVectorEnv", 16, threads,
            lambda: bench_gymnasium(16, gym.vector.AsyncVectorEnv, args.horizon, args.repeats))

    print("\n| sampler | N | threads | env-steps/s | ceiling | vs ceiling |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sampler, n, threads, rate, ceiling in rows:
        print(f"| {sampler} | {n} | {threads} | {rate:,.0f} | {ceiling:,.0f} | "
              f"{rate / ceiling:.2f} |")

    if args.mixed:
        threads = max(args.threads)
        print(f"\nMixed tasks in one call ({threads} threads, rollout, horizon {args.horizon}):\n")
        print("| batch | env-steps/s | vs one task per batch |")
        print("| --- | --- | --- |")
        for row in bench_mixed("HalfCheetahVel", threads, args.horizon, args.repeats):
            print(f"| {row['case']} | {row['rate']:,.0f} | {row['ratio']:.2f} |")


if __name__ == "__main__":
    main()
