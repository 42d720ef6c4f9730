"""The fixed-rate loop against a robot, with timing statistics, a watchdog, per-cycle logs,
and adaptation on the robot through the meta-learner's own inner step.

    controller = Controller.from_checkpoint("checkpoints/HalfCheetahVel.safetensors")
    report = run(controller, UdpRobot.from_url("udp://127.0.0.1:9870"), episodes=4,
                 adapt_steps=1, report_dir="hil-report")

Every cycle, on the monotonic clock at the control period: read the robot's newest
observation, compute the controls, send them, log the cycle (timestamps, observation,
controls, flags) to cycles.csv, flushed at once so the log is whole up to any stop. The
watchdog stops the robot (its safe state) and ends the run with a reason on a stale or
missing observation, repeated deadline misses, a non-finite observation or control, a joint
position or velocity outside the model's limits, or Ctrl-C.

With adapt_steps K the run has K + 1 stages of `episodes` episodes each: stage j runs the
policy of step j, sampling its actions (the data of an inner step), and between stages the
episodes of the stage just run adapt the policy by meta.inner_step, the function training and
evaluation use. The policy is swapped between episodes, never within one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import mujoco
import numpy as np
import torch

from .. import meta
from ..batch import Trajectories
from ..families import TaskFamily
from ..policy import GaussianMLPPolicy
from .export import DeployedPolicy, deployed_policy, observation_layout
from .robot import Reading, Robot

# why a run ends (report["stopped"])
STOP_REASONS = ("completed", "stale observation", "deadline misses", "non-finite observation",
                "non-finite controls", "joint limit", "interrupted")


class Stop(Exception):
    """The watchdog's verdict: why the run stops now."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass
class Limits:
    """What the watchdog allows. stale_after: seconds without a new observation while an
    episode runs; max_misses: consecutive deadline misses; joint_margin: how far (rad or m)
    a limited joint may pass its range (MuJoCo's limits are soft: in simulation the committed
    AntDir policy overshoots its hips by up to 0.33 rad, the cheetah its joints by 0.06);
    max_velocity: |joint velocity| bound (rad/s or m/s) for observed velocities."""

    stale_after: float = 0.25
    max_misses: int = 5
    joint_margin: float = 0.5
    max_velocity: float = 100.0


