"""Atomic training checkpoints and safetensors weights.

A checkpoint is ``out_dir/checkpoints/step_00000100.pt``: written to ``.tmp`` then renamed, so a
job killed mid-write leaves the previous checkpoint as the latest valid one. The newest checkpoint
that loads is used for resume; a truncated file (disk full, node crash) falls back to the older.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STEP_RE = re.compile(r"^step_(\d{8})\.pt$")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(state: dict, ckpt_dir: Path, step: int, keep: int = 2) -> Path:
    path = Path(ckpt_dir) / f"step_{step:08d}.pt"
    _atomic(path, lambda p: torch.save(state, p))
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if STEP_RE.match(p.name))


def load_latest(ckpt_dir: Path) -> dict | None:
    """The newest checkpoint that loads, or None."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated/corrupt file: try the previous one
            print(f"engine: {path}: unreadable checkpoint ({type(exc).__name__}), trying the previous one")
    return None


def save_weights(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file, atomically; shared/non-contiguous tensors are copied."""
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    _atomic(Path(path), lambda p: save_file(flat, str(p), metadata=metadata))


def load_weights(model: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load a safetensors state dict into ``model`` (clear error naming the file on mismatch)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: weights file not found (train the model first)")
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise RuntimeError(f"{path}: weights do not fit {type(model).__name__}: {' '.join(first)}") from exc
    return model


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_meta": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, pos, has_gauss, cached = state["numpy_meta"]
    np.random.set_state((name, state["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
