"""``levelset-rcnn demo``: the main job on the embedded default (no dataset, no network).

Generates the synthetic dataset, trains a small LevelSet R-CNN (ResNet-18 FPN, slim heads,
256x256 images) on the CPU, then Mask R-CNN's 28x28 mask head on its frozen detector
(frozen-detector mode: same boxes), evaluates Mask R-CNN, the initial (phi_0) and the final
(phi_N) masks side by side, and writes ``report.md`` with the AP / AF / Boundary AP table, a
figure of what phi_N fixes, one of phi_0 evolving into phi_N, prediction overlays and the loss
curve.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ._common import guarded, prepare_output_dir

#: The demo's recipe: the packaged ``synthetic_cpu.yaml``, always on the CPU, for
#: :data:`DEMO_ITERS` iterations (its step and warmup scaled to them) and with
#: :data:`DEMO_OVERRIDES`.
RECIPE = "synthetic_cpu"
#: The demo's budget: what fits in 10 minutes on 2 idle cores with the Mask R-CNN head and the
#: evaluation (about 1 s per iteration once the detector finds the shapes).
DEMO_ITERS = 450
#: The evolution starts with large steps (``dt = eps = 1``; the model default is a cautious
#: 0.05 / 0.1). In a short budget a small step lets the model learn to switch the evolution off
#: instead (``eps`` or ``dt`` driven to 0, where the sigmoid's gradient vanishes): at 450
#: iterations phi_N then equals phi_0. Started large, the learned steps stay near their upper
#: bound (2), as in long runs, and phi_N is ahead of phi_0 and of Mask R-CNN.
DEMO_OVERRIDES = ("model.hyper_init={dt: 1.0, eps: 1.0}",)
QUICK = dict(max_iter=40, train_images=40, val_images=8)
#: Iterations of Mask R-CNN's mask head on the frozen detector, per iteration of the main run
#: (the frozen backbone, RPN and box head need no backward pass: a step costs about half).
BASELINE_SHARE = 0.3
MARKER = ".levelset_rcnn_demo"


def _recipe() -> Any:
    from ..config import load_config

    return load_config(RECIPE)


def register(sub: argparse._SubParsersAction) -> None:
    recipe = _recipe()
    p = sub.add_parser(
        "demo", help="train and evaluate a small LevelSet R-CNN on synthetic data (CPU)",
        description="The main job with no dataset and no network: generate the synthetic "
                    f"dataset, train a small LevelSet R-CNN on the CPU ({DEMO_ITERS} "
                    "iterations), then Mask R-CNN's 28x28 mask head on its frozen detector "
                    f"({round(DEMO_ITERS * BASELINE_SHARE)}), "
                    "evaluate Mask R-CNN, phi_0 and phi_N on the same detections (mask AP, "
                    "AF1, AF2, Boundary AP) and write OUTPUT/report.md with the table, a "
                    "figure of what phi_N fixes, a phi_0 -> phi_N figure, prediction overlays "
                    "and the loss curve (under 10 minutes on 2 idle cores). A previous demo output "
                    "is replaced; any other non-empty folder is refused unless --overwrite.")
    p.add_argument("--output", type=Path, default=Path("demo_output"),
                   help="folder for the results (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty folder that is not a demo output")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['max_iter']} iterations on {QUICK['train_images']} "
                        "images (a couple of minutes; the numbers mean little)")
    p.add_argument("--max-iter", type=int, default=None,
                   help=f"training iterations (default: {DEMO_ITERS})")
    p.add_argument("--train-images", type=int, default=None,
                   help=f"synthetic training images "
                        f"(default: {recipe.data.synthetic_train_images})")
    p.add_argument("--val-images", type=int, default=None,
                   help=f"synthetic validation images "
                        f"(default: {recipe.data.synthetic_val_images})")
    p.add_argument("--showcase", action="store_true",
                   help="also run the classic (intensity) Chan-Vese showcase on "
                        "scikit-image's photographs (about 30 s more)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _prepare(out: Path, overwrite: bool) -> None:
    """The output folder: a previous demo output is replaced, any other non-empty folder
    refused unless ``overwrite``."""
    prepare_output_dir(out, overwrite=overwrite, marker=MARKER, command="demo")
    for stale in ("train/checkpoint_last.pth", "train/metrics.jsonl",
                  "maskrcnn/checkpoint_last.pth", "maskrcnn/metrics.jsonl"):
        (out / stale).unlink(missing_ok=True)


def build_demo_config(args: argparse.Namespace) -> Any:
    """The packaged ``synthetic_cpu`` recipe on the CPU with :data:`DEMO_OVERRIDES`, written
    under ``args.output``, with the budget options (``--quick``, ``--max-iter`` (default
    :data:`DEMO_ITERS`) and the image counts; the step, warmup and checkpoint periods scaled to
    the budget)."""
    from ..config import apply_overrides, validate

    cfg = _recipe()
    q = args.quick
    max_iter = args.max_iter or (QUICK["max_iter"] if q else DEMO_ITERS)
    n_train = args.train_images or (QUICK["train_images"] if q else
                                    cfg.data.synthetic_train_images)
    n_val = args.val_images or (QUICK["val_images"] if q else cfg.data.synthetic_val_images)
    scale = max_iter / cfg.solver.max_iter
    apply_overrides(cfg, [
        *DEMO_OVERRIDES,
        f"train.output_dir={args.output / 'train'}", f"data.root={args.output / 'data'}",
        "train.device=cpu",
        f"solver.max_iter={max_iter}",
        f"solver.steps=[{max(1, round(cfg.solver.steps[0] * scale))}]",
        f"solver.warmup_iters={max(1, min(cfg.solver.warmup_iters, max_iter // 5))}",
        f"train.checkpoint_period={max(1, min(cfg.train.checkpoint_period, max_iter))}",
        f"data.synthetic_train_images={n_train}", f"data.synthetic_val_images={n_val}",
    ], source="demo options")
    validate(cfg)
    return cfg


def build_baseline_config(cfg: Any, out: Path) -> Any:
    """Mask R-CNN's 28x28 mask head on the demo model's frozen detector: the same recipe with
    ``model.arch=mask_rcnn``, started from ``out/train/model_final.pth`` with the backbone, RPN
    and box head frozen, for :data:`BASELINE_SHARE` of the budget."""
    import copy

    from ..config import apply_overrides, validate

    base = copy.deepcopy(cfg)
    iters = max(1, round(cfg.solver.max_iter * BASELINE_SHARE))
    apply_overrides(base, [
        "model.arch=mask_rcnn", f"train.init_from={out / 'train' / 'model_final.pth'}",
        "train.freeze=[backbone,rpn,box_head]", f"train.output_dir={out / 'maskrcnn'}",
        f"solver.max_iter={iters}", f"solver.steps=[{max(1, round(0.8 * iters))}]",
        f"solver.warmup_iters={max(1, min(cfg.solver.warmup_iters, iters // 5))}",
        f"train.checkpoint_period={iters}",
    ], source="demo baseline")
    validate(base)
    return base


@guarded
def _run(args: argparse.Namespace) -> int:
    from ..engine import Trainer
    from ..engine.tables import format_metrics

    t_start = time.perf_counter()
    out: Path = args.output
    _prepare(out, args.overwrite)
    cfg = build_demo_config(args)
    progress = not args.no_progress
    print(f"[1/5] synthetic data and LevelSet R-CNN: {cfg.solver.max_iter} iterations, batch "
          f"{cfg.solver.ims_per_batch}, {cfg.data.synthetic_train_images} training images; "
          f"evaluates phi_0 and phi_N on {cfg.data.synthetic_val_images} validation images")
    trainer = Trainer(cfg, progress=progress, tensorboard=True)
    result = trainer.train()
    base_cfg = build_baseline_config(cfg, out)
    print(f"[2/5] Mask R-CNN's 28x28 mask head on the same frozen detector: "
          f"{base_cfg.solver.max_iter} iterations")
    baseline = Trainer(base_cfg, progress=progress, tensorboard=False)
    base_result = baseline.train()
    t_train = time.perf_counter() - t_start
    from ..demo import write_report

    print("[3/5] figures and overlays")
    report = write_report(trainer, result, out, progress=progress, showcase=args.showcase,
                          t_train=t_train, t_start=t_start, baseline=baseline,
                          baseline_result=base_result)
    print(f"[4/5] wrote {report}")
    summary = json.loads((out / "demo_results.json").read_text())
    names = {"maskrcnn": "Mask R-CNN 28x28", "masks_phi0": "phi_0 (initial)",
             "masks": "phi_N (final)"}
    rows = {names.get(key, key): summary["table"][key] for key in names
            if key in summary["table"]}
    print("[5/5] mask metrics on the same detections")
    for line in format_metrics(rows, columns=("AP", "AP75", "AF1", "AF2", "boundary_AP"),
                               header="mask", style="lines").splitlines():
        print(f"  {line}")
    print(f"total {summary['wall_time_s']:.0f} s")
    return 0