class Controller:
    """A policy to run on a robot: its parameters, the map onto the actuators, the family's
    joint limits and observation layout, and the inner step's settings."""

    def __init__(self, policy: GaussianMLPPolicy, family: TaskFamily, inner_lr: Any = 0.1,
                 gamma: float = 0.99, gae_lambda: float = 1.0, seed: int = 0,
                 update: Optional[meta.InnerUpdate] = None):
        self.policy, self.family = policy, family
        self.spec = meta.PolicySpec(policy.nlayers, policy.activation)
        self.model: mujoco.MjModel = family.load_model()
        self.params: Dict[str, torch.Tensor] = {k: v.detach().clone()
                                                for k, v in policy.params().items()}
        self.inner_lr, self.gamma, self.gae_lambda = inner_lr, gamma, gae_lambda
        self.update = update or meta.InnerUpdate()
        self.generator = torch.Generator().manual_seed(seed)
        self.layout = observation_layout(family, self.model)
        self._deployed = deployed_policy(policy, self.params, family, self.model)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], lr: Optional[float] = None,
                        seed: int = 0) -> "Controller":
        from ..train import _load
        policy, config, family, info, sizes = _load(path)
        step = lr if lr is not None else (sizes if sizes is not None else config.inner_lr)
        return cls(policy, family, step, config.gamma, config.gae_lambda, seed,
                   config.inner_rule)

    @property
    def deployed(self) -> DeployedPolicy:
        return self._deployed

    def set_params(self, params: Dict[str, torch.Tensor]) -> None:
        """Swaps the policy (between episodes)."""
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self._deployed = deployed_policy(self.policy, self.params, self.family, self.model)

    def act(self, obs: np.ndarray, sample: bool) -> tuple:
        """(policy action (act_dim,), controls (nu,)) for one observation: the mean, or with
        sample the mean plus the policy's noise (the data of an inner step)."""
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(obs, np.float32))[None]
            action = self._deployed.mean(x)
            if sample:
                std = torch.exp(self.params["log_std"]).float()
                action = action + std * torch.randn(action.shape, generator=self.generator)
            controls = self._deployed.controls(action)
        return action[0].numpy(), controls[0].numpy().astype(np.float64)

    def joint_checks(self) -> List[tuple]:
        """(obs index, kind 'qpos' or 'qvel', joint name, low, high) to watch."""
        m = self.model
        dof_joint = {int(m.jnt_dofadr[j]): j for j in range(m.njnt)}
        qpos_joint = {int(m.jnt_qposadr[j]): j for j in range(m.njnt)}
        out = []
        for term in self.layout:
            if term.get("source") == "qpos":
                for k in range(term["stop"] - term["start"]):
                    j = qpos_joint.get(term["first"] + k)
                    if j is None or not m.jnt_limited[j]:
                        continue
                    if int(m.jnt_type[j]) not in (int(mujoco.mjtJoint.mjJNT_HINGE),
                                                  int(mujoco.mjtJoint.mjJNT_SLIDE)):
                        continue
                    lo, hi = m.jnt_range[j]
                    out.append((term["start"] + k, "qpos", m.joint(j).name, lo, hi))
            elif term.get("source") == "qvel":
                for k in range(term["stop"] - term["start"]):
                    j = dof_joint.get(term["first"] + k)
                    name = m.joint(j).name if j is not None else f"dof {term['first'] + k}"
                    out.append((term["start"] + k, "qvel", name, -math.inf, math.inf))
        return out

    def adapt(self, episodes: Sequence["Episode"], batched: bool, lr: Any) -> None:
        """One inner step on the robot's episodes (the checkpoint's inner update, as in
        training and evaluation)."""
        traj = episodes_to_trajectories(episodes, self.family)
        batch = meta.process(traj, 1, self.gamma, self.gae_lambda)
        source = {k: (v[None] if batched else v) for k, v in self.params.items()}
        adapted = self.update.step(self.spec, source, batch, lr, batched)
        self.set_params({k: v[0] for k, v in adapted.items()})


@dataclasses.dataclass
class Episode:
    """What one episode on the robot gave: per step the observation the policy saw, the
    policy's action (before the map onto the actuators) and the reward the robot reported for
    the step it led to (NaN if none)."""

    obs: List[np.ndarray] = dataclasses.field(default_factory=list)
    actions: List[np.ndarray] = dataclasses.field(default_factory=list)
    rewards: List[float] = dataclasses.field(default_factory=list)
    terminated: bool = False
    complete: bool = False
    gaps: int = 0  # observations the runner never received (dropped packets)

    @property
    def ret(self) -> float:
        return float(np.nansum(self.rewards))


def episodes_to_trajectories(episodes: Sequence[Episode], family: TaskFamily) -> Trajectories:
    """Robot episodes as the simulator's Trajectories of one task (time-major, padded)."""
    usable = [e for e in episodes if len(e.actions) > 0]
    if not usable:
        raise ValueError("no episode with a step to adapt on")
    T = max(len(e.actions) for e in usable)
    N = len(usable)
    obs_dim, act_dim = len(usable[0].obs[0]), len(usable[0].actions[0])
    obs = np.zeros((T, N, obs_dim), np.float32)
    act = np.zeros((T, N, act_dim), np.float32)
    rew = np.zeros((T, N), np.float32)
    term = np.zeros((T, N), bool)
    trunc = np.zeros((T, N), bool)
    valid = np.zeros((T, N), bool)
    lengths = np.zeros(N, np.int32)
    for i, e in enumerate(usable):
        n = len(e.actions)
        obs[:n, i] = np.stack(e.obs[:n])
        act[:n, i] = np.stack(e.actions)
        r = np.full(n, np.nan, np.float32)  # rewards of dropped observations stay unknown
        r[:min(n, len(e.rewards))] = e.rewards[:n]
        rew[:n, i] = np.nan_to_num(r)
        valid[:n, i] = True
        term[n - 1, i] = e.terminated
        trunc[n - 1, i] = not e.terminated
        lengths[i] = n
    task = family.sample_tasks(1, seed=0)[0]
    return Trajectories(obs, act, rew, term, trunc, valid, obs[-1].copy(), lengths,
                        np.zeros(N, bool), np.zeros(N, np.int64), (task,))


