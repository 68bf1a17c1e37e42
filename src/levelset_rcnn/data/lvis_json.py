"""The LVIS annotation file format: the COCO <-> LVIS category correspondence and reading
and checking an LVIS JSON.

Shared by the LVIS converter (:func:`~levelset_rcnn.data.converters.convert_lvis`) and the LVIS
AP* evaluator (:class:`~levelset_rcnn.evaluation.LVISEvaluator`). COCO categories are matched
to LVIS categories by WordNet synset (:data:`COCO_LVIS_SYNSETS`), which works for LVIS v0.5 and
v1; v1 has no category for COCO's "hot dog" (``frank.n.02``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .sanity import (
    bbox_problem,
    image_size_problem,
    outside_window,
    polygon_problem,
    rle_problem,
)

__all__ = ["COCO_LVIS_SYNSETS", "LVISFormatError", "annotation_values_problem", "check_lvis_dict",
           "coco_to_lvis_category_ids", "read_lvis_json"]

logger = logging.getLogger(__name__)

# COCO category id -> (COCO name, LVIS synset). The pairs are those of lvis-api's
# data/coco_to_synset.json (written for LVIS v0.5); some synsets are not the obvious word
# (cow -> beef.n.01, handbag -> bag.n.04, suitcase -> bag.n.06, hot dog -> frank.n.02, potted
# plant -> pot.n.04, hair drier -> hand_blower.n.01). LVIS v1 has all but frank.n.02.
COCO_LVIS_SYNSETS: dict[int, tuple[str, str]] = {
    1: ("person", "person.n.01"), 2: ("bicycle", "bicycle.n.01"), 3: ("car", "car.n.01"),
    4: ("motorcycle", "motorcycle.n.01"), 5: ("airplane", "airplane.n.01"),
    6: ("bus", "bus.n.01"), 7: ("train", "train.n.01"), 8: ("truck", "truck.n.01"),
    9: ("boat", "boat.n.01"), 10: ("traffic light", "traffic_light.n.01"),
    11: ("fire hydrant", "fireplug.n.01"), 13: ("stop sign", "stop_sign.n.01"),
    14: ("parking meter", "parking_meter.n.01"), 15: ("bench", "bench.n.01"),
    16: ("bird", "bird.n.01"), 17: ("cat", "cat.n.01"), 18: ("dog", "dog.n.01"),
    19: ("horse", "horse.n.01"), 20: ("sheep", "sheep.n.01"), 21: ("cow", "beef.n.01"),
    22: ("elephant", "elephant.n.01"), 23: ("bear", "bear.n.01"), 24: ("zebra", "zebra.n.01"),
    25: ("giraffe", "giraffe.n.01"), 27: ("backpack", "backpack.n.01"),
    28: ("umbrella", "umbrella.n.01"), 31: ("handbag", "bag.n.04"), 32: ("tie", "necktie.n.01"),
    33: ("suitcase", "bag.n.06"), 34: ("frisbee", "frisbee.n.01"), 35: ("skis", "ski.n.01"),
    36: ("snowboard", "snowboard.n.01"), 37: ("sports ball", "ball.n.06"),
    38: ("kite", "kite.n.03"), 39: ("baseball bat", "baseball_bat.n.01"),
    40: ("baseball glove", "baseball_glove.n.01"), 41: ("skateboard", "skateboard.n.01"),
    42: ("surfboard", "surfboard.n.01"), 43: ("tennis racket", "tennis_racket.n.01"),
    44: ("bottle", "bottle.n.01"), 46: ("wine glass", "wineglass.n.01"),
    47: ("cup", "cup.n.01"), 48: ("fork", "fork.n.01"), 49: ("knife", "knife.n.01"),
    50: ("spoon", "spoon.n.01"), 51: ("bowl", "bowl.n.03"), 52: ("banana", "banana.n.02"),
    53: ("apple", "apple.n.01"), 54: ("sandwich", "sandwich.n.01"),
    55: ("orange", "orange.n.01"), 56: ("broccoli", "broccoli.n.01"),
    57: ("carrot", "carrot.n.01"), 58: ("hot dog", "frank.n.02"), 59: ("pizza", "pizza.n.01"),
    60: ("donut", "doughnut.n.02"), 61: ("cake", "cake.n.03"), 62: ("chair", "chair.n.01"),
    63: ("couch", "sofa.n.01"), 64: ("potted plant", "pot.n.04"), 65: ("bed", "bed.n.01"),
    67: ("dining table", "dining_table.n.01"), 70: ("toilet", "toilet.n.02"),
    72: ("tv", "television_receiver.n.01"), 73: ("laptop", "laptop.n.01"),
    74: ("mouse", "mouse.n.04"), 75: ("remote", "remote_control.n.01"),
    76: ("keyboard", "computer_keyboard.n.01"), 77: ("cell phone", "cellular_telephone.n.01"),
    78: ("microwave", "microwave.n.02"), 79: ("oven", "oven.n.01"),
    80: ("toaster", "toaster.n.02"), 81: ("sink", "sink.n.01"),
    82: ("refrigerator", "electric_refrigerator.n.01"), 84: ("book", "book.n.01"),
    85: ("clock", "clock.n.01"), 86: ("vase", "vase.n.01"), 87: ("scissors", "scissors.n.01"),
    88: ("teddy bear", "teddy.n.01"), 89: ("hair drier", "hand_blower.n.01"),
    90: ("toothbrush", "toothbrush.n.01"),
}


class LVISFormatError(ValueError):
    """An LVIS file is missing, malformed, or does not cover the model's categories.

    The message names the file and the record or field at fault.
    """


def read_lvis_json(path: str | Path) -> dict[str, Any]:
    """Parse an LVIS annotation JSON and check it with :func:`check_lvis_dict`."""
    path = Path(path)
    if not path.is_file():
        raise LVISFormatError(f"LVIS annotation file not found: {path} (download e.g. "
                              "lvis_v1_val.json or lvis_v0.5_val.json from lvisdataset.org)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LVISFormatError(f"{path}: not valid JSON: {exc}") from exc
    check_lvis_dict(data, path)
    return data


def check_lvis_dict(data: Any, source: str | Path) -> None:
    """Check the fields that LVIS evaluation reads; ``source`` names the file in messages.

    Needed: ``images`` (``id``, ``height``, ``width``, ``neg_category_ids``,
    ``not_exhaustive_category_ids``), ``categories`` (``id``; ``synset`` and a
    ``frequency`` in r/c/f, at least one category having a synset) and ``annotations``
    (``id``, ``image_id``, ``category_id`` of known records, ``segmentation``, ``area``,
    ``bbox``), whose numbers must be safe for the LVIS API's C rasteriser
    (:func:`annotation_values_problem`). A category without ``synset`` (a COCO class that
    :func:`~levelset_rcnn.data.converters.lvis.convert_lvis` left without LVIS category)
    matches nothing.

    Raises:
        LVISFormatError: the first missing or inconsistent field, naming the record.
    """
    if not isinstance(data, dict):
        raise LVISFormatError(f"{source}: top level must be a JSON object, got "
                              f"{type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LVISFormatError(f"{source}: missing the '{key}' list of an LVIS file")
    cat_ids = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise LVISFormatError(f"{source}: categories[{k}] has no integer 'id'")
        cat_ids.add(cat["id"])
        if "synset" not in cat:
            continue
        what = f"{source}: category id {cat['id']} ({cat.get('name', '?')})"
        if not isinstance(cat["synset"], str):
            raise LVISFormatError(f"{what}: 'synset' must be a string, got {cat['synset']!r}")
        if cat.get("frequency") not in ("r", "c", "f"):
            raise LVISFormatError(f"{what} has no 'frequency' 'r', 'c' or 'f' (got "
                                  f"{cat.get('frequency')!r})")
    if data["categories"] and not any("synset" in c for c in data["categories"]):
        cat = data["categories"][0]
        raise LVISFormatError(f"{source}: no category has a 'synset' (e.g. category id "
                              f"{cat['id']} ({cat.get('name', '?')})): not an LVIS file? LVIS "
                              "categories carry their WordNet synset, e.g. 'person.n.01'")
    images: dict[int, dict] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            raise LVISFormatError(f"{source}: images[{k}] has no integer 'id'")
        for key in ("height", "width"):
            if not isinstance(img.get(key), int) or img[key] <= 0:
                raise LVISFormatError(f"{source}: image id {img['id']} has no positive "
                                      f"integer '{key}'")
        size_problem = image_size_problem(img["height"], img["width"])
        if size_problem:
            raise LVISFormatError(f"{source}: image id {img['id']}: {size_problem}")
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if not isinstance(img.get(key), list):
                raise LVISFormatError(f"{source}: image id {img['id']} has no '{key}' list "
                                      "(an LVIS image record lists them, possibly empty)")
        images[img["id"]] = img
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            raise LVISFormatError(f"{source}: annotations[{k}] has no integer 'id'")
        what = f"{source}: annotation id {ann['id']}"
        if ann.get("image_id") not in images:
            raise LVISFormatError(f"{what} refers to unknown image id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise LVISFormatError(f"{what} has unknown category id {ann.get('category_id')!r}")
        for key in ("segmentation", "area", "bbox"):
            if key not in ann:
                raise LVISFormatError(f"{what} has no '{key}'")
        problem = annotation_values_problem(ann, images[ann["image_id"]])
        if problem:
            raise LVISFormatError(f"{what}: {problem}")


def annotation_values_problem(ann: Mapping[str, Any], img: Mapping[str, Any]) -> str | None:
    """Why the numbers of an LVIS annotation cannot be given to the LVIS API (whose
    rasteriser is pycocotools' C code), or None: polygons of finite coordinates lying within
    one image size around their image, a valid RLE of the image's size, a finite ``bbox``
    with non-negative sides and a finite, non-negative ``area``."""
    h, w = img["height"], img["width"]
    seg = ann["segmentation"]
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            problem = polygon_problem(poly)
            if problem:
                return f"segmentation[{k}]: {problem}"
            if outside_window(poly, h, w, margin=max(h, w)):
                return (f"segmentation[{k}] has a vertex far outside its {w}x{h} image "
                        f"(x in [{min(poly[0::2])}, {max(poly[0::2])}], y in "
                        f"[{min(poly[1::2])}, {max(poly[1::2])}])")
    elif isinstance(seg, dict):
        if seg.get("size") != [h, w]:
            return f"RLE size {seg.get('size')!r} differs from its {w}x{h} image"
        problem = rle_problem(seg)
        if problem:
            return problem
    else:
        return f"'segmentation' must be polygons or an RLE, got {type(seg).__name__}"
    problem = bbox_problem(ann["bbox"])
    if problem:
        return problem
    area = ann["area"]
    if (isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area)
            or area < 0):
        return f"'area' must be a finite, non-negative number, got {area!r}"
    return None


def coco_to_lvis_category_ids(categories: Sequence[Mapping[str, Any]],
                              coco_cat_ids: Sequence[int], *, source: str | Path,
                              drop_missing: bool = False) -> dict[int, int]:
    """``{COCO category id: LVIS category id}`` for ``coco_cat_ids``, matched by synset.

    Args:
        categories: the LVIS file's ``categories`` records (``id``, ``synset``).
        coco_cat_ids: COCO category ids (1-90) to map.
        source: the LVIS file, named in messages.
        drop_missing: leave out (with a warning) COCO categories whose synset the file
            lacks, instead of raising; they are then absent from the result.

    Raises:
        LVISFormatError: an id that is not one of the 80 COCO categories, a synset listed
            twice, or (unless ``drop_missing``) COCO categories whose synset the file lacks
            (all of them are listed).
    """
    by_synset: dict[str, int] = {}
    no_synset = []
    for cat in categories:
        synset = cat.get("synset")
        if not isinstance(synset, str):
            no_synset.append(f"{cat.get('id')} ({cat.get('name', '?')})")
            continue
        if synset in by_synset:
            raise LVISFormatError(f"{source}: synset {synset!r} is listed by category ids "
                                  f"{by_synset[synset]} and {cat.get('id')}")
        by_synset[synset] = cat["id"]
    unknown = sorted(set(coco_cat_ids) - set(COCO_LVIS_SYNSETS))
    if unknown:
        raise LVISFormatError(
            f"category ids {unknown} are not COCO categories (1-90, ids 12, 26, 29, 30, 45, "
            "66, 68, 69, 71, 83 unused): LVIS AP* scores a model trained on the 80 COCO "
            "classes, evaluated on a dataset with COCO category ids (see convert_lvis)")
    missing = [c for c in sorted(set(coco_cat_ids)) if COCO_LVIS_SYNSETS[c][1] not in by_synset]
    if missing:
        listed = ", ".join(f"{c} {COCO_LVIS_SYNSETS[c][0]!r} -> {COCO_LVIS_SYNSETS[c][1]!r}"
                           for c in missing)
        message = (f"{source}: no LVIS category for {len(missing)} COCO categories the model "
                   f"predicts (COCO id, name -> synset): {listed}")
        if no_synset:
            message += (f"; {len(no_synset)} categories of the file have no 'synset', e.g. "
                        f"id {no_synset[0]}")
        if not drop_missing:
            raise LVISFormatError(message + " (LVIS v1 has no 'hot dog'; drop_missing=True / "
                                  "--drop-missing leaves such classes out)")
        logger.warning("%s; left out of LVIS AP*", message)
    return {c: by_synset[COCO_LVIS_SYNSETS[c][1]] for c in coco_cat_ids if c not in missing}
