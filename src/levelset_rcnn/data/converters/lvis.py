"""LVIS annotations -> COCO JSON restricted to the 80 COCO categories (for LVIS AP*).

LVIS re-annotates COCO 2017 images; an LVIS image record has ``coco_url`` (e.g.
``http://images.cocodataset.org/val2017/000000397133.jpg``) and no usable ``file_name``.
:func:`convert_lvis` writes a file that :class:`~levelset_rcnn.data.CocoInstanceDataset` and a
COCO-trained model read unchanged:

- ``categories``: the 80 COCO categories with COCO's ids and names (so labels 1..80 are the
  COCO model's), each also carrying its LVIS ``synset``, ``frequency``, ``image_count``,
  ``instance_count`` and ``lvis_id`` (``None`` and no LVIS fields for a class the LVIS file
  lacks, with ``drop_missing``);
- ``images``: LVIS's ids (= COCO's), ``file_name = '<split>/<file>'`` from ``coco_url``
  (relative to the COCO root holding ``val2017/`` and ``train2017/``), and
  ``neg_category_ids`` / ``not_exhaustive_category_ids`` restricted to COCO categories and
  given as COCO ids;
- ``annotations``: the LVIS instances of COCO categories, ids kept, ``category_id`` = COCO id.

The result is also a valid LVIS file (a "cocofied" LVIS), so
:class:`~levelset_rcnn.evaluation.LVISEvaluator` accepts it as well as the
original LVIS JSON. The COCO <-> LVIS correspondence is by WordNet synset
(:data:`~levelset_rcnn.data.lvis_json.COCO_LVIS_SYNSETS`), which works for LVIS
v0.5 and v1; v1 has no category for COCO's "hot dog" (``frank.n.02``), so converting v1
needs ``drop_missing=True``.

LVIS v1 val mixes COCO train2017 and val2017 images; a model trained on COCO train2017 has
seen the former, so pass ``splits=("val2017",)`` to keep only val2017 images (LVIS v0.5 val,
the set of the paper's protocol, is val2017 only).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

from ..errors import DatasetError
from ..lvis_json import LVISFormatError, coco_to_lvis_category_ids, read_lvis_json
from .coco_classes import COCO80_CAT_IDS, coco80_categories
from .common import check_output, write_coco_json

__all__ = ["convert_lvis", "lvis_file_name"]

logger = logging.getLogger(__name__)
_LVIS_CAT_FIELDS = ("synset", "frequency", "image_count", "instance_count")


def lvis_file_name(image: dict[str, Any], source: str | Path) -> str:
    """``'<split>/<file>'`` of an LVIS image record, from its ``coco_url``.

    Raises:
        DatasetError: no ``coco_url``, or one without a folder and a file name.
    """
    url = image.get("coco_url")
    if not isinstance(url, str):
        raise DatasetError(f"{source}: image id {image.get('id')} has no 'coco_url' (LVIS "
                           "images are COCO images named by their coco_url)")
    parts = [p for p in urlparse(url).path.split("/") if p]
    if len(parts) < 2:
        raise DatasetError(f"{source}: image id {image.get('id')}: coco_url {url!r} does not "
                           "end in <split>/<file>")
    return f"{parts[-2]}/{parts[-1]}"


def convert_lvis(lvis_json: str | Path, out: str | Path, *, splits: Sequence[str] | None = None,
                 drop_missing: bool = False, overwrite: bool = False, progress: bool = True
                 ) -> Path:
    """Write the COCO-category subset of an LVIS file as COCO JSON (see the module docstring).

    Args:
        lvis_json: an LVIS annotation file (``lvis_v0.5_val.json``, ``lvis_v1_val.json``).
        out: the JSON file to write.
        splits: keep only images whose ``coco_url`` folder is listed (e.g. ``("val2017",)``);
            ``None`` keeps all.
        drop_missing: keep going (with a warning) when the LVIS file has no category for
            some COCO class (LVIS v1: hot dog); that class then has no instances.
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar.

    Images without any COCO-category instance are kept: their negative categories still count
    false positives in LVIS AP*.

    Raises:
        FileExistsError: ``out`` exists and not ``overwrite``.
        DatasetError: a missing or malformed LVIS file (the message names the file and the
            record), or (unless ``drop_missing``) an LVIS file lacking the synset of some
            COCO category.
    """
    check_output(out, overwrite)
    try:
        data = read_lvis_json(lvis_json)
        coco_to_lvis = coco_to_lvis_category_ids(data["categories"], COCO80_CAT_IDS,
                                                 source=lvis_json, drop_missing=drop_missing)
    except LVISFormatError as exc:
        raise DatasetError(str(exc)) from exc
    lvis_to_coco = {lvis_id: coco_id for coco_id, lvis_id in coco_to_lvis.items()}
    lvis_cats = {c["id"]: c for c in data["categories"]}
    categories = []
    for cat in coco80_categories():
        if cat["id"] not in coco_to_lvis:  # drop_missing
            categories.append({**cat, "lvis_id": None})
            continue
        lvis_cat = lvis_cats[coco_to_lvis[cat["id"]]]
        categories.append({**cat, "lvis_id": lvis_cat["id"],
                           **{k: lvis_cat[k] for k in _LVIS_CAT_FIELDS if k in lvis_cat}})

    images, per_split = [], Counter()
    for img in tqdm(data["images"], desc="lvis", disable=not progress):
        file_name = lvis_file_name(img, lvis_json)
        split = file_name.split("/")[0]
        if splits is not None and split not in splits:
            continue
        per_split[split] += 1
        images.append({
            "id": img["id"], "file_name": file_name, "height": img["height"],
            "width": img["width"], "coco_url": img["coco_url"],
            **{key: sorted(lvis_to_coco[c] for c in img[key] if c in lvis_to_coco)
               for key in ("neg_category_ids", "not_exhaustive_category_ids")}})
    if not images:
        raise DatasetError(f"{lvis_json}: no image is in splits {list(splits or [])}")
    kept = {img["id"] for img in images}
    annotations = [{"id": a["id"], "image_id": a["image_id"],
                    "category_id": lvis_to_coco[a["category_id"]],
                    "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                    "iscrowd": 0}
                   for a in data["annotations"]
                   if a["image_id"] in kept and a["category_id"] in lvis_to_coco]
    if per_split.get("train2017"):
        logger.warning("%s: %d of the %d images are COCO train2017 images, which a model "
                       "trained on COCO train2017 has seen; pass splits=('val2017',) "
                       "(--splits val2017) to score val2017 images only", lvis_json,
                       per_split["train2017"], len(images))
    info = {"description": f"COCO categories of {Path(lvis_json).name} (LVIS), images of "
                           f"{dict(sorted(per_split.items()))}"}
    return write_coco_json({"info": info, "images": images, "annotations": annotations,
                            "categories": categories}, out, overwrite=overwrite)