class CycleLog:
    """cycles.csv: one row per cycle, flushed at once (whole up to any stop)."""

    def __init__(self, path: Path, obs_dim: int, act_dim: int):
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.fields = (["stage", "episode", "cycle", "step", "scheduled", "tick", "read",
                        "sent", "robot_stamp", "jitter_us", "latency_us", "miss", "stale",
                        "reward", "done"] + [f"obs_{i}" for i in range(obs_dim)]
                       + [f"ctrl_{i}" for i in range(act_dim)])
        self.writer.writerow(self.fields)
        self.file.flush()
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def row(self, values: list, obs: Optional[np.ndarray], ctrl: Optional[np.ndarray]) -> None:
        o = [f"{x:.7g}" for x in obs] if obs is not None else [""] * self.obs_dim
        c = [f"{x:.7g}" for x in ctrl] if ctrl is not None else [""] * self.act_dim
        self.writer.writerow(values + o + c)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _wait_until(deadline: float) -> float:
    """Sleeps to about a millisecond before deadline, then spins (time.sleep alone
    overshoots by tens to hundreds of microseconds); returns the time it woke."""
    while True:
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return now
        if left > 0.0015:
            time.sleep(left - 0.001)


def _percentiles(values: Sequence[float]) -> Dict[str, float]:
    if len(values) == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "count": int(a.size)}


