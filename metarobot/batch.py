"""BatchSim: many simulations of a task family stepped at once by the C++ core.

tasks x envs_per_task simulations -> one MuJoCo batch (mjbatch.h thread pool) -> either whole
episodes with a Gaussian MLP policy evaluated in C++ (``rollout``), or one env step with actions
from any policy (``step``, gymnasium's vector conventions with same-step auto-reset).

Simulation i runs task i // envs_per_task. Each simulation owns a random stream seeded from
(seed, first_stream + i): the same seed gives bit-identical results at any thread count, any
split of the same simulations into tasks x envs_per_task, and any split of them into batches
(a batch of simulations f.. of a larger one, built with first_stream f, reproduces them).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import mujoco
import numpy as np

from . import _core
from .checks import SEED_MAX
from .families import Task, TaskFamily, make_family

_MODEL_SIZES = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nsite", "ncam", "nlight",
                "nmocap", "neq", "ntendon", "nsensor", "nsensordata", "nuserdata", "nhfield",
                "nkey")


@dataclasses.dataclass
class Trajectories:
    """Time-major results of BatchSim.rollout, T steps of N simulations.

    All arrays are numpy; torch.from_numpy reads them without a copy.

    Attributes:
      observations: (T, N, obs_dim) float32, the observation before each action.
      actions: (T, N, act_dim) float32, the actions taken (sampled, before clipping).
      rewards: (T, N) float32.
      terminated: (T, N) bool, the step ended the episode in a terminal state.
      truncated: (T, N) bool, the step reached the horizon.
      valid: (T, N) bool, the step belongs to the episode (False after it ended).
      final_observations: (N, obs_dim) float32, the observation after the last valid step
        (to bootstrap a truncated episode).
      lengths: (N,) int32, number of valid steps.
      diverged: (N,) bool, the simulation diverged and its episode was cut.
      task_index: (N,) int64, the task each simulation ran.
      tasks: the tasks, in order.
      success: (T, N) bool, the step met the family's success condition (all False for
        families without one).
      metrics: (T, N, K) float32, the family's K metrics (TaskFamily.metrics, e.g. a velocity
        tracking error in m/s) at each step, 0 after the episode ended; None without metrics.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    final_observations: np.ndarray
    lengths: np.ndarray
    diverged: np.ndarray
    task_index: np.ndarray
    tasks: Tuple[Task, ...]
    success: Optional[np.ndarray] = None
    metrics: Optional[np.ndarray] = None

    @property
    def succeeded(self) -> np.ndarray:
        """(N,) bool, the episode met the success condition at some step."""
        if self.success is None:
            return np.zeros(self.rewards.shape[1], np.bool_)
        return (self.success & self.valid).any(axis=0)

    @property
    def dones(self) -> np.ndarray:
        """(T, N) bool, the step ended the episode (terminated or truncated)."""
        return self.terminated | self.truncated

    @property
    def returns(self) -> np.ndarray:
        """(N,) float64, undiscounted return of each episode."""
        return self.rewards.sum(axis=0, dtype=np.float64)


def _int_arg(value: Any, name: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} should be an integer {bound}, got {value!r}")
    return int(value)


