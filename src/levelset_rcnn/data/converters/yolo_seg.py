"""Ultralytics YOLO segmentation labels -> COCO JSON.

One ``<stem>.txt`` per image in the labels folder; one instance per line,
``<class_index> x1 y1 x2 y2 ...`` with vertices normalised to [0, 1] by image width and
height. An image without a label file (or with an empty one) is kept as a negative; a label
file without an image is left out with a warning (counted). By default class indices are the
80 COCO classes, mapped to COCO's category ids and names; ``names`` gives another class list
(then category ids are ``index + 1``). Every image is decoded once (``verify=True``), so a
truncated file is an error at conversion, not hours into training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..coco_json import polygon_area
from ..errors import DatasetError
from ..image_io import read_image_size
from .coco_classes import COCO80_CAT_IDS, coco80_categories
from .common import CocoBuilder, check_output, write_coco_json

__all__ = ["convert_yolo_seg", "parse_yolo_seg_line", "IMAGE_SUFFIXES"]

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_yolo_seg_line(line: str, *, num_classes: int, where: str) -> tuple[int, list[float]]:
    """``(class_index, [x1, y1, ...] normalised)`` of one label line.

    Raises:
        DatasetError: not numbers, a class index out of range, an odd number of
            coordinates or a coordinate that is NaN, infinite or outside [0, 1]; ``where``
            (``file:line``) is named.
    """
    fields = line.split()
    try:
        cls = int(fields[0])
        xy = [float(v) for v in fields[1:]]
    except ValueError as exc:
        raise DatasetError(f"{where}: not a YOLO segmentation line: {line.strip()!r}") from exc
    if not 0 <= cls < num_classes:
        raise DatasetError(f"{where}: class index {cls} outside 0..{num_classes - 1}")
    if len(xy) % 2:
        raise DatasetError(f"{where}: odd number of coordinates ({len(xy)})")
    for i, v in enumerate(xy):
        if not math.isfinite(v):
            raise DatasetError(f"{where}: coordinate {i + 1} is {v}, not a finite number")
        if not -1e-6 <= v <= 1 + 1e-6:
            raise DatasetError(f"{where}: coordinates must be normalised to [0, 1] "
                               f"(coordinate {i + 1} is {v})")
    return cls, xy


def _categories(names: Sequence[str] | None) -> tuple[list[dict], list[int]]:
    if names is None:
        return coco80_categories(), list(COCO80_CAT_IDS)
    cats = [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(names)]
    return cats, [c["id"] for c in cats]


def convert_yolo_seg(images: str | Path, labels: str | Path, out: str | Path, *,
                     names: Sequence[str] | None = None, overwrite: bool = False,
                     progress: bool = True, verify: bool = True) -> Path:
    """Convert a YOLO segmentation dataset to a COCO instances JSON with polygon masks.

    Args:
        images: folder of images (``file_name`` is relative to it).
        labels: folder of ``<stem>.txt`` label files.
        out: the JSON file to write.
        names: class names by index; ``None`` = the 80 COCO classes with COCO's ids.
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar.
        verify: decode every image (a truncated or corrupt one raises); ``False`` reads
            only the headers (faster; such an image then fails when it is loaded).

    Image ids are the numeric file stems when every stem is a distinct integer (as in COCO,
    ``000000000009.jpg`` -> 9), else 1..N in sorted order. A polygon with fewer than three
    vertices or zero area is skipped with a warning; malformed lines raise.
    """
    check_output(out, overwrite)
    images, labels = Path(images), Path(labels)
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"folder not found: {folder}")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in paths]
    numeric = all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
    cats, cat_ids = _categories(names)
    builder = CocoBuilder(cats, description=f"converted from YOLO labels in {labels}")
    known = set(stems)
    orphans = sorted(p for p in labels.glob("*.txt") if p.stem not in known)
    if orphans:
        logger.warning("%s: %d label file(s) have no image in %s and are left out: %s%s",
                       labels, len(orphans), images, ", ".join(p.name for p in orphans[:10]),
                       " ..." if len(orphans) > 10 else "")
        builder.notes.append(f"{len(orphans)} label file(s) without an image left out")
    for k, path in enumerate(tqdm(paths, desc="yolo-seg", disable=not progress)):
        h, w = read_image_size(path, verify=verify)
        image_id = builder.add_image(path.name, h, w, int(path.stem) if numeric else k + 1)
        label_path = labels / f"{path.stem}.txt"
        if not label_path.is_file():
            continue
        for n, line in enumerate(label_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{label_path}:{n}"
            cls, xy = parse_yolo_seg_line(line, num_classes=len(cat_ids), where=where)
            poly = [v * (w if i % 2 == 0 else h) for i, v in enumerate(xy)]
            if len(poly) < 6 or polygon_area(poly) <= 0:
                builder.skip(f"{where}: degenerate polygon ({len(poly) // 2} vertices)")
                continue
            rle = mask_utils.frPyObjects([poly], h, w)
            area = float(mask_utils.area(rle)[0])
            xs, ys = poly[0::2], poly[1::2]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            builder.add_annotation(image_id, cat_ids[cls], [poly], area=area, bbox=bbox)
    if builder.num_skipped:
        logger.warning("%s: skipped %d degenerate polygons", labels, builder.num_skipped)
        builder.notes.append(f"{builder.num_skipped} degenerate polygon(s) skipped")
    builder.verified = verify
    return write_coco_json(builder.to_dict(), out, overwrite=overwrite)
