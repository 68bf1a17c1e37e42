"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only: ``model``, ``optimizer``,
``scaler`` (state dicts), ``iteration`` (completed iterations), ``rng`` (torch CPU / CUDA
generator states, numpy's and Python's, as tensors and lists) and ``config`` (the recipe as
a nested dict). It is written to a temporary file in the same folder, flushed and fsynced,
then moved over the target with ``os.replace``, so a kill at any moment leaves either the old
or the new file, never a torn one.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "LAST_CHECKPOINT", "FINAL_MODEL", "find_resume_checkpoint", "model_state"]

LAST_CHECKPOINT = "checkpoint_last.pth"
FINAL_MODEL = "model_final.pth"


def rng_state() -> dict[str, Any]:
    """Every random generator the training loop touches, in ``weights_only``-safe types."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global state other code uses)
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],  # noqa: NPY002 (the global state other code uses)
                         n["has_gauss"], n["cached_gaussian"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint (or a bare model state dict) with ``weights_only=True``.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from a full checkpoint or a bare state dict."""
    return checkpoint["model"] if "model" in checkpoint and isinstance(
        checkpoint["model"], dict) else checkpoint


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``output_dir/checkpoint_last.pth`` if it exists."""
    p = Path(output_dir) / LAST_CHECKPOINT
    return p if p.is_file() else None
