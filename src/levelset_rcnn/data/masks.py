"""Conversions between binary masks, COCO polygons and COCO run-length encodings (RLE)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["mask_to_rle", "segmentation_to_rle", "decode_segmentation", "mask_bbox"]


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a binary ``(H, W)`` mask, with ``counts`` as a JSON-ready str."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segmentation_to_rle(seg: list | dict, height: int, width: int) -> dict[str, Any]:
    """One compressed RLE for a COCO ``segmentation`` (polygons, uncompressed or compressed RLE).

    Several polygons of one instance are merged into one mask, as pycocotools does.
    """
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]
    return {"size": list(seg["size"]),
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """Decode a COCO ``segmentation`` to a binary ``(H, W) uint8`` mask."""
    return mask_utils.decode(segmentation_to_rle(seg, height, width))


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` box enclosing the pixels of a binary ``(H, W)`` mask.

    A pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``, so a one-pixel mask has w = h = 1.
    An empty mask gives ``[0, 0, 0, 0]``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1)]
