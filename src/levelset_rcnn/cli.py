"""The ``levelset-rcnn`` command line.

Each sub-command lives in its own module and registers itself through a
``register(subparsers)`` function listed in ``_COMMANDS``; ``main`` dispatches to the
``func`` the sub-parser sets.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# Modules that define ``register(subparsers)``. Imported lazily so ``--help`` stays fast.
_COMMANDS: tuple[str, ...] = tuple(f"levelset_rcnn.commands.{c}" for c in (
    "train", "eval", "predict", "demo", "convert", "export"))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="levelset-rcnn",
        description="LevelSet R-CNN: instance segmentation with a deep Chan-Vese refinement.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .threads import configure_threads

    configure_threads()  # before torch is imported: thread count and OpenMP wait policy
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
