"""``levelset-rcnn train``: train from a YAML recipe (one process, or many under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import recipe_names
from ._common import (
    add_override_args,
    collect_overrides,
    guarded,
    prepare_output_dir,
)

EPILOG = """examples:
  levelset-rcnn train --config synthetic_cpu solver.max_iter=200
  levelset-rcnn train --config synthetic_cpu --resume
  levelset-rcnn train --config my_recipe.yaml
  torchrun --nproc_per_node 8 -m levelset_rcnn.cli train --config coco_r50
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a YAML recipe",
        description="Train LevelSet R-CNN (or the Mask R-CNN baseline, model.arch=mask_rcnn) "
                    "from a recipe (a YAML file, or the name of one the package ships) plus "
                    "KEY=VALUE overrides. Writes "
                    "checkpoint_last.pth (atomically, every train.checkpoint_period "
                    "iterations), model_final.pth, config.yaml, metrics.jsonl, TensorBoard "
                    "scalars (tb/) and eval_results.json to train.output_dir. Under torchrun "
                    "every process runs this command; only rank 0 writes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML recipe: a file, or a packaged recipe by name "
                        f"({', '.join(recipe_names())}) (default: built-in defaults)")
    p.add_argument("--output", type=Path, default=None,
                   help="output folder (same as train.output_dir=...)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/checkpoint_last.pth: same data order and random "
                        "state, so the same losses as an uninterrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard scalars")
    add_override_args(p)
    p.set_defaults(func=_run)


@guarded
def _run(args: argparse.Namespace) -> int:
    from ..comm import cleanup, get_rank
    from ..config import load_config
    from ..engine import Trainer
    from ..engine.checkpoint import find_resume_checkpoint

    overrides = collect_overrides(args)
    if args.output is not None:
        overrides.append(f"train.output_dir={args.output}")
    cfg = load_config(args.config, overrides)
    out = Path(cfg.train.output_dir)
    if args.resume and find_resume_checkpoint(out) is None:
        raise FileNotFoundError(f"--resume: no {out}/checkpoint_last.pth to continue from")
    if get_rank_env() == 0:
        prepare_output_dir(out, overwrite=args.overwrite, allow_existing=args.resume)
    try:
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress,
                          tensorboard=not args.no_tensorboard)
        result = trainer.train()
        if get_rank() == 0:
            print(f"wrote {out / 'model_final.pth'}")
            if result["metrics"]:
                from ..engine import metrics_table

                print(json.dumps(metrics_table(result["metrics"]), indent=2))
    finally:
        cleanup()
    return 0


def get_rank_env() -> int:
    """This process's rank as torchrun sets it (before the process group exists)."""
    import os

    return int(os.environ.get("RANK", "0"))
