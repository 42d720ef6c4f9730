"""Runs on disk: a run directory's checkpoints and progress, a checkpoint read back as a policy,
and the one rule for resuming a run.

    loaded = load_policy("runs/cheetah-dir")      # LoadedPolicy: policy, config, family, ...
    config = resumed_config(saved, {"iterations": 200})   # saved settings, these changed
    run_from_checkpoint("checkpoints/AntDir.safetensors", "runs/ant-dir")   # a run of it

Reading a checkpoint checks its values, never this machine: a checkpoint whose run trained
on a GPU loads on a CPU-only robot computer (the device is asked where it is used).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from . import checkpoint, meta
from .config import PAPER_MAX_KL, PAPER_TRAJECTORIES, TrainConfig, make_policy
from .families import TaskFamily, make_family
from .policy import GaussianMLPPolicy

# progress.csv's columns, one row per iteration: mean return before and after adaptation
# (trpo does not adapt in training: its post_return is its pre_return, the same batch), seconds
# per phase, the outer step's KL and line-search backtracks
PROGRESS_FIELDS = ["iteration", "pre_return", "post_return", "time_sampling", "time_returns",
               "time_inner", "time_outer", "time_total", "kl", "backtracks", "wall_clock",
               "time_transfer"]

# What --resume may change of a run's saved settings: none of them changes its results
# (beyond float32 rounding between devices): how many threads, workers or machines compute
# the same chunks of the same arithmetic.
RESUME_MAY_CHANGE = ("iterations", "time_budget", "device", "cuda_graphs", "cluster",
                     "ray_address", "workers", "threads_per_worker", "threads")
_RAY_SETTINGS = {"ray_address": None, "workers": 1, "threads_per_worker": 1}


def in_force(name: str, value: Any, family: str) -> Any:
    """A setting's value as the run uses it: None for max_kl and trajectories_per_task stands
    for the paper's value of the family."""
    if value is None and name == "max_kl":
        return PAPER_MAX_KL.get(family, 0.01)
    if value is None and name == "trajectories_per_task":
        return PAPER_TRAJECTORIES.get(family, 20)
    if name == "hidden_sizes":
        return tuple(value)
    return value


def resumed_config(saved: TrainConfig, given: Mapping[str, Any]) -> TrainConfig:
    """The settings a resumed run continues with, the one rule for every way to resume: the
    saved settings win; the RESUME_MAY_CHANGE ones that `given` holds replace theirs (back to
    cluster 'local', the run's Ray settings lapse unless given); any other given setting must
    ask for the value in force, else ValueError naming each that asks for another."""
    conflicts = []
    for name, value in given.items():
        if name in RESUME_MAY_CHANGE:
            continue
        if name not in saved.to_dict():
            raise ValueError(f"unknown training setting {name!r}")
        if name == "reptile_anneal_iterations" and value is not None and \
                value == given.get("iterations") and given.get("reptile_epsilon_final"):
            # a TrainConfig fills it in from iterations: the given config's own, not a request
            continue
        has = in_force(name, getattr(saved, name), saved.family)
        want = in_force(name, value, saved.family)
        if want != has:
            flag = "--set" if name == "family_overrides" else "--" + name.replace("_", "-")
            conflicts.append(f"{flag} {want!r} (the run has {has!r})")
    if conflicts:
        raise ValueError("a resumed run continues with its saved settings; only "
                         + ", ".join("--" + n.replace("_", "-") for n in RESUME_MAY_CHANGE)
                         + " may change, but got " + "; ".join(conflicts))
    changed = {k: v for k, v in given.items() if k in RESUME_MAY_CHANGE}
    if changed.get("cluster") == "local":
        changed = dict(_RAY_SETTINGS, **changed)
    return TrainConfig.from_dict(dict(saved.to_dict(), **changed))


