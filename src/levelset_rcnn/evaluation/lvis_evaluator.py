"""LVIS federated AP (AP*) of a COCO-trained model on the COCO sub-categories of LVIS.

The paper's Table 2 reports AP* "of the LVIS dataset with COCO subcategories, trained only on
COCO" (the protocol of PointRend): the model predicts COCO category ids; each is mapped to the
LVIS category with the same WordNet synset
(:data:`~levelset_rcnn.data.lvis_json.COCO_LVIS_SYNSETS`, the official LVIS
COCO-to-synset table); the LVIS ground truth is restricted to those categories; and the
official ``lvis`` package's ``LVISEval`` scores it with LVIS's federated rules:

- a detection of category ``c`` on an image where ``c`` is neither annotated (positive set)
  nor listed in ``neg_category_ids`` is dropped (nothing is known about ``c`` there);
- an unmatched detection of ``c`` on an image listing ``c`` in
  ``not_exhaustive_category_ids`` is ignored (not a false positive);
- at most ``max_dets`` (300) detections per image, highest scores first.

LVIS category ids are looked up by synset in the user's file, so LVIS v0.5 (the protocol's
version) and v1 both work, as does a file written by
:func:`levelset_rcnn.data.converters.convert_lvis` (COCO category ids, synsets kept). LVIS v1
has no ``frank.n.02`` (COCO "hot dog"): scoring on v1 needs ``drop_missing=True``, which
leaves such classes out (their detections are discarded; AP* is over the other 79).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lvis import LVIS, LVISEval, LVISResults

from ..data.lvis_json import (
    COCO_LVIS_SYNSETS,
    LVISFormatError,
    check_lvis_dict,
    coco_to_lvis_category_ids,
    read_lvis_json,
)
from .evaluator import RecordingEvaluator

__all__ = ["LVISEvaluator", "LVIS_AP_NAMES", "restrict_lvis"]

_DROPPED = -1  # LVIS id given to the labels of COCO classes left out by drop_missing
LVIS_AP_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc",
                                  "APf")


def restrict_lvis(data: Mapping[str, Any], lvis_cat_ids: set[int]) -> dict[str, Any]:
    """A shallow copy of an LVIS dict with only ``lvis_cat_ids``: categories, annotations and
    each image's ``neg_category_ids`` / ``not_exhaustive_category_ids``."""
    images = [{**img, "neg_category_ids": [c for c in img["neg_category_ids"]
                                           if c in lvis_cat_ids],
               "not_exhaustive_category_ids": [c for c in img["not_exhaustive_category_ids"]
                                               if c in lvis_cat_ids]}
              for img in data["images"]]
    return {**data, "images": images,
            "categories": [c for c in data["categories"] if c["id"] in lvis_cat_ids],
            "annotations": [a for a in data["annotations"] if a["category_id"] in lvis_cat_ids]}


class _LVISFromDict(LVIS):
    """``lvis.LVIS`` built from a dict already in memory (``LVIS()`` only reads a path)."""

    def __init__(self, dataset: dict[str, Any]) -> None:  # not super(): it reads a file
        self.logger = logging.getLogger("lvis.lvis")
        self.dataset = dataset
        self._create_index()


def _empty_results(gt: LVIS) -> LVISResults:
    """Results with no detection (``LVISResults`` indexes ``results[0]``): every category
    with ground truth scores 0."""
    dt = LVISResults.__new__(LVISResults)
    dt.logger = logging.getLogger("lvis.results")
    dt.dataset = {**gt.dataset, "annotations": []}
    dt._create_index()
    return dt


class _NumpyWithFloat(types.ModuleType):
    """numpy plus the ``np.float`` alias that lvis 0.5.3's ``accumulate`` still uses (removed
    in NumPy 1.24)."""

    float = float

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextlib.contextmanager
def _lvis_compat() -> Iterator[None]:
    """Run lvis-api on a current NumPy and without its per-call log chatter."""
    import lvis.eval as lvis_eval

    quiet = [logging.getLogger(n) for n in ("lvis.lvis", "lvis.results", "lvis.eval")]
    levels = [q.level for q in quiet]
    old_np = lvis_eval.np
    with warnings.catch_warnings():
        # lvis-api logs through the deprecated Logger.warn
        warnings.filterwarnings("ignore", "The 'warn' method is deprecated", DeprecationWarning)
        try:
            for q in quiet:
                q.setLevel(logging.ERROR)
            if not hasattr(np, "float"):
                lvis_eval.np = _NumpyWithFloat("numpy")
            yield
        finally:
            lvis_eval.np = old_np
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)


