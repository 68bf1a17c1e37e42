"""Model outputs -> COCO results records (boxes xywh, RLE masks), and writing them to JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.masks import encode_masks

__all__ = ["output_to_records", "write_coco_results"]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def output_to_records(output: Mapping[str, Any], image_id: int,
                      label_to_cat_id: Mapping[int, int], *, mask_keys: Sequence[str] = (),
                      mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO result records for one image's prediction dict.

    Each record has ``image_id``, ``category_id``, ``bbox`` (xywh), ``score`` and, per key in
    ``mask_keys``, an RLE under that key (the caller renames it to ``segmentation``).

    Raises:
        KeyError: a label with no category id, or a missing mask key.
    """
    boxes = _numpy(output["boxes"]).reshape(-1, 4).astype(np.float64)
    labels = _numpy(output["labels"]).reshape(-1)
    scores = _numpy(output["scores"]).reshape(-1).astype(np.float64)
    rles = {}
    for key in mask_keys:
        if key not in output:
            raise KeyError(f"output of image {image_id} has no {key!r} (has {sorted(output)})")
        rles[key] = encode_masks(output[key], mask_threshold)
    records = []
    for k in range(len(labels)):
        label = int(labels[k])
        if label not in label_to_cat_id:
            raise KeyError(f"image {image_id}: predicted label {label} has no category id "
                           f"(known labels: {sorted(label_to_cat_id)})")
        x0, y0, x1, y1 = boxes[k]
        rec: dict[str, Any] = {"image_id": int(image_id), "category_id": label_to_cat_id[label],
                               "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                               "score": float(scores[k])}
        for key in mask_keys:
            rec[key] = rles[key][k]
        records.append(rec)
    return records


def write_coco_results(outputs: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
                       label_to_cat_id: Mapping[int, int], path: str | Path, *,
                       mask_key: str | None = "masks", mask_threshold: float = 0.5) -> Path:
    """Write predictions as a COCO results JSON list that ``COCO.loadRes`` accepts.

    Records carry ``bbox`` (xywh), ``score``, ``category_id`` and, unless ``mask_key`` is
    None, ``segmentation`` (RLE of ``outputs[i][mask_key] > mask_threshold``). For mask AP
    with mask-area size ranges, drop ``bbox`` before ``loadRes`` (pycocotools otherwise
    takes the box area as the instance area).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    keys = (mask_key,) if mask_key else ()
    records = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        for rec in output_to_records(output, int(image_id), label_to_cat_id, mask_keys=keys,
                                     mask_threshold=mask_threshold):
            if mask_key:
                rec["segmentation"] = rec.pop(mask_key)
            records.append(rec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path
