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
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="evaluate the first N only (N >= 1)")
    p.add_argument("--class-map", nargs="+", default=None, metavar="CKPT=JSON",
                   help="how the checkpoint's classes correspond to the dataset's, when their "
                        "names differ (refused otherwise): CKPT=JSON pairs of class names, "
                        "CKPT=- to drop a class's detections, or one JSON file holding an "
                        "object of such pairs (null drops)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tta_args(p)
    add_override_args(p)
    p.set_defaults(func=_run, extra_positionals="overrides")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    from ..engine.classes import FilteredEvaluator, class_list, parse_class_map, resolve_classes
    from ..engine.data import base_dataset, build_datasets, build_val_loader
    from ..engine.inference import build_evaluator, evaluate_model, tta_kwargs
    from ..engine.tables import format_metrics

    overrides = collect_overrides(args) + tta_overrides(args)
    if args.device:
        overrides.append(f"train.device={args.device}")
    class_map = parse_class_map(args.class_map)
    model, cfg, meta = load_trained_model(args.weights, config=args.config, overrides=overrides)
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
        # The model's classes against the dataset's, before any inference.
        base = base_dataset(ds)
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        n_model = getattr(getattr(predictor, "cls_score", None), "out_features", None)
        mapping, dropped = resolve_classes(class_list(meta), base, class_map=class_map,
                                           model_num_classes=n_model, source=str(args.weights))
        base.label_to_cat_id = mapping  # model label -> this dataset's category id
        max_images = args.max_images if args.max_images is not None else cfg.eval.max_images
        loader = build_val_loader(ds, rank=get_rank(), world_size=get_world_size(),
                                  max_images=max_images)
        model.to(device)
        evaluator = build_evaluator(ds, model, cfg.eval, output_dir=out)
        if dropped:
            evaluator = FilteredEvaluator(evaluator, dropped)
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