def run(controller: Controller, robot: Robot, episodes: int = 1, adapt_steps: int = 0,
        report_dir: Optional[Union[str, Path]] = None, rate: Optional[float] = None,
        limits: Limits = Limits(), sample: Optional[bool] = None, lr: Any = None,
        max_cycles: Optional[int] = None, reset_timeout: float = 2.0,
        progress: bool = False) -> Dict[str, Any]:
    """Runs the controller on the robot; returns the report (also report.json, report.png
    and cycles.csv in report_dir). rate: the loop's frequency (Hz), default the robot's
    control period. sample: sample actions (default: when adapting). lr: the inner step's
    size (default the controller's). max_cycles: end each episode after so many cycles (for
    loop benchmarks)."""
    spec = robot.spec()
    if spec.obs_dim != controller.policy.obs_dim or spec.act_dim != controller.model.nu:
        raise ValueError(f"the robot has {spec.obs_dim} observations and {spec.act_dim} "
                         f"controls; the policy takes {controller.policy.obs_dim} and gives "
                         f"{controller.model.nu}")
    for name, value, low in (("episodes", episodes, 1), ("adapt_steps", adapt_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} should be an integer >= {low}, got {value!r}")
    if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate <= 10_000):
        raise ValueError(f"rate should be a frequency in (0, 10000] Hz, got {rate!r}")
    period = 1.0 / rate if rate else spec.control_period
    sample = adapt_steps > 0 if sample is None else sample
    lr = controller.inner_lr if lr is None else lr
    out = Path(report_dir) if report_dir is not None else None
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = CycleLog(out / "cycles.csv", spec.obs_dim, spec.act_dim)
    checks = controller.joint_checks()
    jitter, latency, misses_at = [], [], []
    stages: List[List[Episode]] = []
    counts = {"cycles": 0, "misses": 0, "stale": 0, "gaps": 0}
    reason, detail = "completed", ""
    cycle = 0
    started = time.monotonic()
    try:
        for stage in range(adapt_steps + 1):
            if stage > 0:
                controller.adapt(stages[-1], batched=stage > 1, lr=lr)
            stages.append([])
            for ep in range(episodes):
                episode = Episode()
                stages[-1].append(episode)
                reading: Optional[Reading] = robot.reset(reset_timeout)
                t0 = reading.received
                last_fresh, last_step, last_tick = reading.received, reading.step, None
                consecutive = 0
                last_sent = None
                k = 0
                while True:
                    scheduled = t0 + k * period
                    tick = _wait_until(scheduled)
                    if last_tick is not None:
                        jitter.append(abs(tick - last_tick - period) * 1e6)
                    last_tick = tick
                    if reading is None:
                        # the robot's observation of this period: wait for it up to half a
                        # period (the robot's clock and this loop's tick at the same rate;
                        # waiting locks this loop's phase to just after the robot's)
                        reading = robot.read(timeout=max(scheduled + 0.5 * period
                                                         - time.monotonic(), 0.0))
                    read_at = time.monotonic()
                    row = [stage, ep, cycle, "", f"{scheduled:.6f}", f"{tick:.6f}",
                           f"{read_at:.6f}", "", "", f"{(tick - scheduled) * 1e6:.1f}", "",
                           0, 0, "", 0]
                    if reading is None:  # nothing new since the last controls
                        counts["stale"] += 1
                        row[12] = 1
                        if last_sent is not None:  # they may have been lost: again
                            robot.send(*last_sent)
                        if log:
                            log.row(row, None, None)
                        if read_at - last_fresh > limits.stale_after:
                            raise Stop("stale observation",
                                       f"no new observation for {(read_at - last_fresh) * 1e3:.0f}"
                                       f" ms (limit {limits.stale_after * 1e3:.0f} ms)")
                        k += 1
                        cycle += 1
                        continue
                    last_fresh = reading.received
                    if reading.step > last_step + 1:
                        episode.gaps += reading.step - last_step - 1
                    if reading.step > 0 and episode.actions:
                        episode.rewards.append(reading.reward)
                    last_step = reading.step
                    row[3], row[8] = reading.step, f"{reading.stamp:.6f}"
                    row[13], row[14] = (f"{reading.reward:.6g}", int(reading.done))
                    if reading.done:
                        episode.terminated, episode.complete = reading.terminated, True
                        if log:
                            log.row(row, reading.obs, None)
                        cycle += 1
                        break
                    obs = reading.obs
                    if not np.isfinite(obs).all():
                        raise Stop("non-finite observation", f"at step {reading.step}")
                    for index, kind, name, lo, hi in checks:
                        v = obs[index]
                        bound = (limits.max_velocity if kind == "qvel" else limits.joint_margin)
                        if kind == "qvel" and abs(v) > bound:
                            raise Stop("joint limit", f"{name} velocity {v:.3g} beyond "
                                                      f"+-{bound:g}")
                        if kind == "qpos" and not lo - bound <= v <= hi + bound:
                            raise Stop("joint limit", f"{name} at {v:.3g}, range [{lo:.3g}, "
                                                      f"{hi:.3g}] +- {bound:g}")
                    action, controls = controller.act(obs, sample)
                    if not np.isfinite(controls).all():
                        raise Stop("non-finite controls", f"at step {reading.step}")
                    robot.send(reading.step, controls)
                    sent = time.monotonic()
                    last_sent = (reading.step, controls)
                    episode.obs.append(obs)
                    episode.actions.append(action)
                    latency.append((sent - reading.received) * 1e6)
                    late = sent - scheduled > period
                    row[7], row[10] = f"{sent:.6f}", f"{latency[-1]:.1f}"
                    if late:
                        counts["misses"] += 1
                        consecutive += 1
                        misses_at.append(sent - started)
                        row[11] = 1
                    else:
                        consecutive = 0
                    if log:
                        log.row(row, obs, controls)
                    counts["cycles"] += 1
                    cycle += 1
                    reading = None
                    if consecutive >= limits.max_misses:
                        raise Stop("deadline misses", f"{consecutive} cycles in a row finished "
                                                      f"past their deadline")
                    if max_cycles is not None and len(episode.actions) >= max_cycles:
                        break
                    # the next tick; after a stall, skip the ticks already past
                    k += 1
                    now = time.monotonic()
                    if now > t0 + (k + 1) * period:
                        skipped = int((now - t0) / period) - k
                        k += skipped
                        counts["misses"] += skipped
                counts["gaps"] += episode.gaps
                if progress:
                    print(f"stage {stage} episode {ep}: return {episode.ret:.2f} "
                          f"({len(episode.actions)} steps)", flush=True)
    except Stop as stop:
        reason, detail = stop.reason, stop.detail
    except KeyboardInterrupt:
        reason, detail = "interrupted", "Ctrl-C"
    except TimeoutError as exc:
        reason, detail = "stale observation", str(exc)
    finally:
        acknowledged = robot.stop()
        if log:
            log.close()
    report = {
        "stopped": reason, "detail": detail, "robot_acknowledged_stop": acknowledged,
        "family": controller.family.name, "control_period_s": period,
        "episodes_per_stage": episodes, "adapt_steps": adapt_steps, "sampled_actions": sample,
        "stages": [{"step": j, "returns": [e.ret for e in eps],
                    "mean_return": float(np.mean([e.ret for e in eps])) if eps else math.nan,
                    "lengths": [len(e.actions) for e in eps],
                    "complete": [e.complete for e in eps]} for j, eps in enumerate(stages)],
        "timing": {"period_jitter_us": _percentiles(jitter),
                   "read_to_send_us": _percentiles(latency),
                   "deadline_misses": counts["misses"], "stale_cycles": counts["stale"],
                   "cycles": counts["cycles"]},
        "observations_missed": counts["gaps"],
        "rejected_packets": dict(getattr(robot, "rejected", {})),
        "robot_errors": list(getattr(robot, "robot_errors", []))[-5:],
        "deadline_miss_times_s": misses_at[:1000],
    }
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2))
        plot_report(report, latency, out / "report.png")
    return report


