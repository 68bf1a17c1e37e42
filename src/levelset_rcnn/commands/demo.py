"""``levelset-rcnn demo``: the main job on the embedded default (no dataset, no network)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the embedded demo (no data or network needed)",
        description=(
            "Run the embedded demo. For now this is the level-set showcase: classic Chan-Vese "
            "on scikit-image's bundled photographs, writing a PNG of the evolving contour."
        ),
    )
    p.add_argument("--output", type=Path, default=Path("demo_output"),
                   help="folder for the results (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300,
                   help="Chan-Vese iterations (default: %(default)s)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..showcase import run_showcase

    path = run_showcase(args.output, num_iters=args.iters)
    print(f"wrote {path}")
    return 0