def _float_array(value: Any, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    """value as a C-contiguous float64 array of shape, checked for dtype, shape, finiteness."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "f":
        raise ValueError(f"{name} should be floating point (float32 or float64), got dtype "
                         f"{arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} should have shape {shape}, got {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(f"{name} should be finite, got {arr[tuple(where)]} at index {where}")
    return np.ascontiguousarray(arr, dtype=np.float64)


class BatchSim:
    """N = len(tasks) x envs_per_task simulations of a task family.

    Args:
      family: a TaskFamily or a family name.
      tasks: tasks of that family; simulation i runs tasks[i // envs_per_task].
      envs_per_task: simulations per task.
      seed: seeds every simulation's random stream (reset noise, policy noise).
      num_threads: threads of the batch, the caller's included; 0: one per CPU.
      autoreset: step() resets an ended episode in the same call (gymnasium's SAME_STEP).
      first_stream: the random stream of simulation 0; simulation i draws from stream
        first_stream + i (a shard of a larger batch, whose simulations it reproduces).
    """

    def __init__(self, family: Union[str, TaskFamily], tasks: Sequence[Task],
                 envs_per_task: int = 1, seed: int = 0, num_threads: int = 0,
                 autoreset: bool = True, first_stream: int = 0):
        if isinstance(family, str):
            family = make_family(family)
        if not isinstance(family, TaskFamily):
            raise ValueError(f"family should be a TaskFamily or a family name, got "
                             f"{type(family).__name__}")
        if isinstance(tasks, Task):
            tasks = [tasks]
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("tasks should hold at least one task, got none")
        for task in tasks:
            family.check_task(task)
        envs_per_task = _int_arg(envs_per_task, "envs_per_task", 1)
        seed = _int_arg(seed, "seed", 0, SEED_MAX)
        num_threads = _int_arg(num_threads, "num_threads", 0)
        first_stream = _int_arg(first_stream, "first_stream", 0, SEED_MAX)

        self.family = family
        self.tasks = tasks
        self.envs_per_task = envs_per_task
        self.seed = seed
        self.first_stream = first_stream
        self.num_envs = len(tasks) * envs_per_task
        self.task_index = np.repeat(np.arange(len(tasks)), envs_per_task)
        self.models = self._task_models()
        spec = family.compile(self.models[0])
        params = np.array([[v for _, v in task.params] for task in tasks], dtype=np.float64)
        params = np.repeat(params.reshape(len(tasks), -1), envs_per_task, axis=0)
        actuators = family.actuator_settings(self.models[0],
                                             [tasks[t] for t in self.task_index])
        self._engine = _core.BatchEngine(
            [self.models[t]._address for t in self.task_index], **spec,
            params=params.ravel().tolist(), seed=seed, nthread=num_threads,
            autoreset=bool(autoreset), first_stream=first_stream, actuators=actuators)
        self.observation_dim = self._engine.obs_dim
        self.action_dim = self._engine.act_dim
        model = self.models[0]
        limited = model.actuator_ctrllimited.astype(bool)
        if family.normalize_actions:
            limited = np.ones_like(limited)
            model = None
        if family.actuators is not None and family.actuators.kind == "servo":
            # servo actions are joint target offsets, bounded only by the motors' limits
            limited = np.zeros_like(limited)
        ranges = (np.tile([-1.0, 1.0], (len(limited), 1)) if model is None
                  else self.models[0].actuator_ctrlrange)
        # policy actions: [-1, 1] when normalised onto the control ranges
        self.action_low = np.where(limited, ranges[:, 0], -np.inf).astype(np.float32)
        self.action_high = np.where(limited, ranges[:, 1], np.inf).astype(np.float32)
        self._started = False

    def _task_models(self) -> List[mujoco.MjModel]:
        """One compiled model per task; tasks that do not change the physics share one."""
        base = self.family.load_model()
        models = [self.family.task_model(base, task) for task in self.tasks]
        ref = models[0]
        for i, m in enumerate(models):
            for size in _MODEL_SIZES:
                if getattr(m, size) != getattr(ref, size):
                    raise ValueError(f"model of task {i} has {size}={getattr(m, size)}, task 0's "
                                     f"has {getattr(ref, size)}: one batch needs equal sizes")
        return models

    @property
    def num_threads(self) -> int:
        return self._engine.nthread

    @property
    def horizon(self) -> int:
        return self.family.horizon

    def __repr__(self) -> str:
        return (f"BatchSim({self.family.name}, {len(self.tasks)} tasks x {self.envs_per_task} "
                f"= {self.num_envs} simulations, obs {self.observation_dim}, act "
                f"{self.action_dim}, {self.num_threads} threads)")

    # ------------------------------------------------------------------------------ stepping

    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """Starts a new episode in every simulation; returns observations (N, obs_dim) float32.

        seed, when given, reseeds every simulation's random stream from (seed, first_stream +
        index) first.
        """
        if seed is not None:
            seed = _int_arg(seed, "seed", 0, SEED_MAX)
            self._engine.seed(seed)
        obs = np.empty((self.num_envs, self.observation_dim), np.float32)
        self._engine.reset(None, obs)
        self._started = True
        return obs

    def step(self, actions: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          Dict[str, np.ndarray]]:
        """One env step (frame_skip physics steps) of every simulation.

        Args:
          actions: (N, act_dim) float32 or float64 array or torch tensor, finite.

        Returns:
          observations (N, obs_dim) float32 (after auto-reset, the new episode's first),
          rewards (N,) float32, terminated (N,) bool, truncated (N,) bool, and info with
          'final_obs' (N, obs_dim) float32 valid where '_final_obs' (N,) bool is set (the
          episode ended this step), 'episode_return' (N,) float64 and 'episode_length' (N,)
          int32 of those episodes, 'diverged' (N,) bool (the simulation failed and its
          episode was ended, terminated) and 'success' (N,) bool (the step met the family's
          success condition; always False for families without one); with the family's K
          metrics, 'metrics' (N, K) float32, their values at this step (names in
          family.metrics).
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = _float_array(actions, "actions", (self.num_envs, self.action_dim))
        n, od = self.num_envs, self.observation_dim
        obs = np.empty((n, od), np.float32)
        reward = np.empty(n, np.float32)
        terminated = np.empty(n, np.bool_)
        truncated = np.empty(n, np.bool_)
        diverged = np.empty(n, np.bool_)
        final_obs = np.zeros((n, od), np.float32)
        ended = np.zeros(n, np.bool_)
        ep_return = np.zeros(n, np.float64)
        ep_length = np.zeros(n, np.int32)
        success = np.zeros(n, np.bool_)
        metrics = np.zeros((n, self._engine.nmetric), np.float32)
        self._engine.step(a, obs, reward, terminated.view(np.uint8), truncated.view(np.uint8),
                          diverged.view(np.uint8), final_obs, ended.view(np.uint8), ep_return,
                          ep_length, success.view(np.uint8), metrics)
        info = {"final_obs": final_obs, "_final_obs": ended, "episode_return": ep_return,
                "episode_length": ep_length, "diverged": diverged, "success": success}
        if metrics.shape[1]:
            info["metrics"] = metrics
        return obs, reward, terminated, truncated, info

    def rollout(self, policy: Any, horizon: Optional[int] = None,
                params: Union[None, Mapping[str, Any], Sequence[Mapping[str, Any]]] = None,
                deterministic: bool = False) -> Trajectories:
        """Whole episodes from reset with the policy evaluated in C++ (no Python per step).

        Args:
          policy: a GaussianMLPPolicy (or anything with its export()).
          horizon: steps per episode; default the family's.
          params: parameters to use instead of the policy's own, by name: one dict for every
            simulation, or a sequence of one dict per task (adapted parameters).
          deterministic: take the mean action instead of sampling.

        Returns:
          Trajectories with (horizon, N, ...) arrays. Episodes that terminate early are padded
          (valid False). Simulations are left at their final states; reset() before step().
        """
        horizon = self.horizon if horizon is None else _int_arg(horizon, "horizon", 1)
        if params is None or isinstance(params, Mapping):
            exported = [policy.export(params)]
            policy_index = None
        else:
            params = list(params)
            if len(params) != len(self.tasks):
                raise ValueError(f"params should hold one dict per task ({len(self.tasks)}), "
                                 f"got {len(params)}")
            exported = [policy.export(p) for p in params]
            policy_index = self.task_index.astype(np.int32)
        sizes = exported[0]["sizes"]
        if sizes[0] != self.observation_dim or sizes[-1] != self.action_dim:
            raise ValueError(f"policy maps {sizes[0]} -> {sizes[-1]}, {self.family.name} needs "
                             f"{self.observation_dim} -> {self.action_dim}")
        T, n, od, ad = horizon, self.num_envs, self.observation_dim, self.action_dim
        out = Trajectories(
            observations=np.empty((T, n, od), np.float32),
            actions=np.empty((T, n, ad), np.float32),
            rewards=np.empty((T, n), np.float32),
            terminated=np.empty((T, n), np.bool_),
            truncated=np.empty((T, n), np.bool_),
            valid=np.empty((T, n), np.bool_),
            final_observations=np.empty((n, od), np.float32),
            lengths=np.empty(n, np.int32),
            diverged=np.empty(n, np.bool_),
            task_index=self.task_index.copy(),
            tasks=self.tasks,
            success=np.zeros((T, n), np.bool_),
            metrics=np.zeros((T, n, self._engine.nmetric), np.float32),
        )
        policies = [(e["sizes"], e["weights"], e["biases"], e["log_std"], e["activation"])
                    for e in exported]
        self._engine.rollout(policies, policy_index, T, bool(deterministic),
                             out.observations, out.actions, out.rewards,
                             out.terminated.view(np.uint8), out.truncated.view(np.uint8),
                             out.valid.view(np.uint8), out.final_observations, out.lengths,
                             out.diverged.view(np.uint8), out.success.view(np.uint8),
                             out.metrics)
        if not out.metrics.shape[2]:
            out.metrics = None
        self._started = False
        return out

    # --------------------------------------------------------------------------------- state

    def get_state(self) -> Tuple[np.ndarray, np.ndarray]:
        """Every simulation's (qpos (N, nq), qvel (N, nv)), float64 copies."""
        qpos = np.empty((self.num_envs, self._engine.nq), np.float64)
        qvel = np.empty((self.num_envs, self._engine.nv), np.float64)
        self._engine.get_state(qpos, qvel)
        return qpos, qvel

    def set_state(self, qpos: Any, qvel: Any, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Writes qpos (n, nq) and qvel (n, nv) into the n simulations ids (default all), in
        order; returns their observations at the new state, (n, obs_dim) float32."""
        if ids is None:
            sel = np.arange(self.num_envs, dtype=np.int32)
        else:
            sel = np.asarray(ids)
            if sel.ndim != 1 or sel.dtype.kind not in "iu":
                raise ValueError(f"ids should be a 1-D sequence of integers, got {ids!r}")
            if sel.size and (sel.min() < 0 or sel.max() >= self.num_envs):
                raise ValueError(f"ids should be in [0, {self.num_envs}), got {sel.tolist()}")
            if np.unique(sel).size != sel.size:
                raise ValueError(f"ids should be unique, got {sel.tolist()}")
        order = np.argsort(sel, kind="stable")
        q = _float_array(qpos, "qpos", (sel.size, self._engine.nq))[order]
        v = _float_array(qvel, "qvel", (sel.size, self._engine.nv))[order]
        sorted_ids = np.ascontiguousarray(sel[order], dtype=np.int32)
        obs = np.zeros((self.num_envs, self.observation_dim), np.float32)
        self._engine.set_state(None if ids is None else sorted_ids, np.ascontiguousarray(q),
                               np.ascontiguousarray(v), obs)
        return obs[sel]

    def evaluate(self, before: Tuple[Any, Any], after: Tuple[Any, Any], actions: Any,
                 commands: Any = None, torques: Any = None
                 ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """The family's reward of steps taken outside the engine (a robot's, measured): each
        simulation's step from before = (qpos (N, nq), qvel (N, nv)) to after (the same) under
        actions (N, act_dim), the policy's actions as step() takes them.

        commands: (N, ncommand) the command in force during the step (vx, vy m/s, yaw rate
        rad/s for Go2Walk), default each simulation's own. torques: (N, act_dim) Nm, the
        servo motors' torques at the step's end (a robot's torque estimates; servo families
        only), default none. The terms read the state as they read a simulated one's (a
        forward pass at `after` with those torques), with the episode's carry: the last
        action and the feet's air time, so steps go in order from reset(); the simulations'
        states become `after`. Returns reward (N,) float32, terminated (N,) bool (the family's
        terminations at `after`) and the metrics (N, K) float32 or None.
        """
        if not self._started:
            raise RuntimeError("call reset() before evaluate()")
        n, e = self.num_envs, self._engine
        if not (isinstance(before, tuple) and isinstance(after, tuple)
                and len(before) == 2 and len(after) == 2):
            raise ValueError("before and after should be (qpos, qvel) pairs, as get_state() "
                             "gives")
        q0 = _float_array(before[0], "qpos before", (n, e.nq))
        v0 = _float_array(before[1], "qvel before", (n, e.nv))
        q1 = _float_array(after[0], "qpos", (n, e.nq))
        v1 = _float_array(after[1], "qvel", (n, e.nv))
        a = _float_array(actions, "actions", (n, self.action_dim))
        c = None
        if commands is not None:
            if not e.ncommand:
                raise ValueError(f"{self.family.name} has no commands, got some")
            c = _float_array(commands, "commands", (n, e.ncommand))
        t = None
        if torques is not None:
            if self.family.actuators is None or self.family.actuators.kind != "servo":
                raise ValueError(f"torques are for servo families; {self.family.name}'s "
                                 f"motors' force is their control")
            t = _float_array(torques, "torques", (n, self.action_dim))
        reward = np.empty(n, np.float32)
        terminated = np.empty(n, np.bool_)
        metrics = np.zeros((n, e.nmetric), np.float32)
        e.evaluate(np.ascontiguousarray(np.concatenate([q0, v0], axis=1)), q1, v1, a, c, t,
                   reward, terminated.view(np.uint8), metrics)
        return reward, terminated, (metrics if e.nmetric else None)

    def observation_space(self):
        import gymnasium as gym
        return gym.spaces.Box(-np.inf, np.inf, (self.observation_dim,), np.float32)

    def action_space(self):
        import gymnasium as gym
        return gym.spaces.Box(self.action_low, self.action_high, (self.action_dim,), np.float32)