def save_checkpoint(out: Path, theta: meta.Params, config: TrainConfig, iteration: int,
                    wall: float, keep: bool, carry: Optional[np.ndarray] = None,
                    model_digest: Optional[str] = None) -> None:
    """out/checkpoints/latest.safetensors after `iteration` (0-based), and a copy of it named
    by the iteration count when keep. model_digest: the family's model the run used
    (TaskFamily.model_digest), checked when the run resumes."""
    info = {"config": config.to_dict(), "iteration": iteration, "wall_clock": wall,
            "model_digest": model_digest,
            "baseline_carry": None if carry is None else [float(x) for x in carry],
            "family": config.family, "policy": {
                "hidden_sizes": list(config.hidden_sizes), "activation": config.activation}}
    checkpoint.save(out / "checkpoints" / "latest.safetensors", theta, info)
    if keep:
        checkpoint.save(out / "checkpoints" / f"iter_{iteration + 1:06d}.safetensors", theta,
                        info)


def check_params(params: Dict[str, torch.Tensor], theta: meta.Params, path: Path) -> None:
    """ValueError unless params (read from path) has theta's names and shapes."""
    if set(params) != set(theta):
        raise ValueError(f"{str(path)!r} holds parameters {sorted(params)}, the policy has "
                         f"{sorted(theta)}")
    for n, p in theta.items():
        if params[n].shape != p.shape:
            raise ValueError(f"{str(path)!r}: parameter {n} has shape {tuple(params[n].shape)}, "
                             f"the policy needs {tuple(p.shape)}")


def read_rows(path: Path, below: int) -> List[Dict[str, str]]:
    """Rows of an earlier progress.csv for iterations before below (resume drops the rest)."""
    if below == 0 or not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["iteration"]) < below]


@dataclasses.dataclass
class LoadedPolicy:
    """A checkpoint read back: the policy with its parameters, the run's settings, its task
    family, the checkpoint's metadata, and Meta-SGD's learned step sizes (None if it has
    none; an adapted policy saved by adapt holds the policy alone)."""

    policy: GaussianMLPPolicy
    config: TrainConfig
    family: TaskFamily
    info: Dict[str, Any]
    step_sizes: Optional[meta.Params]


def load_policy(path: Union[str, Path], family: Optional[str] = None) -> LoadedPolicy:
    """The policy of a checkpoint (a file or a run directory), with its settings and family.
    family, when given, must be the checkpoint's. Nothing about this machine is checked."""
    params, info = checkpoint.load(path)
    params, sizes = meta.split_step_sizes(params)
    try:
        config = TrainConfig.from_dict(info["config"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} has no usable training settings: {exc}") from None
    if family is not None and family != config.family:
        raise ValueError(f"{str(path)!r} is a checkpoint of {config.family}, not {family}")
    fam = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, fam)
    check_params(params, policy.params(), Path(path))
    if sizes is not None:
        check_params(sizes, policy.params(), Path(path))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            p.copy_(params[n])
    return LoadedPolicy(policy, config, fam, info, sizes)


# What a branch may not change: the parameters' shapes and meaning (the policy's layout and
# Meta-SGD's step sizes) and the tasks they were trained on.
BRANCH_FIXED = ("family", "family_overrides", "hidden_sizes", "activation", "learn_inner_lr",
                "init_log_std")


