"""Loading and validating COCO instance JSON before anything touches torch.

Structural problems (malformed JSON, a missing section, duplicate ids, an annotation that
points at an unknown image or category, an RLE whose size differs from its image, an absurd
image size) raise :class:`DatasetError` naming the file and the record. A single unusable
annotation (a degenerate polygon, a zero-area box, no segmentation, a NaN, infinite or
absurd coordinate, an RLE whose counts are corrupt or do not cover its image, a bad
``iscrowd``) is skipped with a warning and counted, unless ``strict=True``. Nothing that
fails these checks reaches pycocotools' C code (:mod:`.sanity`); polygon vertices far
outside their image are clipped to a one-pixel margin around it first. A file with no
instance left is accepted with a warning.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .errors import DatasetError
from .masks import segmentation_to_rle
from .sanity import (
    bbox_problem,
    clip_polygon,
    image_size_problem,
    outside_window,
    polygon_problem,
    rle_problem,
)

__all__ = ["LoadedCoco", "load_coco_json", "validate_coco_dict", "coco_from_dict", "polygon_area"]

logger = logging.getLogger(__name__)
_MAX_WARNINGS = 10


@dataclass
class LoadedCoco:
    """A validated COCO dataset: the cleaned JSON dict and what was dropped from it."""

    path: Path
    data: dict[str, Any]
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)  # one reason per skipped annotation


def polygon_area(xy: list[float]) -> float:
    """Shoelace area of a flat ``[x0, y0, x1, y1, ...]`` polygon (absolute value)."""
    xs, ys = xy[0::2], xy[1::2]
    n = len(xs)
    s = 0.0
    for i in range(n):
        j = (i + 1) % n
        s += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(s) / 2.0


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object built from a dict, without its index-building chatter."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _require_list(data: dict, key: str, path: Path, *, optional: bool = False) -> list:
    if key not in data:
        if optional:
            return []
        raise DatasetError(f"{path}: missing the '{key}' section of a COCO instances file")
    value = data[key]
    if not isinstance(value, list):
        raise DatasetError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _check_images(images: list, path: Path) -> dict[int, dict]:
    by_id: dict[int, dict] = {}
    for k, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            raise DatasetError(f"{path}: images[{k}] has no integer 'id'")
        iid = img["id"]
        if iid in by_id:
            raise DatasetError(f"{path}: duplicate image id {iid}")
        if not isinstance(img.get("file_name"), str):
            raise DatasetError(f"{path}: image id {iid} has no 'file_name'")
        problem = image_size_problem(img.get("height"), img.get("width"))
        if problem:
            raise DatasetError(f"{path}: image id {iid} ({img['file_name']}): {problem}")
        by_id[iid] = img
    return by_id


def _check_categories(categories: list, path: Path) -> set[int]:
    ids: set[int] = set()
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise DatasetError(f"{path}: categories[{k}] has no integer 'id'")
        if cat["id"] in ids:
            raise DatasetError(f"{path}: duplicate category id {cat['id']}")
        if not isinstance(cat.get("name"), str):
            raise DatasetError(f"{path}: category id {cat['id']} has no 'name'")
        ids.add(cat["id"])
    return ids


def _clean_polygons(seg: list, aid: int, h: int, w: int) -> list | str:
    """The usable polygons of ``seg`` (clipped to the image's margin where they reach far
    outside it), or the reason to skip the annotation."""
    good = []
    for k, poly in enumerate(seg):
        problem = polygon_problem(poly)
        if problem:
            return f"annotation id {aid}: segmentation[{k}]: {problem}"
        if outside_window(poly, h, w):
            poly = clip_polygon(poly, h, w)
        if len(poly) >= 6 and polygon_area(poly) > 0:
            good.append(poly)
    if not good:
        return (f"annotation id {aid}: degenerate polygon (fewer than 3 points or zero area "
                f"inside the {w}x{h} image)")
    return good


def _clean_annotation(ann: dict, img: dict, path: Path) -> str | None:
    """Fix up ``ann`` in place; return a reason string when it must be skipped."""
    aid = ann["id"]
    h, w = img["height"], img["width"]
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        good = _clean_polygons(seg, aid, h, w)
        if isinstance(good, str):
            return good
        ann["segmentation"] = seg = good
    elif isinstance(seg, dict):
        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2) or "counts" not in seg:
            return f"annotation id {aid}: RLE without 'size' and 'counts'"
        if list(size) != [h, w]:
            raise DatasetError(f"{path}: annotation id {aid}: mask size {size} (h, w) differs "
                               f"from its image id {img['id']} ({img['file_name']}, {h}x{w})")
        problem = rle_problem(seg)
        if problem:
            return f"annotation id {aid}: {problem}"
    else:
        return f"annotation id {aid}: no 'segmentation'"
    bbox = ann.get("bbox")
    if bbox is None:  # some exporters omit it: take the mask's extent
        bbox = [float(v) for v in mask_utils.toBbox(segmentation_to_rle(seg, h, w))]
    problem = bbox_problem(bbox)
    if problem:
        return f"annotation id {aid}: {problem}"
    x0, y0 = max(0.0, float(bbox[0])), max(0.0, float(bbox[1]))
    x1, y1 = min(float(w), bbox[0] + bbox[2]), min(float(h), bbox[1] + bbox[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return f"annotation id {aid}: zero-area box {bbox} (inside a {w}x{h} image)"
    ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    crowd = ann.get("iscrowd", 0)
    if isinstance(crowd, str) or crowd not in (0, 1):
        return f"annotation id {aid}: 'iscrowd' must be 0 or 1, got {crowd!r}"
    ann["iscrowd"] = int(crowd)
    area = ann.get("area")
    if not (_is_number(area) and math.isfinite(area) and area >= 0):
        # missing, NaN, infinite or negative: the mask's own area (what COCO defines it as)
        ann["area"] = float(mask_utils.area(segmentation_to_rle(seg, h, w)))
    return None


def load_coco_json(path: str | Path, *, strict: bool = False) -> LoadedCoco:
    """Read and validate a COCO instances JSON file.

    Args:
        path: the JSON file.
        strict: raise on the first unusable annotation instead of skipping it.

    Returns:
        the cleaned dataset (skipped annotations removed, boxes clipped to the image, a
        missing ``bbox`` or ``area`` taken from the mask) and the number and reasons of
        skipped annotations.

    Raises:
        DatasetError: the file is missing, not JSON, or structurally inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    return validate_coco_dict(raw, path, strict=strict, copy=False)


