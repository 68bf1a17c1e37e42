"""Box AP, mask AP and boundary AF through pycocotools, Boundary AP through faster-coco-eval,
for any number of mask sets at once."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .boundary import BOUNDARY_MODES, BoundaryMode
from .boundary_af import boundary_af
from .evaluator import RecordingEvaluator

__all__ = ["COCOEvaluator", "AP_NAMES", "BOUNDARY_AP_NAMES"]

AP_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Boundary AP (Cheng et al., CVPR 2021) keys of every ``segm/<mask_key>`` entry.
BOUNDARY_AP_NAMES: tuple[str, ...] = ("boundary_AP", "boundary_AP50", "boundary_AP75")


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _load_gt(coco_gt: COCO | str | Path) -> COCO:
    if isinstance(coco_gt, COCO):
        return coco_gt
    return _quiet(COCO, str(coco_gt))


def _ap_metrics(coco_eval: Any) -> dict[str, float]:
    """COCO's AP, AP50, AP75, APs/m/l in percent from an accumulated ``COCOeval``.

    Read straight from ``eval["precision"]`` (T, R, K, A, M) at the largest ``maxDets``, as
    ``summarize()`` would, except that its AP ignores a ``maxDets`` other than 100.
    """
    precision = coco_eval.eval["precision"]
    thresholds = coco_eval.params.iouThrs
    area_names = coco_eval.params.areaRngLbl

    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(100 * p.mean()) if p.size else math.nan

    def at(area: str = "all", iou: float | None = None) -> float:
        p = precision[..., area_names.index(area), -1]
        if iou is not None:
            p = p[np.flatnonzero(np.isclose(thresholds, iou))]
        return mean(p)

    return {"AP": at(), "AP50": at(iou=0.5), "AP75": at(iou=0.75), "APs": at("small"),
            "APm": at("medium"), "APl": at("large")}


class COCOEvaluator(RecordingEvaluator):
    """COCO box/mask AP plus the paper's boundary AF1/AF2 and Boundary AP, for several mask
    sets side by side.

    ``evaluate()`` returns ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"},
    "segm/<mask_key>": {... same ..., "AF1", "AF2", "boundary_AP", "boundary_AP50",
    "boundary_AP75"}}`` in percent (NaN where COCO has no value, e.g. no object of that
    size). Only processed images are scored. Under DDP every rank's records are gathered; an
    image seen twice (padding of ``DistributedSampler``) counts once; results are returned on
    rank 0 (``{}`` elsewhere) unless ``all_ranks``.

    AF1/AF2 (the paper's metric, see :mod:`.boundary_af`) is the boundary F of DAVIS
    (davisvideochallenge/davis2017-evaluation, ``f_measure`` / ``_seg2bmap``) over COCO's true
    positives. Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021) is COCO's AP with
    ``min(mask IoU, boundary IoU)`` as the matching IoU, a mask's boundary being its pixels
    within ``d = max(1, round(boundary_dilation_ratio * image diagonal))`` pixels of its
    contour (the pixels that ``d`` 3x3 erosions remove, the image frame counting as
    background); it is computed
    by faster-coco-eval (``iouType="boundary"``), which costs one more COCO evaluation per
    mask key plus the boundary bands of every ground truth and detection, eroded on the whole
    image: measured on 2 CPU cores with 100 detections per image, about 0.12 s per image and
    mask key at 640x480 (4x the cost of mask AP) and 1.1 s at 2048x1024 (band 46 px), where
    AF1/AF2 takes 0.4 s; turn it off with ``boundary_ap=False``.

    Args:
        coco_gt: the ground truth (a pycocotools ``COCO`` or a JSON path).
        label_to_cat_id: contiguous model label -> COCO category id.
        iou_types: any of ``"bbox"``, ``"segm"``.
        mask_keys: output keys holding ``(K, 1, H, W)`` mask probabilities in image
            coordinates, each evaluated as its own ``segm/<key>`` entry.
        boundary: also compute AF (``AF1``, ``AF2`` for ``tolerances=(1, 2)``).
        mask_threshold: probabilities above it are inside.
        tolerances: boundary tolerances in pixels (below 1: a fraction of the image diagonal,
            as DAVIS's ``bound_th``; ``"davis"`` mode only).
        boundary_mode: the boundary AF is computed on: ``"davis"`` (DAVIS's ``_seg2bmap``, as
            the paper) or ``"inner"`` (the inner 4-connected contour); see :mod:`.boundary`.
        boundary_ap: also compute Boundary AP (``boundary_AP``, ``boundary_AP50``,
            ``boundary_AP75``).
        boundary_dilation_ratio: Boundary IoU's band width as a fraction of the image
            diagonal (0.02, Cheng et al.'s value for COCO; at least 1 pixel).
        max_dets: detections per image kept by COCO's matching (100 in the COCO protocol;
            raise it for crowded images such as nuclei).
        all_ranks: return results on every rank.
    """

    def __init__(self, coco_gt: COCO | str | Path, *, label_to_cat_id: Mapping[int, int],
                 iou_types: Sequence[str] = ("bbox", "segm"),
                 mask_keys: Sequence[str] = ("masks",), boundary: bool = True,
                 mask_threshold: float = 0.5, tolerances: Sequence[float] = (1, 2),
                 boundary_mode: BoundaryMode = "davis", boundary_ap: bool = True,
                 boundary_dilation_ratio: float = 0.02, max_dets: int = 100,
                 all_ranks: bool = False) -> None:
        bad = set(iou_types) - {"bbox", "segm"}
        if bad:
            raise ValueError(f"unsupported iou_types {sorted(bad)}; use 'bbox' and/or 'segm'")
        if boundary_mode not in BOUNDARY_MODES:
            raise ValueError(f"unknown boundary_mode {boundary_mode!r}; use one of "
                             f"{BOUNDARY_MODES}")
        self.coco_gt = _load_gt(coco_gt)
        self.label_to_cat_id = dict(label_to_cat_id)
        unknown = set(self.label_to_cat_id.values()) - set(self.coco_gt.cats)
        if unknown:
            raise ValueError(f"label_to_cat_id maps to category ids {sorted(unknown)} that the "
                             "ground truth does not have")
        self.record_category_ids = self.label_to_cat_id
        self.gt_images = self.coco_gt.imgs
        self.iou_types = tuple(iou_types)
        self.mask_keys = tuple(mask_keys) if "segm" in self.iou_types else ()
        self.boundary = boundary
        self.mask_threshold = mask_threshold
        self.tolerances = tuple(tolerances)
        self.boundary_mode = boundary_mode
        self.boundary_ap = boundary_ap
        self.boundary_dilation_ratio = boundary_dilation_ratio
        self._fast_gt: Any = None  # faster-coco-eval's copy of the ground truth, made once
        self.max_dets = max_dets
        self.all_ranks = all_ranks
        self.reset()

    def evaluate(self) -> dict[str, Any]:
        records = self.records_to_score()
        if records is None:
            return {}
        results: dict[str, Any] = {}
        if "bbox" in self.iou_types:
            img_ids, dets = self.detections(records)
            results["bbox"], _, _ = self._run(dets, "bbox", img_ids)
        for key in self.mask_keys:
            img_ids, dets = self.detections(records, key)
            metrics, coco_eval, coco_dt = self._run(dets, "segm", img_ids)
            if self.boundary:
                metrics.update(self._boundary(coco_eval, coco_dt))
            if self.boundary_ap:
                bap = self._run_faster(dets, "boundary", img_ids)
                metrics.update({f"boundary_{k}": bap[k] for k in ("AP", "AP50", "AP75")})
            results[f"segm/{key}"] = metrics
        return results

    def _run(self, dets: list[dict], iou_type: str, img_ids: list[int]
             ) -> tuple[dict[str, float], COCOeval, COCO]:
        if dets:
            coco_dt = _quiet(self.coco_gt.loadRes, copy.deepcopy(dets))
        else:  # loadRes rejects an empty list: an empty result set scores 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": self.coco_gt.dataset["images"], "annotations": [],
                               "categories": self.coco_gt.dataset["categories"]}
            _quiet(coco_dt.createIndex)
        coco_eval = COCOeval(self.coco_gt, coco_dt, iou_type)
        coco_eval.params.imgIds = img_ids
        coco_eval.params.maxDets = [1, min(10, self.max_dets), self.max_dets]  # sorted by COCO
        for step in (coco_eval.evaluate, coco_eval.accumulate):
            _quiet(step)
        return _ap_metrics(coco_eval), coco_eval, coco_dt

    def _boundary(self, coco_eval: COCOeval, coco_dt: COCO) -> dict[str, float]:
        gt_cache: dict[int, np.ndarray] = {}

        def gt_mask(ann_id: int) -> np.ndarray:
            if ann_id not in gt_cache:
                gt_cache[ann_id] = self.coco_gt.annToMask(self.coco_gt.anns[ann_id])
            return gt_cache[ann_id]

        def dt_mask(det_id: int) -> np.ndarray:
            return mask_utils.decode(coco_dt.anns[det_id]["segmentation"])

        return boundary_af(coco_eval, gt_mask=gt_mask, dt_mask=dt_mask,
                           tolerances=self.tolerances, mode=self.boundary_mode)

    def _run_faster(self, dets: list[dict], iou_type: str, img_ids: list[int]
                    ) -> dict[str, float]:
        """:func:`_ap_metrics` of faster-coco-eval's ``COCOeval_faster`` (``iou_type`` any of
        its types, ``"boundary"`` for Boundary AP) on the same images and ``maxDets``."""
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster

        if self._fast_gt is None:
            self._fast_gt = _quiet(FastCOCO, self.coco_gt.dataset, True)  # deep copy
        coco_dt = _quiet(self._fast_gt.loadRes, copy.deepcopy(dets))  # [] is fine here
        coco_eval = COCOeval_faster(self._fast_gt, coco_dt, iou_type,
                                    boundary_dilation_ratio=self.boundary_dilation_ratio)
        coco_eval.params.imgIds = img_ids
        coco_eval.params.maxDets = [1, min(10, self.max_dets), self.max_dets]
        for step in (coco_eval.evaluate, coco_eval.accumulate):
            _quiet(step)
        return _ap_metrics(coco_eval)
