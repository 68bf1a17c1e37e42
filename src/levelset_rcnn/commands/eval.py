"""``levelset-rcnn eval``: box / mask AP of a trained model: COCO (with boundary AF1 / AF2),
the official Cityscapes AP / AP50 per class, or LVIS AP* (``eval.evaluator``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import (
    add_override_args,
    add_tta_args,
    collect_overrides,
    guarded,
    prepare_output_dir,
    tta_overrides,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a trained model (mask AP, AF1/AF2; phi_0 and phi_N)",
        description="Evaluate WEIGHTS (a train output: model_final.pth or "
                    "checkpoint_last.pth) on the recipe's validation set, or on --images / "
                    "--ann. LevelSet R-CNN is scored twice in one pass: its final masks "
                    "H(phi_N) ('masks') and its initial ones H(phi_0) ('masks_phi0'). Writes "
                    "OUTPUT/eval_results.json. The metric is the recipe's eval.evaluator: "
                    "coco (default: box / mask AP, AF1 / AF2), cityscapes (the official "
                    "instance-level AP / AP50 per class, against eval.cityscapes_gt) or lvis "
                    "(AP* against eval.lvis_ann). Works under torchrun (each process takes a "
                    "share of the images).")
    p.add_argument("--weights", type=Path, required=True, help="trained model file")
    p.add_argument("--config", default=None,
                   help="recipe: a YAML file or a packaged recipe's name (default: the one "
                        "stored in WEIGHTS)")
    p.add_argument("--images", type=Path, default=None, help="image folder of --ann")
    p.add_argument("--ann", type=Path, default=None, help="COCO instances JSON to evaluate on")
    p.add_argument("--output", type=Path, default=None,
                   help="folder for eval_results.json (default: next to WEIGHTS, in eval/)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N only")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tta_args(p)
    add_override_args(p)
    p.set_defaults(func=_run)


#: Row names of the mask rows :func:`~levelset_rcnn.engine.tables.metrics_table` returns.
ROW_NAMES = {"masks": "final masks (phi_N / Mask R-CNN)", "masks_phi0": "initial phi_0"}


def format_per_class(results: dict) -> str:
    """Markdown table of per-class mask AP / AP50 (Cityscapes, as in the paper's Table 1)."""
    from ..engine.tables import format_metrics

    sets = {k.split("/", 1)[1]: v["per_class"] for k, v in results.items()
            if k.startswith("cityscapes/") and isinstance(v, dict) and "per_class" in v}
    if not sets:
        return ""
    classes = list(next(iter(sets.values())))
    rows = {(key, metric): {c: per[c].get(metric) for c in classes}
            for key, per in sets.items() for metric in ("AP", "AP50")}
    return format_metrics(rows, columns=classes, header=("masks", "metric"))


@guarded
def _run(args: argparse.Namespace) -> int:
    from ..comm import cleanup, get_rank, get_world_size, init_distributed, resolve_device
    from ..data import CocoInstanceDataset
    from ..engine import load_trained_model, metrics_table
    from ..engine.data import build_datasets, build_val_loader
    from ..engine.inference import build_evaluator, evaluate_model, tta_kwargs
    from ..engine.tables import format_metrics

    overrides = collect_overrides(args) + tta_overrides(args)
    if args.device:
        overrides.append(f"train.device={args.device}")
    model, cfg, _ = load_trained_model(args.weights, config=args.config, overrides=overrides)
    out = args.output or args.weights.parent / "eval"
    device = resolve_device(cfg.train.device)
    init_distributed(device)
    try:
        if get_rank() == 0:
            prepare_output_dir(out, overwrite=args.overwrite)
        if args.ann is not None:
            if args.images is None:
                raise FileNotFoundError("--ann needs --images (the folder file_name is "
                                        "relative to)")
            ds = CocoInstanceDataset(args.images, args.ann, train=False)
        else:
            ds = build_datasets(cfg, splits=("val",))["val"]
        loader = build_val_loader(ds, rank=get_rank(), world_size=get_world_size(),
                                  max_images=args.max_images or cfg.eval.max_images)
        model.to(device)
        evaluator = build_evaluator(ds, model, cfg.eval, output_dir=out)
        results = evaluate_model(model, loader, evaluator, device,
                                 progress=not args.no_progress, **tta_kwargs(cfg.eval))
        if get_rank() == 0:
            path = Path(out) / "eval_results.json"
            path.write_text(json.dumps(results, indent=2))
            print(f"box AP {results['bbox']['AP']:.1f}" if "bbox" in results else "")
            table = metrics_table(results)
            print(format_metrics({ROW_NAMES.get(k, k): row for k, row in table.items()}))
            per_class = format_per_class(results)
            if per_class:
                print(per_class)
            print(f"wrote {path}")
    finally:
        cleanup()
    return 0
