"""The paper's boundary metric AF_k: boundary F of true positives, averaged over classes and
IoU thresholds.

True positives are taken from pycocotools' own matching (``COCOeval.evaluateImg``: per image
and class, detections in score order greedily take the best still-free ground truth above
each IoU threshold 0.5:0.05:0.95; matches to crowd regions are ignored). For every
(class, threshold) with at least one true positive the mean boundary F is taken; AF_k is the
mean of those cells, in percent (NaN when there is no true positive at all). The boundary F
of a pair is :func:`~levelset_rcnn.evaluation.boundary.boundary_f_scores`: DAVIS's
``f_measure`` (boundary map ``_seg2bmap``) by default, the inner contour with
``mode="inner"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from .boundary import BoundaryMode, boundary_f_scores

__all__ = ["boundary_af"]

MaskLookup = Callable[[int], np.ndarray]


def boundary_af(coco_eval: COCOeval, *, gt_mask: MaskLookup, dt_mask: MaskLookup,
                tolerances: Sequence[float] = (1, 2), mode: BoundaryMode = "davis"
                ) -> dict[str, float]:
    """``{"AF1": .., "AF2": ..}`` (keys ``AF<tol>``) from an evaluated ``COCOeval``.

    Args:
        coco_eval: after ``evaluate()`` (its ``evalImgs`` hold the matches).
        gt_mask: ground-truth annotation id -> binary ``(H, W)`` mask.
        dt_mask: detection id -> binary ``(H, W)`` mask.
        tolerances: boundary tolerances in pixels (below 1 in ``"davis"`` mode: a fraction
            of the image diagonal, as DAVIS).
        mode: the boundary definition, ``"davis"`` or ``"inner"`` (see :mod:`.boundary`).
    """
    params = coco_eval.params
    all_range = params.areaRng[0]
    num_thr = len(params.iouThrs)
    cat_index = {c: i for i, c in enumerate(params.catIds)}
    sums = np.zeros((len(params.catIds), num_thr, len(tolerances)))
    counts = np.zeros((len(params.catIds), num_thr))
    cache: dict[tuple[int, int], list[float]] = {}
    for e in coco_eval.evalImgs:
        if e is None or list(e["aRng"]) != list(all_range):
            continue
        c = cat_index[e["category_id"]]
        for t in range(num_thr):
            for d, dt_id in enumerate(e["dtIds"]):
                gt_id = int(e["dtMatches"][t, d])
                if gt_id == 0 or e["dtIgnore"][t, d]:
                    continue
                key = (dt_id, gt_id)
                if key not in cache:
                    cache[key] = boundary_f_scores(dt_mask(dt_id), gt_mask(gt_id), tolerances,
                                                   mode)
                sums[c, t] += cache[key]
                counts[c, t] += 1
    result = {}
    valid = counts > 0
    for k, tol in enumerate(tolerances):
        name = f"AF{tol:g}"
        result[name] = (float(100 * (sums[..., k][valid] / counts[valid]).mean())
                        if valid.any() else float("nan"))
    return result
