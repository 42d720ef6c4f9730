"""Export a checkpoint's policy as the robot receives it: ONNX, or flat weights with a
dependency-free C++ evaluator (the C++ core's own MLP code).

    export("checkpoints/HalfCheetahVel.safetensors", "onnx", "out/cheetah.onnx")
    export("adapted.safetensors", "native", "out/cheetah-native")   # a folder, see below

Both compute controls = map(mean(obs)): the Gaussian policy's mean action, mapped onto the
actuators' control ranges exactly as the family does (centre + a * half-range, clipped, for
families that normalise actions; else clipped to the ranges of limited actuators). Metadata
(family, observation layout, action names and ranges, control period, the task an adapted
policy saw, versions) goes into a JSON file beside the export, and into the ONNX model's
metadata_props; so does the deployment config (deployment.py: observation scales and
offsets, the servo map, motors in the robot's order, rates, commands, limits), also as its
own file: deploy.json in a native folder, P.deploy.json beside P.onnx.

A native export is a folder: policy.bin (the weights, layout in metarobot_policy_file.h),
policy.json (the metadata), policy.h / policy.cc (the C++ core's MLP), metarobot_policy_file.h
(loads policy.bin and maps onto the controls), example.cc and CMakeLists.txt (a program that
reads observations from stdin and prints controls): `cmake -S . -B build && cmake --build
build` on the robot's computer, no Python or PyTorch needed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import mujoco
import numpy as np
import torch

from ..families import TaskFamily
from ..policy import GaussianMLPPolicy
from .controller import load_checkpoint
from .deployment import DEPLOY_FILE, deploy_path_of_onnx, deployment_config
from .policy import (DeployedPolicy, action_names, clipped_controls, control_period,
                     deployed_policy, observation_layout, observation_names)

FORMATS = ("onnx", "native")
METADATA_FORMAT = "metarobot-policy-1"
NATIVE_MAGIC = b"MRPOLICY"
NATIVE_VERSION = 1
_NATIVE_DIR = Path(__file__).resolve().parent / "native"


def metadata(path: Union[str, Path], family: TaskFamily, policy: GaussianMLPPolicy,
             params: Dict[str, torch.Tensor], config: Any, info: Dict[str, Any],
             deploy: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a robot program needs to know of an exported policy (JSON-serialisable); deploy:
    its deployment config (default the family's own), also under the key "deploy"."""
    import metarobot
    model = family.load_model()
    ctrl = np.array(model.actuator_ctrlrange)
    limited = clipped_controls(family, model)
    actions = [{"name": action_names(model)[i],
                "low": float(ctrl[i, 0]), "high": float(ctrl[i, 1]),
                "limited": bool(limited[i])}
               for i in range(model.nu)]
    return {
        "format": METADATA_FORMAT,
        "family": family.name,
        "family_overrides": getattr(config, "family_overrides", {}),
        "checkpoint": str(path),
        "iteration": int(info.get("iteration", -1)) + 1,
        "obs_dim": int(policy.obs_dim), "act_dim": int(policy.act_dim),
        "observation": observation_layout(family, model),
        "observation_names": list(observation_names(family, model)),
        "actions": actions,
        "normalize_actions": bool(family.normalize_actions),
        "control_period": control_period(family, model),
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
        "deploy": deploy if deploy is not None else deployment_config(
            family, model=model, family_overrides=getattr(config, "family_overrides", {})),
    }


def export(checkpoint: Union[str, Path], format: str, out: Union[str, Path],
           overwrite: bool = False, motor_order: Optional[Sequence[str]] = None
           ) -> Dict[str, Any]:
    """Exports a checkpoint's (or an adapted policy's) deterministic controls; returns the
    metadata. format 'onnx': out is the .onnx file (metadata also in out + '.json', the
    deployment config in P.deploy.json beside P.onnx); 'native': out is a folder (see the
    module's docstring) with deploy.json. motor_order: the actuators' names in the robot's
    motor order, when it is not the model's (the deployment config's policy <-> motor map).
    An existing out is refused unless overwrite; so are weights that are not all finite
    and a motor order that does not name each actuator once. The checkpoint's device
    setting plays no part: a policy trained on a GPU exports on any machine."""
    if format not in FORMATS:
        raise ValueError(f"format should be one of {FORMATS}, got {format!r}")
    out = Path(out)
    _check_out(out, format, overwrite)
    loaded = load_checkpoint(checkpoint)
    policy, config, family, info = loaded.policy, loaded.config, loaded.family, loaded.info
    params = {n: p.detach() for n, p in policy.named_parameters()}
    bad = [n for n, p in params.items() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"{str(checkpoint)!r} has non-finite weights in {', '.join(bad)}: "
                         f"nothing exported")
    deploy = deployment_config(family, motor_order=motor_order,
                               family_overrides=getattr(config, "family_overrides", {}))
    meta = metadata(checkpoint, family, policy, params, config, info, deploy)
    deployed = deployed_policy(policy, params, family).eval()
    if format == "onnx":
        _export_onnx(deployed, meta, out)
        Path(str(out) + ".json").write_text(json.dumps(meta, indent=2))
        deploy_path_of_onnx(out).write_text(json.dumps(deploy, indent=2, allow_nan=False))
    else:
        _export_native(deployed, policy, meta, out)
        (out / DEPLOY_FILE).write_text(json.dumps(deploy, indent=2, allow_nan=False))
    return meta


def _check_out(out: Path, format: str, overwrite: bool) -> None:
    """Refuses, before any work, an out that exists (unless overwrite), is of the wrong kind,
    or lies in a folder that cannot be written."""
    if out.exists():
        if format == "native" and not out.is_dir():
            raise ValueError(f"a native export is a folder; {str(out)!r} is a file")
        if format == "onnx" and out.is_dir():
            raise ValueError(f"an ONNX export is a file; {str(out)!r} is a folder")
        if not overwrite:
            raise ValueError(f"{str(out)!r} exists; give --overwrite (overwrite=True) to "
                             f"replace it")
    parent = out.parent if out.parent != Path("") else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(out)!r}: {str(existing)!r} is not a writable "
                         f"folder")


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
    for key, value in (("metarobot", json.dumps(meta)),
                       ("metarobot_deploy", json.dumps(meta["deploy"]))):
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
