"""``levelset-rcnn predict``: run a trained model on images or folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_tta_args, collect_overrides, guarded, prepare_output_dir, tta_overrides

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict on images or folders: overlays, COCO results, polygons",
        description="Run WEIGHTS on image files and/or folders (png, jpg, bmp, tif, webp). "
                    "Writes OUTPUT/overlays/<stem>.png (masks, sub-pixel contours of the "
                    "level set, boxes, labels; <name with suffix>.png, with parent folders "
                    "for the same name in two folders, where stems clash; "
                    "OUTPUT/overlays.json maps inputs to overlays), OUTPUT/results.json (COCO "
                    "results: xywh "
                    "boxes, RLE masks; image ids in OUTPUT/image_ids.json) and, with "
                    "--polygons, OUTPUT/polygons.json (per image, per instance: label, score, "
                    "box and closed (x, y) polygons). An image that cannot be read is "
                    "skipped with a message; the others go on (exit code 1 if none could "
                    "be read).")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    p.add_argument("--weights", type=Path, required=True, help="trained model file")
    p.add_argument("--output", type=Path, default=Path("predictions"),
                   help="output folder (default: %(default)s)")
    p.add_argument("--config", default=None,
                   help="recipe: a YAML file or a packaged recipe's name (default: the one "
                        "stored in WEIGHTS)")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="keep detections scoring at least this (default: %(default)s)")
    p.add_argument("--polygons", action="store_true", help="also write polygons.json")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", dest="set_overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides, e.g. model.box_detections_per_img=50")
    add_tta_args(p)
    p.set_defaults(func=_run, overrides=[], extra_positionals="inputs")


@guarded
def _run(args: argparse.Namespace) -> int:
    from ..comm import resolve_device
    from ..engine import load_trained_model
    from ..engine.inference import tta_kwargs
    from ..engine.predict import collect_images, run_predict

    overrides = collect_overrides(args) + tta_overrides(args)
    if args.device:
        overrides.append(f"train.device={args.device}")
    images = collect_images(args.inputs)
    if not images:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, args.inputs))}")
    model, cfg, meta = load_trained_model(args.weights, config=args.config,
                                          overrides=overrides)
    device = resolve_device(cfg.train.device)
    prepare_output_dir(args.output, overwrite=args.overwrite)
    result = run_predict(model.to(device), images, args.output, device=device,
                         class_names=meta.get("class_names"),
                         label_to_cat_id=meta.get("label_to_cat_id"),
                         score_thresh=args.score_thresh, polygons=args.polygons,
                         progress=not args.no_progress, **tta_kwargs(cfg.eval))
    print(f"predicted {len(result['done'])} image(s), skipped {len(result['skipped'])}; "
          f"wrote {args.output}/overlays/, {args.output}/results.json"
          + (f", {args.output}/polygons.json" if args.polygons else ""))
    for path, why in result["skipped"]:
        print(f"skipped {path}: {why}")
    return 0
