"""Conversions between binary masks, COCO polygons and COCO run-length encodings (RLE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:  # data/ reads and writes files without importing torch
    import torch

__all__ = ["encode_masks", "mask_to_rle", "segmentation_to_rle", "decode_segmentation",
           "mask_bbox"]


def encode_masks(masks: torch.Tensor | np.ndarray, threshold: float = 0.5) -> list[dict]:
    """Compressed RLE (``counts`` as a JSON-ready str) of each mask in ``(K, 1, H, W)`` or
    ``(K, H, W)``: the one RLE encoder of the package.

    Floating-point masks are probabilities binarised at ``> threshold``; integer or bool
    masks are taken as binary (nonzero = inside).
    """
    if not isinstance(masks, np.ndarray):  # a torch.Tensor
        masks = masks.detach().cpu().numpy()
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.dtype == np.bool_:
        binary = masks
    elif np.issubdtype(masks.dtype, np.floating):
        binary = masks > threshold
    else:
        binary = masks != 0
    if binary.shape[0] == 0:
        return []
    # pycocotools reads (H, W, K) in column order; a bool array is viewed as uint8 (0 / 1)
    # without a copy, so a Fortran-ordered (H, W) mask is encoded in place.
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)).view(np.uint8))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """:func:`encode_masks` of one binary ``(H, W)`` mask."""
    return encode_masks(mask[None])[0]


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
