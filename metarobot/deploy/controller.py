"""A policy to run on a robot: its parameters, the map onto the actuators, the family's joint
limits and observation layout, and adaptation on the robot's episodes by the inner step
training and evaluation use, with the step sizes of the one rule (adaptation.step_sizes).

    controller = Controller.from_checkpoint("checkpoints/HalfCheetahVel.safetensors")
    action, controls = controller.act(obs, sample=False)    # (act_dim,), (nu,)
    controller.adapt(episodes, step=0)                        # between episodes, never within
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import mujoco
import numpy as np
import torch

from .. import meta
from ..adaptation import StepSizes, expand, step_sizes
from ..batch import Trajectories
from ..families import TaskFamily
from ..policy import GaussianMLPPolicy
from ..runs import LoadedPolicy, load_policy
from ..samples import process
from .deployment import (check_deployment_config, deployment_config, motor_from_policy,
                         motor_names, same_policy_interface)
from .policy import DeployedPolicy, deployed_policy, observation_layout


def load_checkpoint(path: Union[str, Path]) -> LoadedPolicy:
    """A checkpoint's policy, settings, family and learned step sizes; nothing about this
    machine is checked (a checkpoint trained on a GPU runs on a robot's CPU)."""
    return load_policy(path)


@dataclasses.dataclass
class Episode:
    """What one episode on the robot gave.

    obs, actions: per cycle the runner acted, the observation the policy saw (obs_dim,) and
    its action before the map onto the actuators (act_dim,). rewards: per action, the
    robot's reward from that observation to the next one received (the difference of the
    robot's running returns, so the steps whose observations were lost count too); NaN
    when unknown (no reward from the robot, or no later observation). steps: the robot's
    step count at the last observation received; ret: the robot's return then (NaN without
    rewards); received: observations received (step 0 included)."""

    obs: List[np.ndarray] = dataclasses.field(default_factory=list)
    actions: List[np.ndarray] = dataclasses.field(default_factory=list)
    rewards: List[float] = dataclasses.field(default_factory=list)
    steps: int = 0
    ret: float = math.nan
    received: int = 0
    terminated: bool = False
    complete: bool = False

    @property
    def missed(self) -> int:
        """Observations of steps 0..steps that never reached the runner."""
        return self.steps + 1 - self.received

    def observe(self, step: int, ret: float) -> None:
        """Records an observation of the robot's step with its running return; the reward of
        the action before it is the return gained since the previous observation."""
        if self.actions and len(self.rewards) < len(self.actions):
            self.rewards.append(ret - self.ret)
        self.steps, self.ret = step, ret
        self.received += 1


class Controller:
    """A policy to run on a robot: its parameters, the map onto the actuators, the family's
    joint limits and observation layout, and the inner step's settings. step_sizes: one
    per adaptation step (the last repeats), or Meta-SGD's learned per-entry step sizes.
    deploy: an exported deployment config (deploy.json) to run by, default the family's own
    (deployment.deployment_config); it may number the motors otherwise, nothing else."""

    def __init__(self, policy: GaussianMLPPolicy, family: TaskFamily,
                 step_sizes: StepSizes = (0.1,), gamma: float = 0.99, gae_lambda: float = 1.0,
                 seed: int = 0, update: Optional[meta.InnerUpdate] = None,
                 deploy: Optional[Dict[str, Any]] = None):
        self.policy, self.family = policy, family
        self.spec = meta.PolicySpec(policy.nlayers, policy.activation)
        self.model: mujoco.MjModel = family.load_model()
        self.params: Dict[str, torch.Tensor] = {k: v.detach().clone()
                                                for k, v in policy.params().items()}
        self.step_sizes = step_sizes
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.update = update or meta.InnerUpdate()
        self.generator = torch.Generator().manual_seed(seed)
        self.layout = observation_layout(family, self.model)
        self._deployed = deployed_policy(policy, self.params, family, self.model)
        own = deployment_config(family, model=self.model)
        if deploy is not None:
            # an exported config may renumber the motors, nothing the weights depend on
            check_deployment_config(deploy)
            differences = same_policy_interface(deploy, own)
            if differences:
                raise ValueError(f"the deployment config is not this policy's: "
                                 f"{differences[0]}" + (f" (and {len(differences) - 1} more)"
                                                        if len(differences) > 1 else ""))
        self.deploy: Dict[str, Any] = own if deploy is None else deploy
        # controls in the robot's motor order = controls in the policy's order [this]
        self.motor_from_policy = motor_from_policy(self.deploy)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], lr: Optional[float] = None,
                        seed: int = 0, deploy: Optional[Dict[str, Any]] = None
                        ) -> "Controller":
        """lr: the step size of every adaptation step; default the checkpoint's (the one
        rule: learned step sizes, else Reptile's inner_lr, else MAML's inner_lr then half).
        deploy: an exported deployment config to run by (see the class)."""
        loaded = load_checkpoint(path)
        config = loaded.config
        return cls(loaded.policy, loaded.family, step_sizes(config, loaded.step_sizes, lr),
                   config.gamma, config.gae_lambda, seed, config.inner_rule, deploy)

    @property
    def deployed(self) -> DeployedPolicy:
        return self._deployed

    def step_size(self, step: int):
        """The step size of adaptation step `step` (0: the first)."""
        return expand(self.step_sizes, step + 1)[step]

    def interface(self) -> Dict[str, object]:
        """What a robot must match, from the deployment config: family, observation names,
        action names (the motors in the robot's order), control period."""
        return {"family": self.deploy["family"],
                "observation_names": tuple(self.deploy["observation"]["names"]),
                "action_names": tuple(motor_names(self.deploy)),
                "control_period": self.deploy["rates"]["control_period_s"]}

    def set_params(self, params: Dict[str, torch.Tensor]) -> None:
        """Swaps the policy (between episodes)."""
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self._deployed = deployed_policy(self.policy, self.params, self.family, self.model)

    def act(self, obs: np.ndarray, sample: bool) -> Tuple[np.ndarray, np.ndarray]:
        """(policy action (act_dim,), controls (nu,)) for one observation: the mean, or with
        sample the mean plus the policy's noise (the data of an inner step). The action is in
        the policy's order; the controls in the robot's motor order (the deployment
        config's)."""
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(obs, np.float32))[None]
            action = self._deployed.mean(x)
            if sample:
                std = torch.exp(self.params["log_std"]).float()
                action = action + std * torch.randn(action.shape, generator=self.generator)
            controls = self._deployed.controls(action)
        controls = controls[0].numpy().astype(np.float64)[self.motor_from_policy]
        return action[0].numpy(), controls

    def joint_checks(self) -> List[tuple]:
        """(obs index, kind 'qpos' or 'qvel', joint name, low, high, scale, offset) to watch:
        the entry reads scale * (raw - offset) (the deployment config's rule), the joint's
        range [low, high] is in raw units (rad, m)."""
        m = self.model
        dof_joint = {int(m.jnt_dofadr[j]): j for j in range(m.njnt)}
        qpos_joint = {int(m.jnt_qposadr[j]): j for j in range(m.njnt)}
        out = []
        for term in self.deploy["observation"]["terms"]:
            source = term.get("source")
            if source not in ("qpos", "qvel"):
                continue
            offsets = term["offset"] or [0.0] * term["size"]
            for k in range(term["size"]):
                at, scale, offset = term["start"] + k, term["scale"], offsets[k]
                if scale == 0:  # the entry says nothing of the joint
                    continue
                if source == "qpos":
                    j = qpos_joint.get(term["first"] + k)
                    if j is None or not m.jnt_limited[j]:
                        continue
                    if int(m.jnt_type[j]) not in (int(mujoco.mjtJoint.mjJNT_HINGE),
                                                  int(mujoco.mjtJoint.mjJNT_SLIDE)):
                        continue
                    lo, hi = m.jnt_range[j]
                    out.append((at, "qpos", m.joint(j).name, lo, hi, scale, offset))
                else:
                    j = dof_joint.get(term["first"] + k)
                    name = m.joint(j).name if j is not None else f"dof {term['first'] + k}"
                    out.append((at, "qvel", name, -math.inf, math.inf, scale, offset))
        return out

    def adapt(self, episodes: Sequence[Episode], step: int, lr=None) -> None:
        """Adaptation step `step` (0: the first) on the robot's episodes: the checkpoint's
        inner update, as in training and evaluation, with step_size(step) unless lr."""
        traj = episodes_to_trajectories(episodes, self.family)
        batch = process(traj, 1, self.gamma, self.gae_lambda)
        batched = step > 0
        source = {k: (v[None] if batched else v) for k, v in self.params.items()}
        size = self.step_size(step) if lr is None else lr
        adapted = self.update.step(self.spec, source, batch, size, batched)
        self.set_params({k: v[0] for k, v in adapted.items()})


