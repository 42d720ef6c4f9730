"""The policy as the robot receives it: observations in, the actuators' controls out.

    deployed = deployed_policy(policy, None, family)      # obs (B, obs_dim) -> controls (B, nu)

DeployedPolicy is the runtime module export writes (ONNX) and the runner evaluates: the
Gaussian policy's mean action mapped onto the actuators' control ranges exactly as the family
does. observation_layout, observation_names and action_names describe the interface a robot
must match (the runner's agreement check, the export's metadata).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import mujoco
import numpy as np
import torch
from torch import nn

from .. import terms as T
from ..families import TaskFamily
from ..policy import GaussianMLPPolicy, mlp_mean


class DeployedPolicy(nn.Module):
    """obs (B, obs_dim) float32 -> controls (B, nu) float32, the robot's commands: the
    policy's mean action mapped onto the actuators (see controls). mean() and controls() are
    also used apart: a runner that samples actions for adaptation maps mean + noise."""

    def __init__(self, policy: GaussianMLPPolicy, params: Dict[str, torch.Tensor],
                 ctrlrange: np.ndarray, limited: np.ndarray, normalized: bool):
        super().__init__()
        self.nlayers, self.activation = policy.nlayers, policy.activation
        self.names = [n for n, _ in policy.named_parameters()]
        for n in self.names:
            self.register_buffer(n.replace(".", "_"), params[n].detach().float().clone())
        lo, hi = ctrlrange[:, 0].astype(np.float64), ctrlrange[:, 1].astype(np.float64)
        self.normalized = bool(normalized)
        if self.normalized:  # every actuator: centre + a * half-range, clipped to the range
            limited = np.ones_like(limited, dtype=bool)
        low = np.where(limited, lo, -np.inf)
        high = np.where(limited, hi, np.inf)
        self.register_buffer("ctrl_low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("ctrl_high", torch.tensor(high, dtype=torch.float32))
        centre = 0.5 * (lo + hi) if self.normalized else np.zeros_like(lo)
        half = 0.5 * (hi - lo) if self.normalized else np.ones_like(lo)
        self.register_buffer("ctrl_centre", torch.tensor(centre, dtype=torch.float32))
        self.register_buffer("ctrl_half", torch.tensor(half, dtype=torch.float32))

    def params(self) -> Dict[str, torch.Tensor]:
        return {n: getattr(self, n.replace(".", "_")) for n in self.names}

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the policy's mean action."""
        return mlp_mean(self.params(), obs, self.nlayers, self.activation)

    def controls(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, act_dim) policy actions -> (B, nu) controls on the actuators' ranges."""
        return torch.clamp(self.ctrl_centre + actions * self.ctrl_half, self.ctrl_low,
                           self.ctrl_high)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.controls(self.mean(obs))


def deployed_policy(policy: GaussianMLPPolicy, params: Optional[Dict[str, torch.Tensor]],
                    family: TaskFamily, model: Optional[mujoco.MjModel] = None
                    ) -> DeployedPolicy:
    """The DeployedPolicy of a policy (its own parameters, or params by name) on family."""
    model = model or family.load_model()
    source = {n: p for n, p in policy.named_parameters()} if params is None else params
    return DeployedPolicy(policy, source, np.array(model.actuator_ctrlrange),
                          clipped_controls(family, model), family.normalize_actions)


def clipped_controls(family: TaskFamily, model: mujoco.MjModel) -> np.ndarray:
    """(nu,) bool: which controls are clipped to their actuator's control range, as the
    simulator does: every one for normalised actions, the limited actuators' otherwise, none
    for servo families (their controls are actions a, the target default_pose + action_scale
    * a; the ranges of the model's motors are torques the servo law limits on its own)."""
    if family.actuators is not None and family.actuators.kind == "servo":
        return np.zeros(model.nu, bool)
    if family.normalize_actions:
        return np.ones(model.nu, bool)
    return np.array(model.actuator_ctrllimited, dtype=bool)


def observation_layout(family: TaskFamily, model: mujoco.MjModel) -> List[Dict[str, Any]]:
    """The observation's terms in order: name, [start, stop) in the observation vector, and
    for joint positions and velocities the first qpos / qvel index they hold."""
    index = {n: i for i, n in enumerate(family.parameter_names)}
    out, at = [], 0
    for term in family.observation:
        size = term.compile(model, index)[3]
        entry: Dict[str, Any] = {"name": repr(term), "start": at, "stop": at + size}
        if isinstance(term, (T.Qpos, T.Qvel)):
            entry["source"] = "qpos" if isinstance(term, T.Qpos) else "qvel"
            entry["first"] = int(term.start)
        out.append(entry)
        at += size
    return out


def observation_names(family: TaskFamily, model: mujoco.MjModel) -> Tuple[str, ...]:
    """A name per observation entry, (obs_dim,): "qpos JOINT" / "qvel JOINT" for joint
    positions and velocities (a joint of several coordinates gets [k] after its name), else
    the term and the entry's index in it, e.g. "SubtreeCom(body='torso')[2]"."""
    qpos_owner: Dict[int, Tuple[str, int]] = {}
    qvel_owner: Dict[int, Tuple[str, int]] = {}
    for j in range(model.njnt):
        name = model.joint(j).name or f"joint {j}"
        nq = {0: 7, 1: 4}.get(int(model.jnt_type[j]), 1)   # free, ball, else one coordinate
        nv = {0: 6, 1: 3}.get(int(model.jnt_type[j]), 1)
        for k in range(nq):
            qpos_owner[int(model.jnt_qposadr[j]) + k] = (name, k if nq > 1 else -1)
        for k in range(nv):
            qvel_owner[int(model.jnt_dofadr[j]) + k] = (name, k if nv > 1 else -1)
    out: List[str] = []
    for term in observation_layout(family, model):
        source = term.get("source")
        for k in range(term["stop"] - term["start"]):
            owner = None
            if source == "qpos":
                owner = qpos_owner.get(term["first"] + k)
            elif source == "qvel":
                owner = qvel_owner.get(term["first"] + k)
            if owner is None:
                out.append(f"{term['name']}[{k}]")
            else:
                out.append(f"{source} {owner[0]}" + (f"[{owner[1]}]" if owner[1] >= 0 else ""))
    return tuple(out)


def action_names(model: mujoco.MjModel) -> Tuple[str, ...]:
    """The actuators' names in control order (actuator_i for an unnamed one), (nu,)."""
    return tuple(model.actuator(i).name or f"actuator_{i}" for i in range(model.nu))


def control_period(family: TaskFamily, model: mujoco.MjModel) -> float:
    """Seconds between two controls: the family's env step."""
    return float(model.opt.timestep * family.frame_skip)
