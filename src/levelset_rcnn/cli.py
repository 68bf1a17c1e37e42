"""The ``levelset-rcnn`` command line.

Each sub-command lives in its own module and registers itself through a
``register(subparsers)`` function listed in ``_COMMANDS``; ``main`` dispatches to the
``func`` the sub-parser sets. Positional items may come after options
(``train --config C a=1 --output o b=2``): a sub-parser that sets ``extra_positionals`` to
the name of its list of positionals gets the items argparse leaves over appended to it.
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
    args, extras = parser.parse_known_args(argv)
    if extras:
        dest = getattr(args, "extra_positionals", None)
        if dest is None or any(item.startswith("-") for item in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        target = getattr(args, dest)
        target.extend(type(target[0])(e) if target else e for e in extras)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for hints such as --resume
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
