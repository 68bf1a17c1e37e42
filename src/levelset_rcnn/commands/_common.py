"""Shared pieces of the ``train``, ``eval``, ``predict`` and ``demo`` commands."""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_override_args", "add_tta_args", "collect_overrides", "guarded", "os_error_line",
           "prepare_output_dir", "tta_overrides", "OutputDirError"]


class OutputDirError(FileExistsError):
    """The output folder exists and is not empty."""


def add_override_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides, e.g. solver.base_lr=0.01 train.output_dir=out "
                        "model.loss_weights=[1,5] (values are YAML)")
    p.add_argument("--set", dest="set_overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="same as the positional overrides")


def collect_overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + list(args.set_overrides)


def add_tta_args(p: argparse.ArgumentParser) -> None:
    """``--tta`` and ``--tta-sizes`` (recipe fields ``eval.tta``, ``eval.tta_min_sizes``)."""
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also run the mirrored image (and every "
                        "--tta-sizes scale), merge the detections and average the level sets "
                        "(eval.tta=true; eval.tta_flip=false drops the mirrored views)")
    p.add_argument("--tta-sizes", type=int, nargs="+", default=None, metavar="N",
                   help="shorter image edges of the TTA views, e.g. 800 1024 (implies --tta; "
                        "default: the model's test size)")


def tta_overrides(args: argparse.Namespace) -> list[str]:
    """Recipe overrides for ``--tta`` / ``--tta-sizes``."""
    out = []
    if args.tta or args.tta_sizes:
        out.append("eval.tta=true")
    if args.tta_sizes:
        out.append(f"eval.tta_min_sizes=[{', '.join(str(s) for s in args.tta_sizes)}]")
    return out


def prepare_output_dir(path: Path, *, overwrite: bool, allow_existing: bool = False,
                       marker: str | None = None, command: str = "") -> Path:
    """Create ``path``; refuse an existing, non-empty folder unless ``overwrite`` (files in it
    are then replaced as they are written), ``allow_existing`` (resume) or it holds the file
    ``marker``: a previous output of ``command``, which then writes ``marker`` into it.

    Raises:
        OutputDirError: ``path`` is a file, or a non-empty folder that may not be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output {path} exists and is not a folder")
    previous = marker is not None and (path / marker).exists()
    if path.is_dir() and any(path.iterdir()) and not (overwrite or allow_existing or previous):
        if marker is not None:
            raise OutputDirError(f"output folder {path} exists, is not empty and is not a "
                                 f"previous {command} output; pass --overwrite or choose "
                                 "another --output")
        raise OutputDirError(f"output folder {path} exists and is not empty; pass --overwrite "
                             "to write into it (or --resume to continue a training run)")
    path.mkdir(parents=True, exist_ok=True)
    if marker is not None:
        (path / marker).write_text(f"written by levelset-rcnn {command}\n")
    return path


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user can fix (bad recipe, data, weights, paths); imported only when one
    is raised, so that a command's start does not pay for the engine's imports."""
    from ..config import ConfigError
    from ..data.errors import DatasetError
    from ..data.lvis_json import LVISFormatError
    from ..engine import TrainingDivergedError
    from ..engine.checkpoint import CheckpointError
    from ..modeling import WeightsUnavailableError

    return (ConfigError, DatasetError, WeightsUnavailableError, OSError,
            TrainingDivergedError, LVISFormatError, CheckpointError)


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: the file or folder, the cause and, for a full disk or
    a read-only file system, which folder. (``FileNotFoundError("...")`` raised with a message
    of ours is that message.)"""
    if exc.errno is None:  # raised by us with a message
        return str(exc)
    why = exc.strerror or str(exc)
    where = exc.filename
    line = why if where is None or str(where) in why else f"{where}: {why}"
    folder = Path(where).parent if where is not None else None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and "full" not in line:
        line += f" (the disk holding {folder} is full)"
    elif exc.errno == errno.EROFS:
        line += f" ({folder} is on a read-only file system)"
    elif exc.errno == errno.EACCES and where is not None:
        line += " (check that the output folder is writable)"
    return line


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected user errors (a bad recipe, data, weights or path, a full or read-only
    output folder) into one ``error: ...`` line and exit code 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        try:
            return fn(args)
        except Exception as exc:
            if not isinstance(exc, _user_errors()):
                raise
            line = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            print(f"error: {line}", file=sys.stderr)
            return 1

    return run
