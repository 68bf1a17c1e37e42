"""``levelset-rcnn export``: write a trained model as ONNX or TorchScript (fixed size, batch 1)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ._common import collect_overrides, guarded

__all__ = ["register"]

_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained model to ONNX or TorchScript (fixed size, batch 1)",
        description="Trace WEIGHTS for (1, 3, H, W) float32 RGB images in [0, 1] and write an "
                    "ONNX file (input 'images'; outputs boxes (K, 4), labels (K,), scores (K,), "
                    "masks (K, 1, H, W): full-image mask probabilities as in eager mode; with "
                    "--tsdf also tsdf and tsdf_init (K, 1, 112, 112)) or a TorchScript module "
                    "returning the same dict. K is dynamic (zero included); the input size, "
                    "the score threshold and every other setting are fixed in the file.")
    p.add_argument("--weights", type=Path, required=True, help="trained model file "
                   "(model_final.pth / checkpoint_last.pth of levelset-rcnn train)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="(default: %(default)s)")
    p.add_argument("--output", type=Path, default=None,
                   help="file to write (default: model.onnx / model.pt)")
    p.add_argument("--height", type=int, default=None,
                   help="input height (default: the model's test size, min_size)")
    p.add_argument("--width", type=int, default=None,
                   help="input width (default: the height)")
    p.add_argument("--tsdf", action="store_true",
                   help="also output the level sets tsdf and tsdf_init (level-set models)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default: levelset_rcnn.export.DEFAULT_OPSET)")
    p.add_argument("--config", default=None,
                   help="recipe: a YAML file or a packaged recipe's name (default: the one "
                        "stored in WEIGHTS)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--set", dest="set_overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides baked into the file, e.g. model.box_score_thresh=0.3 "
                        "model.box_detections_per_img=50")
    p.set_defaults(func=_run, overrides=[])


@guarded
def _run(args: argparse.Namespace) -> int:
    if args.format == "onnx" and importlib.util.find_spec("onnx") is None:
        print("error: ONNX export needs the onnx package (pip install onnx; onnxruntime to "
              "run the file)", file=sys.stderr)
        return 1
    output = args.output or Path("model" + _SUFFIXES[args.format])
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if output.is_dir():
        raise FileExistsError(f"{output} is a folder; --output names the file to write")

    from ..engine import load_trained_model
    from ..export import DEFAULT_OPSET, export_onnx, export_torchscript, output_names

    model, cfg, _ = load_trained_model(args.weights, config=args.config,
                                       overrides=collect_overrides(args))
    height = int(cfg.model.min_size[-1]) if args.height is None else args.height
    width = height if args.width is None else args.width
    if height < 1 or width < 1:
        print(f"error: --height and --width must be positive, got {height} x {width}",
              file=sys.stderr)
        return 1
    if args.tsdf and not getattr(model.mask_branch, "predicts_level_sets", False):
        print(f"error: --tsdf needs a level-set model; {cfg.model.arch} with "
              f"{cfg.model.mask_head_type} masks has no tsdf", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "onnx":
        export_onnx(model, output, height=height, width=width, return_tsdf=args.tsdf,
                    opset_version=args.opset or DEFAULT_OPSET)
    else:
        export_torchscript(model, output, height=height, width=width, return_tsdf=args.tsdf)
    print(f"wrote {output} ({args.format}): input images (1, 3, {height}, {width}) float32 RGB "
          f"in [0, 1]; outputs {', '.join(output_names(args.tsdf))}")
    return 0
