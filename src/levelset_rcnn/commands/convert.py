"""``levelset-rcnn convert``: turn common instance-segmentation layouts into COCO JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import guarded


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a dataset (Cityscapes, LVIS, DSB2018 masks, YOLO segmentation, synthetic) to "
             "COCO JSON",
        description="Write a COCO instances JSON from another layout. An existing output is "
                    "never replaced without --overwrite.")
    kinds = p.add_subparsers(dest="kind", metavar="FORMAT", required=True)

    d = kinds.add_parser("dsb2018", help="Kaggle DSB2018 layout: one PNG mask per instance",
                         description="SRC/<id>/images/<id>.png + SRC/<id>/masks/*.png -> COCO "
                                     "(one class 'nucleus', exact RLE masks). file_name is "
                                     "relative to SRC.")
    d.add_argument("src", type=Path, help="the stage1_train folder (or its parent)")
    d.add_argument("out", type=Path, help="output JSON")
    d.add_argument("--split", choices=("train", "val", "all"), default="all",
                   help="first 80%% of sorted ids (train), the rest (val), or all "
                        "(default: %(default)s)")
    d.set_defaults(func=_dsb2018)

    c = kinds.add_parser("cityscapes", help="Cityscapes gtFine instances (8 classes)",
                         description="SRC/leftImg8bit/SPLIT/<city>/*_leftImg8bit.png + "
                                     "SRC/gtFine/SPLIT/<city>/*_gtFine_instanceIds.png -> COCO "
                                     "(person, rider, car, truck, bus, train, motorcycle, "
                                     "bicycle; category id = Cityscapes label id; group regions "
                                     "as iscrowd=1; exact RLE masks). file_name is relative to "
                                     "SRC/leftImg8bit/SPLIT.")
    c.add_argument("src", type=Path, help="the Cityscapes root (holds leftImg8bit/ and gtFine/)")
    c.add_argument("out", type=Path, help="output JSON")
    c.add_argument("--split", choices=("train", "val", "test"), default="val",
                   help="(default: %(default)s)")
    c.set_defaults(func=_cityscapes)

    y = kinds.add_parser("yolo-seg", help="Ultralytics YOLO segmentation labels",
                         description="IMAGES/<stem>.jpg + LABELS/<stem>.txt -> COCO polygons. "
                                     "Class indices are the 80 COCO classes (mapped to COCO's "
                                     "category ids) unless --names is given.")
    y.add_argument("images", type=Path, help="image folder")
    y.add_argument("labels", type=Path, help="label folder (<stem>.txt per image)")
    y.add_argument("out", type=Path, help="output JSON")
    y.add_argument("--names", type=Path, default=None,
                   help="text file with one class name per line, in index order "
                        "(category ids become index + 1)")
    y.set_defaults(func=_yolo_seg)

    s = kinds.add_parser("synthetic", help="generate the synthetic textured-shapes dataset",
                         description="Write OUT_DIR/<split>.json and OUT_DIR/<split>/*.png.")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--num-images", type=int, default=200)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", default="train", help="split name (default: %(default)s)")
    s.set_defaults(func=_synthetic)

    v = kinds.add_parser(
        "lvis", help="LVIS annotations restricted to the 80 COCO classes (LVIS AP*)",
        description="LVIS_JSON -> COCO JSON with COCO's 80 categories and ids, for running a "
                    "COCO-trained model on LVIS val (AP*). file_name is <split>/<file> from "
                    "each image's coco_url, relative to the COCO root that holds val2017/ and "
                    "train2017/. The LVIS fields (neg_category_ids, "
                    "not_exhaustive_category_ids) are kept, mapped to COCO ids.")
    v.add_argument("lvis_json", type=Path, help="LVIS annotations, e.g. lvis_v0.5_val.json")
    v.add_argument("out", type=Path, help="output JSON")
    v.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="keep only images from these COCO folders, e.g. val2017 (default: all)")
    v.add_argument("--drop-missing", action="store_true",
                   help="leave out COCO classes the LVIS file lacks (LVIS v1 has no hot dog)")
    v.set_defaults(func=_lvis)

    for parser in (c, d, v, y, s):
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing output")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for parser in (c, d, y):
        parser.add_argument("--no-verify", dest="verify", action="store_false",
                            help="read only the image headers (faster); a truncated or "
                                 "corrupt image then fails when training reaches it "
                                 "(default: every image is decoded once)")


def _report(path: Path) -> int:
    import json

    data = json.loads(path.read_text())
    print(f"wrote {path}: {len(data['images'])} images, {len(data['annotations'])} instances, "
          f"{len(data['categories'])} categories")
    info = data.get("info") or {}
    for note in info.get("notes", []):
        print(f"  {note}")
    if info.get("images_verified") is False:
        print("  images not verified (headers only, --no-verify): a truncated image fails "
              "only when it is loaded")
    elif info.get("images_verified"):
        print("  every image decoded (verified)")
    return 0


@guarded
def _lvis(args: argparse.Namespace) -> int:
    from ..data.converters import convert_lvis

    return _report(convert_lvis(args.lvis_json, args.out, splits=args.splits,
                                drop_missing=args.drop_missing, overwrite=args.overwrite,
                                progress=not args.quiet))


@guarded
def _cityscapes(args: argparse.Namespace) -> int:
    from ..data.converters import convert_cityscapes

    return _report(convert_cityscapes(args.src, args.out, split=args.split,
                                      overwrite=args.overwrite, progress=not args.quiet,
                                      verify=args.verify))


@guarded
def _dsb2018(args: argparse.Namespace) -> int:
    from ..data.converters import convert_dsb2018

    return _report(convert_dsb2018(args.src, args.out, split=args.split,
                                   overwrite=args.overwrite, progress=not args.quiet,
                                   verify=args.verify))


@guarded
def _yolo_seg(args: argparse.Namespace) -> int:
    from ..data.converters import convert_yolo_seg

    names = None
    if args.names is not None:
        names = [n.strip() for n in args.names.read_text().splitlines() if n.strip()]
    return _report(convert_yolo_seg(args.images, args.labels, args.out, names=names,
                                    overwrite=args.overwrite, progress=not args.quiet,
                                    verify=args.verify))


@guarded
def _synthetic(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_synthetic_coco

    return _report(make_synthetic_coco(args.out_dir, num_images=args.num_images,
                                       image_size=args.image_size, seed=args.seed,
                                       split_name=args.split, overwrite=args.overwrite))
