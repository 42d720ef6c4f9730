"""Held-out evaluation and one-task adaptation of a checkpoint, the jobs that test how well a
meta-trained controller adapts.

    result = evaluate("runs/cheetah-dir", tasks=40, steps=3)   # returns after 0..3 steps
    result["mean_return"], result["stderr"]                     # per step, over tasks
    adapted, returns = adapt_to_task("runs/cheetah-dir", {"direction": -1}, steps=1)

Both adapt with the step sizes of metarobot.adaptation.step_sizes, the rule the robot's
controller follows too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import checkpoint, checks
from . import device as device_module
from .adaptation import adaptation_curve, given_step_sizes, step_sizes
from .cluster import RayWorkers
from .config import ADAPT_STREAM, CLUSTERS, EVAL_STREAM, TrainConfig, stream_seed
from .families import Task
from .runs import LoadedPolicy, load_policy


def _load_checked(path: Union[str, Path], steps: int, seed: int, threads: int, lr: Any,
                  device: str) -> LoadedPolicy:
    """The checkpoint at path, once the settings common to evaluate and adapt hold and this
    machine has the device (bad input is refused before the checkpoint is read)."""
    checks.NONNEGATIVE_INT.check(steps, "steps")
    checks.SEED.check(seed, "seed")
    checks.NONNEGATIVE_INT.check(threads, "threads")
    if lr is not None:
        given_step_sizes(lr)
    device_module.resolve(device)  # a device this machine has
    return load_policy(path)


def evaluate(path: Union[str, Path], tasks: int = 40, steps: int = 3, seed: int = 0,
             trajectories: Optional[int] = None,
             lr: Optional[Union[float, Sequence[float]]] = None,
             json_path: Optional[Union[str, Path]] = None,
             plot_path: Optional[Union[str, Path]] = None, threads: int = 0,
             baseline_fit: Optional[str] = None, device: str = "cpu",
             cluster: str = "local", ray_address: Optional[str] = None, workers: int = 1,
             threads_per_worker: int = 1) -> Dict[str, Any]:
    """Held-out evaluation of a checkpoint: tasks drawn from a stream disjoint from training's,
    mean return and standard error over tasks after 0..steps adaptation steps. lr: the step
    size of each step (the last repeats); default the checkpoint's (adaptation.step_sizes:
    Meta-SGD's learned ones, Reptile's inner_lr, MAML's inner_lr then half of it, the MAML
    paper's 0.1 then 0.05). baseline_fit: the advantages' baseline order (see
    TrainConfig.baseline_fit); default the checkpoint's training order; 'fresh' is the order
    of the paper's evaluation script. device: where the
    adaptation steps run (cpu, cuda, auto). cluster, ray_address, workers, threads_per_worker:
    as TrainConfig's; on a cluster the tasks are split over the workers, with the same
    results."""
    checks.COUNT.check(tasks, "tasks")
    checks.optional(checks.COUNT, trajectories, "trajectories")
    loaded = _load_checked(path, steps, seed, threads, lr, device)
    policy, config, family, info = loaded.policy, loaded.config, loaded.family, loaded.info
    sizes = step_sizes(config, loaded.step_sizes, lr)
    baseline_fit = config.baseline_fit if baseline_fit is None else baseline_fit
    held_out = family.sample_tasks(tasks, stream_seed(seed, EVAL_STREAM, 0))
    k = trajectories if trajectories is not None else (40 if config.family == "AntDir" else 20)
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster should be one of {CLUSTERS}, got {cluster!r}")
    if cluster == "local":
        if (workers, ray_address) != (1, None):
            raise ValueError("workers and ray_address need cluster 'ray'")
        curve = adaptation_curve(policy, family, held_out, steps, k, sizes,
                                    stream_seed(seed, EVAL_STREAM, 1), gamma=config.gamma,
                                    gae_lambda=config.gae_lambda, threads=threads,
                                    baseline_fit=baseline_fit, device=device,
                                    update=config.inner_rule)
    else:
        # the run's settings with the evaluation's cluster and baseline order, checked
        # together (one worker per task at most: each evaluates whole tasks)
        on = TrainConfig.from_dict(dict(
            config.to_dict(), device=device, cluster=cluster, ray_address=ray_address,
            workers=min(int(checks.COUNT.check(workers, "workers")), tasks),
            threads_per_worker=threads_per_worker, baseline_fit=baseline_fit))
        with RayWorkers(on, training=False) as pool:
            theta = {n: p.detach() for n, p in policy.params().items()}
            curve = pool.curves(theta, held_out, steps, k, sizes,
                                stream_seed(seed, EVAL_STREAM, 1), baseline_fit)
    mean, stderr = over_tasks(curve.returns)
    result = {"family": config.family, "checkpoint": str(path),
              "iteration": int(info.get("iteration", -1)) + 1, "tasks": tasks,
              "trajectories_per_task": k, "baseline_fit": baseline_fit,
              "step_sizes": "learned" if isinstance(sizes, dict) else
              [float(x) for x in sizes],
              "steps": list(range(steps + 1)),
              "mean_return": [float(x) for x in mean], "stderr": [float(x) for x in stderr],
              # the family's metrics (e.g. a velocity tracking error, m/s) and terminations
              # per minute (falls, for a legged robot), per step, over tasks
              "measures": {name: dict(zip(("mean", "stderr"),
                                          ([float(x) for x in v] for v in over_tasks(values))))
                           for name, values in curve.measures.items()},
              "per_task": curve.returns.T.tolist(),
              "held_out_tasks": [t.as_dict() for t in held_out]}
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
    if plot_path is not None:
        plot_adaptation(result, plot_path)
    return result


def over_tasks(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over tasks (axis 1) of (steps + 1, M) values."""
    mean = values.mean(1)
    n = values.shape[1]
    stderr = values.std(1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, stderr


def plot_adaptation(result: Dict[str, Any], path: Union[str, Path]) -> None:
    """A PNG of mean return against adaptation steps, with standard errors."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.errorbar(result["steps"], result["mean_return"], yerr=result["stderr"], marker="o",
                capsize=3, label="metarobot")
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return")
    ax.set_title(f"{result['family']}: {result['tasks']} held-out tasks")
    ax.set_xticks(result["steps"])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    plt.close(fig)


def adapt_to_task(path: Union[str, Path], task: Union[Task, Dict[str, float]], steps: int = 1,
                  trajectories: int = 20, lr: Optional[float] = None, seed: int = 0,
                  out: Optional[Union[str, Path]] = None, threads: int = 0,
                  device: str = "cpu") -> Tuple[Dict[str, torch.Tensor], List[float]]:
    """Adapts a checkpoint's policy to one task; returns the adapted parameters and the mean
    return after 0..steps steps, and saves them as a checkpoint at out when given. lr: the
    step size of every step; default the checkpoint's (adaptation.step_sizes, as evaluate
    and the robot)."""
    checks.COUNT.check(steps, "steps")
    checks.COUNT.check(trajectories, "trajectories")
    loaded = _load_checked(path, steps, seed, threads, lr, device)
    policy, config, family, info = loaded.policy, loaded.config, loaded.family, loaded.info
    sizes = step_sizes(config, loaded.step_sizes, lr)
    if isinstance(task, dict):
        task = family.task(**task)
    family.check_task(task)
    curve = adaptation_curve(policy, family, [task], steps, trajectories, sizes,
                             stream_seed(seed, ADAPT_STREAM, 0), gamma=config.gamma,
                             gae_lambda=config.gae_lambda, threads=threads,
                             baseline_fit=config.baseline_fit, device=device,
                             update=config.inner_rule)
    adapted = curve.per_task[0]
    returns = [float(x) for x in curve.returns[:, 0]]
    if out is not None:
        info = dict(info, adapted_to=task.as_dict(), adaptation_steps=steps,
                    adaptation_returns=returns)
        checkpoint.save(out, adapted, info)
    return adapted, returns
