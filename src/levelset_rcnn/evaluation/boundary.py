"""Boundary F-measure between two binary masks with a pixel tolerance (DAVIS).

The paper's AF_k "adapts the boundary metric of DAVIS", whose official code is
``davis2017/metrics.py`` of davisvideochallenge/davis2017-evaluation (``f_measure`` with
``_seg2bmap``, the boundary map of Martin et al.'s BSDS benchmark). Two definitions of a
mask's boundary are offered; everything after it is DAVIS's rule in both:

* ``"davis"`` (default), ``_seg2bmap``: pixel ``(r, c)`` is a boundary pixel when its value
  differs from that of its right ``(r, c+1)``, bottom ``(r+1, c)`` or bottom-right
  ``(r+1, c+1)`` neighbour; in the last row only the right neighbour is compared, in the
  last column only the bottom one, and the bottom-right corner pixel is never a boundary
  pixel (so no pixel outside the image is ever read). The boundary may hold
  background pixels (it lies half a pixel towards the image origin from the true contour:
  just outside the mask on its top and left sides, just inside on its bottom and right
  sides), and a mask cut by the image frame has no boundary along it. A filled
  ``n x n`` square away from the frame has a boundary of ``4n`` pixels (the ring of the
  ``(n+1) x (n+1)`` square one pixel up and left).
* ``"inner"``: the inner 4-connected contour, mask pixels with at least one 4-neighbour
  outside the mask; the image border is not a boundary. (This module's earlier definition;
  on the same masks it gives a thinner, symmetric contour and reads lower than DAVIS at a
  1 px tolerance.)

Matching, as ``f_measure``: each boundary is dilated by a disk of radius ``tolerance``
(``skimage.morphology.disk``); a predicted boundary pixel is correct when it lies in the
dilated ground-truth boundary, i.e. within Euclidean distance ``tolerance`` of a
ground-truth boundary pixel, and vice versa for recall. Precision and recall are the correct
fractions of predicted and ground-truth boundary pixels, F = 2PR / (P + R) (0 when both are
0). A tolerance below 1 is, as in DAVIS, a fraction of the image diagonal:
``ceil(tolerance * hypot(H, W))`` pixels (``"davis"`` only; ``"inner"`` always reads pixels).
DAVIS's disk is only well formed for whole-pixel radii; a fractional pixel tolerance here
keeps the Euclidean rule (distance <= tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

__all__ = ["BOUNDARY_MODES", "BoundaryMode", "mask_boundary", "boundary_f_scores"]

BoundaryMode = Literal["davis", "inner"]
BOUNDARY_MODES: tuple[str, ...] = ("davis", "inner")

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _check_mode(mode: str) -> None:
    if mode not in BOUNDARY_MODES:
        raise ValueError(f"unknown boundary mode {mode!r}; use one of {BOUNDARY_MODES}")


def _davis_boundary(seg: np.ndarray) -> np.ndarray:
    """DAVIS's ``_seg2bmap`` boundary of a bool ``(H, W)`` mask (see the module docstring)."""
    p = np.pad(seg, ((0, 1), (0, 1)))  # the padding is only read where overwritten below
    b = (seg != p[:-1, 1:]) | (seg != p[1:, :-1]) | (seg != p[1:, 1:])
    b[-1, :] = seg[-1, :] != p[-2, 1:]  # last row: the right neighbour only
    b[:, -1] = seg[:, -1] != p[1:, -2]  # last column: the bottom neighbour only
    b[-1, -1] = False
    return b


def _inner_boundary(seg: np.ndarray) -> np.ndarray:
    return seg & ~binary_erosion(seg, structure=_CROSS, border_value=1)


def mask_boundary(mask: np.ndarray, mode: BoundaryMode = "davis") -> np.ndarray:
    """Boundary ``(H, W) bool`` of a binary ``(H, W)`` mask: DAVIS's ``_seg2bmap``
    (``"davis"``) or the inner 4-connected contour (``"inner"``)."""
    _check_mode(mode)
    mask = np.asarray(mask).astype(bool)
    if mask.size == 0:
        return mask.copy()
    return _davis_boundary(mask) if mode == "davis" else _inner_boundary(mask)


def _pixel_tolerance(tol: float, shape: tuple[int, ...], mode: str) -> float:
    if mode == "davis" and tol < 1:
        return float(math.ceil(tol * math.hypot(*shape)))
    return float(tol)


def boundary_f_scores(pred: np.ndarray, gt: np.ndarray, tolerances: Sequence[float] = (1, 2),
                      mode: BoundaryMode = "davis") -> list[float]:
    """Boundary F in [0, 1] of ``pred`` against ``gt`` (both ``(H, W)``) per tolerance.

    Two empty boundaries agree perfectly (F = 1); exactly one empty boundary gives F = 0
    (as DAVIS: precision or recall 0). Work is restricted to the pair's bounding box plus a
    margin, so large images with small objects stay cheap; the result equals that of the
    whole image.
    """
    _check_mode(mode)
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {gt.shape}")
    tols = [_pixel_tolerance(t, pred.shape, mode) for t in tolerances]
    union = pred | gt
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return [1.0 for _ in tols]
    pad = int(np.ceil(max(tols, default=0))) + 2
    r0, r1 = max(0, rows[0] - pad), min(union.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(union.shape[1], cols[-1] + pad + 1)
    # The crop keeps >= 2 background rows / columns on every side that is not the image's
    # own border, so both boundary definitions read the same there as on the whole image.
    bp = mask_boundary(pred[r0:r1, c0:c1], mode)
    bg = mask_boundary(gt[r0:r1, c0:c1], mode)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 or n_g == 0:
        return [1.0 if n_p == n_g else 0.0 for _ in tols]
    dist_to_gt = distance_transform_edt(~bg)[bp]
    dist_to_pred = distance_transform_edt(~bp)[bg]
    scores = []
    for tol in tols:
        precision = float((dist_to_gt <= tol).mean())
        recall = float((dist_to_pred <= tol).mean())
        total = precision + recall
        scores.append(0.0 if total == 0 else 2 * precision * recall / total)
    return scores