class LVISEvaluator(RecordingEvaluator):
    """LVIS AP* (federated box and mask AP) of a COCO-category model, with official lvis-api.

    ``evaluate()`` returns ``{"lvis_bbox": {...}, "lvis_segm/<mask_key>": {...}}`` with
    ``AP, AP50, AP75, APs, APm, APl, APr, APc, APf`` and ``AR@<max_dets>`` (and ``ARs/m/l``)
    in percent (NaN where LVIS has no value, e.g. no rare category among the COCO ones).
    Only processed images are scored, and only the LVIS categories of the COCO ids in
    ``label_to_cat_id``. Under DDP records are gathered as in
    :class:`~levelset_rcnn.evaluation.COCOEvaluator`.

    Args:
        lvis_gt: an LVIS annotation JSON (path, or the parsed dict) whose image ids are the
            dataset's (LVIS reuses COCO's image ids).
        label_to_cat_id: contiguous model label -> COCO category id.
        dataset_categories: optionally the model's dataset ``categories`` (``id``, ``name``);
            each mapped id must carry COCO's name, so a model of other classes is refused.
        iou_types: any of ``"bbox"``, ``"segm"``.
        mask_keys: output keys holding ``(K, 1, H, W)`` mask probabilities in image
            coordinates, each scored as ``lvis_segm/<key>``.
        mask_threshold: probabilities above it are inside.
        max_dets: detections kept per image, by score (300 in the LVIS protocol).
        all_ranks: return results on every rank.
        drop_missing: leave out COCO classes the LVIS file has no category for (LVIS v1:
            hot dog); their detections are discarded.

    Raises:
        LVISFormatError: an unreadable LVIS file, missing LVIS fields, or (unless
            ``drop_missing``) no LVIS category for a COCO id the model predicts.
    """

    def __init__(self, lvis_gt: str | Path | Mapping[str, Any], *,
                 label_to_cat_id: Mapping[int, int],
                 dataset_categories: Sequence[Mapping[str, Any]] | None = None,
                 iou_types: Sequence[str] = ("bbox", "segm"),
                 mask_keys: Sequence[str] = ("masks",), mask_threshold: float = 0.5,
                 max_dets: int = 300, all_ranks: bool = False,
                 drop_missing: bool = False) -> None:
        bad = set(iou_types) - {"bbox", "segm"}
        if bad:
            raise ValueError(f"unsupported iou_types {sorted(bad)}; use 'bbox' and/or 'segm'")
        if isinstance(lvis_gt, Mapping):
            self.source = "<LVIS dict>"
            check_lvis_dict(lvis_gt, self.source)
            data = lvis_gt
        else:
            self.source = str(lvis_gt)
            data = read_lvis_json(lvis_gt)
        self.label_to_cat_id = dict(label_to_cat_id)
        coco_ids = sorted(set(self.label_to_cat_id.values()))
        if dataset_categories is not None:
            self._check_coco_names(dataset_categories, coco_ids)
        self.coco_to_lvis = coco_to_lvis_category_ids(data["categories"], coco_ids,
                                                      source=self.source,
                                                      drop_missing=drop_missing)
        # labels of dropped classes map to _DROPPED; their records are discarded
        self.label_to_lvis = {lab: self.coco_to_lvis.get(c, _DROPPED)
                              for lab, c in self.label_to_cat_id.items()}
        self.lvis_gt = _LVISFromDict(restrict_lvis(data, set(self.coco_to_lvis.values())))
        self.record_category_ids = self.label_to_lvis
        self.gt_images = self.lvis_gt.imgs
        self.ground_truth_name = f"the LVIS ground truth {self.source}"
        self.iou_types = tuple(iou_types)
        self.mask_keys = tuple(mask_keys) if "segm" in self.iou_types else ()
        self.mask_threshold = mask_threshold
        self.max_dets = max_dets
        self.all_ranks = all_ranks
        self.reset()

    @staticmethod
    def _check_coco_names(categories: Sequence[Mapping[str, Any]], coco_ids: list[int]) -> None:
        names = {c["id"]: c.get("name") for c in categories}
        wrong = [f"{i}: {names.get(i)!r} (COCO: {COCO_LVIS_SYNSETS[i][0]!r})" for i in coco_ids
                 if i in COCO_LVIS_SYNSETS and names.get(i) != COCO_LVIS_SYNSETS[i][0]]
        if wrong:
            raise LVISFormatError("the model's categories are not COCO's (id: name in its "
                                  f"dataset): {', '.join(wrong)}; LVIS AP* needs a model "
                                  "trained on the 80 COCO classes")

    def keep(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["category_id"] != _DROPPED]

    def evaluate(self) -> dict[str, Any]:
        records = self.records_to_score()
        if records is None:
            return {}
        results: dict[str, Any] = {}
        if "bbox" in self.iou_types:
            img_ids, dets = self.detections(records)
            results["lvis_bbox"] = self._run(dets, "bbox", img_ids)
        for key in self.mask_keys:
            # mask records carry no "bbox": lvis-api would take the box area as the area
            img_ids, dets = self.detections(records, key)
            results[f"lvis_segm/{key}"] = self._run(dets, "segm", img_ids)
        return results

    def run_lvis_eval(self, dets: list[dict], iou_type: str, img_ids: Sequence[int]
                      ) -> LVISEval:
        """The official ``LVISEval`` run (evaluate, accumulate, summarize) on ``dets``
        (LVIS results records with LVIS category ids) over ``img_ids``."""
        with _lvis_compat():
            if dets:
                lvis_dt = LVISResults(self.lvis_gt, copy.deepcopy(dets), max_dets=self.max_dets)
            else:
                lvis_dt = _empty_results(self.lvis_gt)
            lvis_eval = LVISEval(self.lvis_gt, lvis_dt, iou_type)
            lvis_eval.params.img_ids = list(img_ids)
            lvis_eval.params.max_dets = self.max_dets
            lvis_eval.run()
        return lvis_eval

    def _run(self, dets: list[dict], iou_type: str, img_ids: Sequence[int]) -> dict[str, float]:
        lvis_eval = self.run_lvis_eval(dets, iou_type, img_ids)
        return {k: (math.nan if v < 0 else float(100 * v))
                for k, v in lvis_eval.get_results().items()}
