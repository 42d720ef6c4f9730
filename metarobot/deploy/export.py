"""Export a checkpoint's policy as the robot receives it: ONNX, or flat weights with a
dependency-free C++ evaluator (the C++ core's own MLP code).

    export("checkpoints/HalfCheetahVel.safetensors", "onnx", "out/cheetah.onnx")
    export("adapted.safetensors", "native", "out/cheetah-native")   # a folder, see below

Both compute controls = map(mean(obs)): the Gaussian policy's mean action, mapped onto the
actuators' control ranges exactly as the family does (centre + a * half-range, clipped, for
families that normalise actions; else clipped to the ranges of limited actuators). Metadata
(family, observation layout, action names and ranges, control period, the task an adapted
policy saw, versions) goes into a JSON file beside the export, and into the ONNX model's
metadata_props.

A native export is a folder: policy.bin (the weights, layout in metarobot_policy_file.h),
policy.json (the metadata), policy.h / policy.cc (the C++ core's MLP), metarobot_policy_file.h
(loads policy.bin and maps onto the controls), example.cc and CMakeLists.txt (a program that
reads observations from stdin and prints controls): `cmake -S . -B build && cmake --build
build` on the robot's computer, no Python or PyTorch needed.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import mujoco
import numpy as np
import torch
from torch import nn

from .. import terms as T
from ..families import TaskFamily
from ..policy import GaussianMLPPolicy, mlp_mean

FORMATS = ("onnx", "native")
METADATA_FORMAT = "metarobot-policy-1"
NATIVE_MAGIC = b"MRPOLICY"
NATIVE_VERSION = 1
_NATIVE_DIR = Path(__file__).resolve().parent / "native"


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
                          np.array(model.actuator_ctrllimited, dtype=bool),
                          family.normalize_actions)


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


def metadata(path: Union[str, Path], family: TaskFamily, policy: GaussianMLPPolicy,
             params: Dict[str, torch.Tensor], config: Any, info: Dict[str, Any]
             ) -> Dict[str, Any]:
    """What a robot program needs to know of an exported policy (JSON-serialisable)."""
    import metarobot
    model = family.load_model()
    ctrl = np.array(model.actuator_ctrlrange)
    actions = [{"name": model.actuator(i).name or f"actuator_{i}",
                "low": float(ctrl[i, 0]), "high": float(ctrl[i, 1]),
                "limited": bool(family.normalize_actions or model.actuator_ctrllimited[i])}
               for i in range(model.nu)]
    return {
        "format": METADATA_FORMAT,
        "family": family.name,
        "family_overrides": getattr(config, "family_overrides", {}),
        "checkpoint": str(path),
        "iteration": int(info.get("iteration", -1)) + 1,
        "obs_dim": int(policy.obs_dim), "act_dim": int(policy.act_dim),
        "observation": observation_layout(family, model),
        "actions": actions,
        "normalize_actions": bool(family.normalize_actions),
        "control_period": float(model.opt.timestep * family.frame_skip),
        "horizon": int(family.horizon),
        "task": info.get("adapted_to"),
        "adaptation_steps": info.get("adaptation_steps", 0),
        "adaptation_returns": info.get("adaptation_returns"),
        "policy": {"sizes": list(policy.sizes), "activation": policy.activation,
                   "log_std": [float(x) for x in params["log_std"].detach().float()]},
        "inner_lr": getattr(config, "inner_lr", None),
        "gamma": getattr(config, "gamma", None),
        "gae_lambda": getattr(config, "gae_lambda", None),
        "versions": {"metarobot": metarobot.__version__, "mujoco": mujoco.__version__,
                     "torch": torch.__version__},
    }


def export(checkpoint: Union[str, Path], format: str, out: Union[str, Path]) -> Dict[str, Any]:
    """Exports a checkpoint's (or an adapted policy's) deterministic controls; returns the
    metadata. format 'onnx': out is the .onnx file (metadata also in out + '.json');
    'native': out is a folder (see the module's docstring)."""
    from ..train import load_policy
    if format not in FORMATS:
        raise ValueError(f"format should be one of {FORMATS}, got {format!r}")
    policy, config, family, info = load_policy(checkpoint)
    params = {n: p.detach() for n, p in policy.named_parameters()}
    meta = metadata(checkpoint, family, policy, params, config, info)
    deployed = deployed_policy(policy, params, family).eval()
    out = Path(out)
    if format == "onnx":
        _export_onnx(deployed, meta, out)
        Path(str(out) + ".json").write_text(json.dumps(meta, indent=2))
    else:
        _export_native(deployed, policy, meta, out)
    return meta


def _export_onnx(deployed: DeployedPolicy, meta: Dict[str, Any], out: Path) -> None:
    """torch.onnx (the TorchScript exporter: no extra dependency), a dynamic batch dimension,
    the metadata as the model's metadata_props; checked by onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install onnx onnxruntime "
                         "(pinned in constraints.txt)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, meta["obs_dim"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(deployed, (example,), str(out), dynamo=False,
                          input_names=["observation"], output_names=["controls"],
                          dynamic_axes={"observation": {0: "batch"}, "controls": {0: "batch"}},
                          opset_version=17)
    model = onnx.load(str(out))
    for key, value in (("metarobot", json.dumps(meta)),):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def native_sources() -> Dict[str, Path]:
    """The files a native export copies: the C++ core's MLP (policy.h, policy.cc: the same
    code the simulator evaluates policies with) and the loader, example and CMakeLists."""
    out = {}
    core = [_NATIVE_DIR, Path(__file__).resolve().parents[2] / "csrc"]  # installed, or source
    for name in ("policy.h", "policy.cc"):
        hit = next((d / name for d in core if (d / name).is_file()), None)
        if hit is None:
            raise FileNotFoundError(f"metarobot's C++ source {name} is missing from "
                                    f"{[str(d) for d in core]}")
        out[name] = hit
    for name in ("metarobot_policy_file.h", "example.cc", "CMakeLists.txt"):
        out[name] = _NATIVE_DIR / name
    return out


def _export_native(deployed: DeployedPolicy, policy: GaussianMLPPolicy, meta: Dict[str, Any],
                   out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"a native export is a folder; {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    sizes = list(policy.sizes)
    act = sizes[-1]
    blob = bytearray(NATIVE_MAGIC)
    blob += struct.pack("<4I", NATIVE_VERSION, len(sizes) - 1,
                        1 if policy.activation == "relu" else 0, 1 if deployed.normalized else 0)
    blob += struct.pack(f"<{len(sizes)}I", *sizes)
    params = deployed.params()
    for i in range(len(sizes) - 1):
        w = params[f"layers.{i}.weight"].numpy().astype("<f4").T  # input-major, as the core
        blob += np.ascontiguousarray(w).tobytes()
        blob += params[f"layers.{i}.bias"].numpy().astype("<f4").tobytes()
    blob += params["log_std"].numpy().astype("<f4").tobytes()
    ranges = np.array([[a["low"], a["high"], 1.0 if a["limited"] else 0.0]
                       for a in meta["actions"]], dtype="<f8")
    if len(ranges) != act:
        raise ValueError(f"the policy has {act} actions, the model {len(ranges)} actuators")
    blob += ranges.tobytes()
    (out / "policy.bin").write_bytes(bytes(blob))
    (out / "policy.json").write_text(json.dumps(meta, indent=2))
    for name, source in native_sources().items():
        shutil.copyfile(source, out / name)


def load_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata of an export: an .onnx file's JSON beside it, or a native folder's."""
    path = Path(path)
    candidates = [path / "policy.json"] if path.is_dir() else [Path(str(path) + ".json")]
    for c in candidates:
        if c.is_file():
            meta = json.loads(c.read_text())
            if meta.get("format") != METADATA_FORMAT:
                raise ValueError(f"{str(c)!r} is not metarobot export metadata")
            return meta
    raise ValueError(f"no export metadata for {str(path)!r} (looked for "
                     f"{[str(c) for c in candidates]})")