def run_from_checkpoint(source: Union[str, Path], out_dir: Union[str, Path],
                        progress_csv: Optional[Union[str, Path]] = None,
                        changes: Optional[Dict[str, Any]] = None) -> Path:
    """Makes out_dir a run that `train(..., resume=True)` continues from source, a checkpoint
    file (a committed one, say): checkpoints/latest.safetensors (a copy), config.json from the
    checkpoint's metadata, and progress.csv from progress_csv's rows before the checkpoint's
    iteration when given. Refuses a directory that already holds a run. Returns out_dir.

    changes: a branch, settings (TrainConfig fields) that the continued run changes, e.g.
    {"max_kl": 0.01}: it starts from the checkpoint's parameters and iteration count with
    them, and out_dir/branch.json records where it came from. The run is then not the
    checkpoint's run continued; BRANCH_FIXED settings may not change."""
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.safetensors"
    if latest.exists():
        raise ValueError(f"{str(out)!r} already holds a run; --resume without a checkpoint "
                         f"continues it")
    params, info = checkpoint.load(source)
    if "adapted_to" in info:
        raise ValueError(f"{str(source)!r} is a policy adapted to one task, not a training "
                         f"checkpoint")
    try:
        config = TrainConfig.from_dict(info["config"])
        done = int(info["iteration"]) + 1
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(source)!r} is not a training checkpoint (an adapted policy "
                         f"or a foreign file): {exc}") from None
    changed: Dict[str, Any] = {}
    if changes:
        was = config.to_dict()
        config = TrainConfig.from_dict(dict(was, **changes))  # the new settings checked
        now = config.to_dict()
        fixed = [k for k in BRANCH_FIXED if now[k] != was[k]]
        if fixed:
            raise ValueError(f"a branch keeps the checkpoint's {', '.join(fixed)} (the "
                             f"parameters' layout and the tasks: "
                             f"{', '.join(f'{k}={was[k]!r}' for k in fixed)}); it may change "
                             f"the other settings")
        changed = {k: [was[k], v] for k, v in now.items() if was[k] != v}
        if not changed:
            raise ValueError(f"a branch changes settings, but {changes} are the checkpoint's "
                             f"own; without them --resume continues the run")
    if progress_csv is not None:
        rows = read_rows(Path(progress_csv), below=done)
        if len(rows) != done:
            raise ValueError(f"{str(progress_csv)!r} has {len(rows)} rows before iteration "
                             f"{done}, the checkpoint's; expected {done}")
    latest.parent.mkdir(parents=True, exist_ok=True)
    if changed:
        checkpoint.save(latest, params, dict(info, config=config.to_dict()))
        (out / "branch.json").write_text(json.dumps(
            {"checkpoint": str(source), "iterations_done": done,
             "changed": {k: {"from": a, "to": b} for k, (a, b) in changed.items()}}, indent=2))
    else:
        shutil.copyfile(source, latest)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if progress_csv is not None:
        with open(out / "progress.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PROGRESS_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return out


def resume_settings(out_dir: Union[str, Path], given: Mapping[str, Any],
                    source: Optional[Union[str, Path]] = None,
                    progress_csv: Optional[Union[str, Path]] = None,
                    branch: bool = False) -> TrainConfig:
    """The settings that `train(config, out_dir, resume=True)` continues the run in out_dir
    with (resumed_config of its saved settings and `given`, the settings a user asked for).
    With source, a checkpoint file, out_dir first becomes a run of it (run_from_checkpoint,
    with progress_csv's rows); with branch, given's settings other than RESUME_MAY_CHANGE
    are the branch's changes."""
    if source is not None:
        changes = None
        if not branch:  # refused before anything is written
            _, info = checkpoint.load(source)
            if isinstance(info.get("config"), dict):
                resumed_config(TrainConfig.from_dict(info["config"]), given)
        if branch:
            if "family_overrides" in given:
                raise ValueError("a branch keeps the checkpoint's family: --set is not "
                                 "allowed with --branch")
            changes = {k: v for k, v in given.items() if k not in RESUME_MAY_CHANGE}
            if not changes:
                raise ValueError("--branch needs the settings to change, e.g. --max-kl 0.01")
        run_from_checkpoint(source, out_dir, progress_csv, changes)
    elif progress_csv is not None or branch:
        raise ValueError(f"{'--progress' if progress_csv is not None else '--branch'} goes "
                         f"with --resume CHECKPOINT")
    _, info = checkpoint.load(Path(out_dir) / "checkpoints" / "latest.safetensors")
    return resumed_config(TrainConfig.from_dict(info["config"]), given)