def plot_report(report: Dict[str, Any], latency_us: Sequence[float], path: Path) -> None:
    """Returns per episode by stage, the read-to-send latency histogram, deadline misses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    ax = axes[0]
    for stage in report["stages"]:
        xs = [stage["step"] + 0.08 * (i - len(stage["returns"]) / 2)
              for i in range(len(stage["returns"]))]
        ax.scatter(xs, stage["returns"], s=18)
        if stage["returns"]:
            ax.hlines(stage["mean_return"], stage["step"] - 0.3, stage["step"] + 0.3)
    ax.set_xticks([s["step"] for s in report["stages"]])
    ax.set_xlabel("adaptation steps on the robot")
    ax.set_ylabel("episode return")
    ax.set_title(f"{report['family']}: returns per episode")
    ax = axes[1]
    if len(latency_us):
        ax.hist(latency_us, bins=60, color="tab:blue")
    t = report["timing"]["read_to_send_us"]
    ax.set_xlabel("read-to-send latency (us)")
    ax.set_title(f"p50 {t['p50']:.0f} us, p99 {t['p99']:.0f} us")
    ax = axes[2]
    times = report["deadline_miss_times_s"]
    ax.eventplot([times] if times else [[]], colors="tab:red")
    ax.set_xlabel("time (s)")
    j = report["timing"]["period_jitter_us"]
    ax.set_title(f"{report['timing']['deadline_misses']} deadline misses; jitter p99 "
                 f"{j['p99']:.0f} us")
    ax.set_yticks([])
    fig.suptitle(f"stopped: {report['stopped']}" + (f" ({report['detail']})"
                                                    if report["detail"] else ""))
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
