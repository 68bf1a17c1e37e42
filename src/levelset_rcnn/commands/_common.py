"""Shared pieces of the ``train``, ``eval``, ``predict`` and ``demo`` commands."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_override_args", "collect_overrides", "guarded", "prepare_output_dir",
           "OutputDirError"]


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


def prepare_output_dir(path: Path, *, overwrite: bool, allow_existing: bool = False) -> Path:
    """Create ``path``; refuse an existing, non-empty folder unless ``overwrite`` (files in it
    are then replaced as they are written) or ``allow_existing`` (resume)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or allow_existing):
        raise OutputDirError(f"output folder {path} exists and is not empty; pass --overwrite "
                             "to write into it (or --resume to continue a training run)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected user errors into one ``error: ...`` line and exit code 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from ..config import ConfigError
        from ..data.errors import DatasetError
        from ..data.lvis_json import LVISFormatError
        from ..engine import TrainingDivergedError
        from ..modeling import WeightsUnavailableError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        try:
            return fn(args)
        except (ConfigError, DatasetError, WeightsUnavailableError, FileNotFoundError,
                FileExistsError, TrainingDivergedError, LVISFormatError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run
