"""Boundary F-measure between two binary masks with a pixel tolerance (DAVIS-style).

The boundary of a mask is its inner contour: mask pixels with at least one 4-neighbour
outside the mask. The image border is not a boundary (an object cut by the frame has no
contour there). A predicted boundary pixel is correct if a ground-truth boundary pixel lies
within Euclidean distance ``tolerance``; precision and recall are the correct fractions of
predicted and ground-truth boundary pixels, and F = 2PR / (P + R).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

__all__ = ["mask_boundary", "boundary_f_scores"]

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner 4-connected boundary ``(H, W) bool`` of a binary ``(H, W)`` mask."""
    mask = mask.astype(bool)
    return mask & ~binary_erosion(mask, structure=_CROSS, border_value=1)


def boundary_f_scores(pred: np.ndarray, gt: np.ndarray, tolerances: Sequence[float] = (1, 2)
                      ) -> list[float]:
    """Boundary F in [0, 1] of ``pred`` against ``gt`` (both ``(H, W)``) per tolerance.

    Two empty boundaries agree perfectly (F = 1); exactly one empty boundary gives F = 0.
    Work is restricted to the pair's bounding box plus a margin, so large images with small
    objects stay cheap.
    """
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = pred | gt
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return [1.0 for _ in tolerances]
    pad = int(np.ceil(max(tolerances))) + 2
    r0, r1 = max(0, rows[0] - pad), min(union.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(union.shape[1], cols[-1] + pad + 1)
    bp, bg = mask_boundary(pred[r0:r1, c0:c1]), mask_boundary(gt[r0:r1, c0:c1])
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 or n_g == 0:
        return [1.0 if n_p == n_g else 0.0 for _ in tolerances]
    dist_to_gt = distance_transform_edt(~bg)[bp]
    dist_to_pred = distance_transform_edt(~bp)[bg]
    scores = []
    for tol in tolerances:
        precision = float((dist_to_gt <= tol).mean())
        recall = float((dist_to_pred <= tol).mean())
        total = precision + recall
        scores.append(0.0 if total == 0 else 2 * precision * recall / total)
    return scores
