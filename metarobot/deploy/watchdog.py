"""The runner's watchdog: what it allows (Limits), its checks, each a small function that
raises Stop with the reason a run ends, and the agreement check of a robot against a policy
before the first command (Mismatch).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Sequence

import numpy as np

from .controller import Controller
from .deployment import robot_mismatches
from .robot import Reading, RobotSpec


class Stop(Exception):
    """The watchdog's verdict: why the run stops now."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Mismatch(ValueError):
    """The robot is not the one the policy was made for (the first difference, in words)."""


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

    def __post_init__(self):
        for name in ("stale_after", "max_velocity"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} should be a positive number, got {value!r}")
        if not (isinstance(self.joint_margin, (int, float)) and self.joint_margin >= 0):
            raise ValueError(f"joint_margin should be >= 0, got {self.joint_margin!r}")
        if isinstance(self.max_misses, bool) or not isinstance(self.max_misses, int) \
                or self.max_misses < 1:
            raise ValueError(f"max_misses should be an integer >= 1, got {self.max_misses!r}")


def check_stale(now: float, last_fresh: float, limits: Limits) -> None:
    """Stop when no new observation came for longer than limits.stale_after."""
    if now - last_fresh > limits.stale_after:
        raise Stop("stale observation", f"no new observation for {(now - last_fresh) * 1e3:.0f}"
                                        f" ms (limit {limits.stale_after * 1e3:.0f} ms)")


def check_safe(reading: Reading, spec: RobotSpec) -> None:
    """Stop when the robot says it is in its safe state (it obeys no controls)."""
    if reading.safe:
        raise Stop("robot safe state", f"the robot reports its safe state at step "
                                       f"{reading.step} (it had no command within its "
                                       f"command timeout of {spec.command_timeout * 1e3:g} ms)")


def check_observation(reading: Reading, joints: Sequence[tuple], limits: Limits) -> None:
    """Stop on a non-finite observation, or a joint outside its range or velocity bound."""
    obs = reading.obs
    if not np.isfinite(obs).all():
        raise Stop("non-finite observation", f"at step {reading.step}")
    for index, kind, name, lo, hi, scale, offset in joints:
        v = obs[index] / scale + offset  # the raw reading (rad, m, rad/s), as the limits are
        if kind == "qvel" and abs(v) > limits.max_velocity:
            raise Stop("joint limit", f"{name} velocity {v:.3g} beyond "
                                      f"+-{limits.max_velocity:g}")
        if kind == "qpos" and not lo - limits.joint_margin <= v <= hi + limits.joint_margin:
            raise Stop("joint limit", f"{name} at {v:.3g}, range [{lo:.3g}, {hi:.3g}] +- "
                                      f"{limits.joint_margin:g}")


def check_controls(controls: np.ndarray, step: int) -> None:
    if not np.isfinite(controls).all():
        raise Stop("non-finite controls", f"at step {step}")


def check_misses(consecutive: int, limits: Limits) -> None:
    if consecutive >= limits.max_misses:
        raise Stop("deadline misses", f"{consecutive} cycles in a row finished past their "
                                      f"deadline")


def agreement(spec: RobotSpec, controller: Controller) -> List[str]:
    """The differences between the robot's spec and the controller's deployment config, each
    naming the field, what was expected and what came (deployment.robot_mismatches)."""
    return robot_mismatches(controller.deploy, spec)