def validate_coco_dict(raw: Any, path: str | Path, *, strict: bool = False,
                       copy: bool = True) -> LoadedCoco:
    """Validate an already parsed COCO dict (see :func:`load_coco_json`).

    ``path`` only names the source in messages. With ``copy=False`` the annotations of
    ``raw`` are fixed up in place (cheaper for large files).
    """
    path = Path(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, got {type(raw).__name__}")
    data = copy_module.deepcopy(raw) if copy else dict(raw)
    images = _check_images(_require_list(data, "images", path), path)
    cat_ids = _check_categories(_require_list(data, "categories", path), path)
    anns = _require_list(data, "annotations", path)
    kept: list[dict] = []
    skipped: list[str] = []
    seen: set[int] = set()
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            raise DatasetError(f"{path}: annotations[{k}] has no integer 'id'")
        aid = ann["id"]
        if aid in seen:
            raise DatasetError(f"{path}: duplicate annotation id {aid}")
        seen.add(aid)
        if ann.get("image_id") not in images:
            raise DatasetError(f"{path}: annotation id {aid} refers to unknown image id "
                               f"{ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise DatasetError(f"{path}: annotation id {aid} has unknown category id "
                               f"{ann.get('category_id')!r} (known: {sorted(cat_ids)})")
        reason = _clean_annotation(ann, images[ann["image_id"]], path)
        if reason is None:
            kept.append(ann)
            continue
        if strict:
            raise DatasetError(f"{path}: {reason}")
        if len(skipped) < _MAX_WARNINGS:
            logger.warning("%s: skipping %s", path, reason)
        skipped.append(reason)
    if skipped:
        logger.warning("%s: skipped %d of %d annotations", path, len(skipped), len(anns))
    if not kept:
        logger.warning("%s: no instances (%s): training learns nothing from it and its AP "
                       "is undefined", path,
                       "empty 'annotations' list" if not anns else "every annotation skipped")
    data["annotations"] = kept
    return LoadedCoco(path=path, data=data, num_skipped=len(skipped), skipped=skipped)
