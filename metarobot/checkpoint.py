"""Checkpoints: the policy's parameters in safetensors, everything else as JSON in its metadata.

One file, written to a temporary name and renamed over the old one, so an interrupted write
leaves the previous checkpoint whole. No pickle anywhere: loading runs no code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

FORMAT = "metarobot-checkpoint-1"


def save(path: Union[str, Path], params: Dict[str, torch.Tensor], info: Dict[str, Any]) -> None:
    """Writes params (name -> tensor) and info (JSON-serialisable) to path atomically."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in params.items()}
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "info": json.dumps(info)})
    with open(tmp, "rb") as f:  # on disk before the rename makes it the checkpoint
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(params, info) of a checkpoint file or a run directory's latest; ValueError for a
    missing, corrupt or foreign file."""
    from safetensors import safe_open
    path = Path(path)
    if path.is_dir():  # a run directory, or its checkpoints/ folder
        inner = path / "checkpoints" / "latest.safetensors"
        path = inner if inner.exists() else path / "latest.safetensors"
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            params = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{str(path)!r} is not a readable checkpoint: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a metarobot checkpoint (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        info = json.loads(meta["info"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} has corrupt metadata: {exc}") from None
    return params, info