def episodes_to_trajectories(episodes: Sequence[Episode], family: TaskFamily) -> Trajectories:
    """Robot episodes as the simulator's Trajectories of one task (time-major, padded): the
    actions whose reward is known (a trailing action of an interrupted episode has none).
    ValueError when no episode has such an action (the robot reports no rewards)."""
    usable = []
    for e in episodes:
        n = len(e.rewards)
        while n and math.isnan(e.rewards[n - 1]):
            n -= 1
        if n and not any(math.isnan(r) for r in e.rewards[:n]):
            usable.append((e, n))
    if not usable:
        raise ValueError("no episode with a rewarded step to adapt on (does the robot report "
                         "rewards?)")
    T = max(n for _, n in usable)
    N = len(usable)
    obs_dim, act_dim = len(usable[0][0].obs[0]), len(usable[0][0].actions[0])
    obs = np.zeros((T, N, obs_dim), np.float32)
    act = np.zeros((T, N, act_dim), np.float32)
    rew = np.zeros((T, N), np.float32)
    term = np.zeros((T, N), bool)
    trunc = np.zeros((T, N), bool)
    valid = np.zeros((T, N), bool)
    lengths = np.zeros(N, np.int32)
    for i, (e, n) in enumerate(usable):
        obs[:n, i] = np.stack(e.obs[:n])
        act[:n, i] = np.stack(e.actions[:n])
        rew[:n, i] = e.rewards[:n]
        valid[:n, i] = True
        ended = e.complete and n == len(e.actions)
        term[n - 1, i] = ended and e.terminated
        trunc[n - 1, i] = not term[n - 1, i]
        lengths[i] = n
    task = family.sample_tasks(1, seed=0)[0]
    return Trajectories(obs, act, rew, term, trunc, valid, obs[-1].copy(), lengths,
                        np.zeros(N, bool), np.zeros(N, np.int64), (task,))
