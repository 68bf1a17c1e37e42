"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only: ``model``, ``optimizer``,
``scaler`` (state dicts), ``iteration`` (completed iterations), ``rng`` (torch CPU / CUDA
generator states, numpy's and Python's, as tensors and lists) and ``config`` (the recipe as
a nested dict). It is written to a temporary file in the same folder, flushed and fsynced,
then moved over the target with ``os.replace``, so a kill at any moment leaves either the old
or the new file, never a torn one; the temporary file of a killed write is removed by
:func:`remove_stale_temp_files` at the next start. A Ctrl-C during the write is held until the
file is complete (a second one interrupts at once), and a failed write (a full disk, a
read-only folder) is an ``OSError`` naming the file and the cause.

:func:`load_checkpoint` raises :class:`CheckpointError` for a file that is not a checkpoint
(empty, truncated, random bytes, or a pickle holding more than tensors and plain values, which
the safe loader refuses to run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "LAST_CHECKPOINT", "FINAL_MODEL", "find_resume_checkpoint", "model_state",
           "CheckpointError", "remove_stale_temp_files"]

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


class CheckpointError(ValueError):
    """A file given as a checkpoint is not one (the message says what it is not)."""


_TEMP_SUFFIX = ".tmp"


def _temp_prefix(name: str) -> str:
    return f".{name}."


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed checkpoint writes left in ``folder``
    (``.<name>.pth.*.tmp``); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*.pth.*{_TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class _RecordingWriter:
    """A binary file torch writes through that keeps the first exception of a ``write``:
    torch turns it into a ``RuntimeError`` with the cause buried in its message."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _open_temp(path: Path) -> tuple[Any, str]:
    """``(binary file, name)`` of a new temporary file beside ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=_TEMP_SUFFIX,
                               dir=path.parent)
    return os.fdopen(fd, "wb"), tmp


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold one SIGINT until the block ends (then raise ``KeyboardInterrupt``); a second one
    interrupts at once. Outside the main thread, or under another SIGINT handler than
    Python's default, nothing is held."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def _write_error(path: Path, exc: BaseException) -> OSError:
    """An ``OSError`` naming ``path``, its folder and the cause of a failed write."""
    if isinstance(exc, OSError) and exc.errno is not None:
        code, why = exc.errno, exc.strerror or str(exc)
    else:
        code, why = errno.EIO, str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = f"{why} (the disk holding {path.parent} is full)"
    return OSError(code, f"cannot write checkpoint {path}: {why}", str(path.parent))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    Raises:
        OSError: the write failed (full disk, read-only folder, ...); the message names the
            file, its folder and the cause. The old ``path`` is left as it was and no
            temporary file remains.
        KeyboardInterrupt: a Ctrl-C came during the write (after the write is complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _sigint_held():
        f, tmp = _open_temp(path)
        writer = _RecordingWriter(f)
        try:
            try:
                with f:
                    torch.save(payload, writer)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except RuntimeError as exc:  # torch's wrapping of a failed write, or its own
                cause = writer.error
                if cause is None:
                    raise
                if isinstance(cause, KeyboardInterrupt):
                    raise cause from None
                raise _write_error(path, cause) from exc
            except OSError as exc:
                raise _write_error(path, exc) from exc
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def _not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive; older torch (and plain pickle) a pickle stream
    torch_like = head == b"PK" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")
    if size == 0:
        what = "it is empty"
    elif not torch_like:
        what = "it is not a PyTorch file"
    elif isinstance(exc, pickle.UnpicklingError) and "unsupported global" in str(exc).lower():
        what = ("it holds Python objects besides tensors and plain values, which the safe "
                "loader (weights_only=True) refuses to run; levelset-rcnn's checkpoints hold "
                "none")
    elif isinstance(exc, pickle.UnpicklingError) and "unsupported operand" in str(exc).lower():
        what = ("it is not a torch.save file (a pickle stream the safe loader cannot read, "
                "or corrupt bytes)")
    else:
        what = f"it is truncated or corrupt ({size} bytes)"
    return CheckpointError(f"{path} is not a levelset-rcnn checkpoint: {what}")


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint (or a bare model state dict) with ``weights_only=True``.

    Raises:
        FileNotFoundError: naming the missing file.
        CheckpointError: the file is not a checkpoint (empty, truncated, not a PyTorch
            file, holding objects the safe loader refuses, or not a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # whatever a hostile byte stream makes the unpickler raise
        if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError)) or (
                isinstance(exc, OSError) and exc.errno == errno.EIO):
            raise  # the file system's error, not the file's content
        raise _not_a_checkpoint(path, exc) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a levelset-rcnn checkpoint: it holds a "
                              f"{type(ckpt).__name__}, not a dict of state")
    return ckpt


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from a full checkpoint or a bare state dict."""
    return checkpoint["model"] if "model" in checkpoint and isinstance(
        checkpoint["model"], dict) else checkpoint


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``output_dir/checkpoint_last.pth`` if it exists."""
    p = Path(output_dir) / LAST_CHECKPOINT
    return p if p.is_file() else None
