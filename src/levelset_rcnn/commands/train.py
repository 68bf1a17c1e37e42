"""``levelset-rcnn train``: train from a YAML recipe (one process, or many under torchrun)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
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
                   help="start a fresh run in an existing, non-empty output folder: the "
                        "previous run's checkpoints, config.yaml, metrics.jsonl, tb/ and "
                        "evaluation output are deleted first (other files are kept)")
    p.add_argument("--allow-recipe-change", action="store_true",
                   help="with --resume: continue even though the recipe differs from the "
                        "one the checkpoint was trained with (refused otherwise; the "
                        "differences are printed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard scalars")
    add_override_args(p)
    p.set_defaults(func=_run, extra_positionals="overrides")


@guarded
def _run(args: argparse.Namespace) -> int:
    from ..comm import cleanup, get_rank
    from ..config import ConfigError, load_config
    from ..engine import Trainer
    from ..engine.checkpoint import find_resume_checkpoint, load_checkpoint, remove_stale_temp_files
    from ..engine.run_dir import check_resume_recipe, clear_previous_run

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in the output folder and --overwrite "
                          "deletes it: pass one of them")
    overrides = collect_overrides(args)
    if args.output is not None:
        overrides.append(f"train.output_dir={args.output}")
    cfg = load_config(args.config, overrides)
    out = Path(cfg.train.output_dir)
    if args.resume:
        ckpt_path = find_resume_checkpoint(out)
        if ckpt_path is None:
            raise FileNotFoundError(f"--resume: no {out}/checkpoint_last.pth to continue from")
        diffs = check_resume_recipe(load_checkpoint(ckpt_path).get("config"), cfg,
                                    source=str(ckpt_path),
                                    allow_change=args.allow_recipe_change)
        if diffs and get_rank_env() == 0:
            print("warning: resuming under a changed recipe (--allow-recipe-change): "
                  + "; ".join(diffs), file=sys.stderr)
    if get_rank_env() == 0:
        remove_stale_temp_files(out)  # left by a kill during a checkpoint write
        prepare_output_dir(out, overwrite=args.overwrite, allow_existing=args.resume)
        if args.overwrite:
            removed = clear_previous_run(out)
            if removed:
                print(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}")
    try:
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress,
                          tensorboard=not args.no_tensorboard)
        result = trainer.train()
    except KeyboardInterrupt:
        if get_rank_env() == 0:
            argv = getattr(args, "argv", None) or sys.argv[1:]
            print(f"interrupted; {_resume_hint(out, list(argv))}", file=sys.stderr)
        return 130
        if get_rank() == 0:
            print(f"wrote {out / 'model_final.pth'}")
            if result["metrics"]:
                from ..engine import metrics_table

                print(json.dumps(metrics_table(result["metrics"]), indent=2))
    finally:
        cleanup()
    return 0


def _resume_hint(out: Path, argv: list[str]) -> str:
    """How to continue after an interrupt: the same command with ``--resume``."""
    from ..engine.checkpoint import find_resume_checkpoint, load_checkpoint

    ckpt = find_resume_checkpoint(out)
    if ckpt is None:
        return f"no checkpoint was written to {out} yet: start the run again"
    try:
        where = f" (iteration {int(load_checkpoint(ckpt)['iteration'])})"
    except Exception:  # a hint only
        where = ""
    argv = [a for a in argv if a not in ("--overwrite", "--resume")]
    command = " ".join(shlex.quote(a) for a in ["levelset-rcnn", *argv, "--resume"])
    return f"the last checkpoint is {ckpt}{where}; continue with: {command}"


def get_rank_env() -> int:
    """This process's rank as torchrun sets it (before the process group exists)."""
    import os

    return int(os.environ.get("RANK", "0"))
