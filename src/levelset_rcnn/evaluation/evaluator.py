"""The evaluator interface shared by every metric (detectron2's reset / process / evaluate)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..comm import all_gather, get_rank
from .coco_results import output_to_records

logger = logging.getLogger(__name__)

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "RecordingEvaluator", "image_ids_of"]


def image_ids_of(targets_or_image_ids: Sequence[Any]) -> list[int]:
    """Image ids from a batch of target dicts (``target["image_id"]``) or of plain ids."""
    ids = []
    for item in targets_or_image_ids:
        value = item["image_id"] if isinstance(item, dict) else item
        ids.append(int(value.item() if hasattr(value, "item") else value))
    return ids


class DatasetEvaluator:
    """Accumulates model outputs batch by batch, then computes metrics.

    Usage::

        evaluator.reset()
        for images, targets in loader:
            evaluator.process(targets, model(images))
        metrics = evaluator.evaluate()
    """

    def reset(self) -> None:
        """Forget everything processed so far."""

    def process(self, targets_or_image_ids: Sequence[Any], outputs: Sequence[dict[str, Any]]
                ) -> None:
        """Record one batch.

        Args:
            targets_or_image_ids: per image, a target dict holding ``image_id`` or the id.
            outputs: per image, a torchvision-style prediction dict (``boxes (K, 4)``,
                ``labels (K,)``, ``scores (K,)``, ``masks (K, 1, H, W)``, ...).
        """
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        """Metrics over everything processed (merged across DDP ranks where initialised)."""
        raise NotImplementedError


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators driven as one; their result dicts are merged (keys must differ)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, targets_or_image_ids: Sequence[Any], outputs: Sequence[dict[str, Any]]
                ) -> None:
        for e in self.evaluators:
            e.process(targets_or_image_ids, outputs)

    def evaluate(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for e in self.evaluators:
            for key, value in e.evaluate().items():
                if key in merged:
                    raise KeyError(f"two evaluators both report {key!r}")
                merged[key] = value
        return merged


class RecordingEvaluator(DatasetEvaluator):
    """Base of the evaluators that keep, per image, COCO-style result records (``image_id``,
    ``category_id``, ``bbox``, ``score`` and one RLE per mask key) and score them all in
    :meth:`evaluate`. Subclasses set ``mask_keys``, ``mask_threshold`` and
    ``record_category_ids`` (model label -> the ids their scorer uses) and ``gt_images``
    (image id -> the ground truth's record with ``width`` and ``height``); :meth:`keep` may
    drop records. An image processed twice counts once.
    """

    mask_keys: tuple[str, ...] = ()
    mask_threshold: float = 0.5
    record_category_ids: Mapping[int, int] = {}
    gt_images: Mapping[int, Mapping[str, Any]] = {}
    #: Named in errors, e.g. "the ground truth" or "the LVIS ground truth <file>".
    ground_truth_name: str = "the ground truth"

    def keep(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of one image worth keeping (all by default)."""
        return records

    def reset(self) -> None:
        self._records: dict[int, list[dict[str, Any]]] = {}

    def process(self, targets_or_image_ids: Sequence[Any], outputs: Sequence[dict[str, Any]]
                ) -> None:
        ids = image_ids_of(targets_or_image_ids)
        if len(ids) != len(outputs):
            raise ValueError(f"{len(ids)} images but {len(outputs)} outputs")
        for image_id, output in zip(ids, outputs, strict=True):
            info = self.gt_images.get(image_id)
            if info is None:
                raise KeyError(f"image id {image_id} is not in {self.ground_truth_name}")
            for key in self.mask_keys:
                shape = tuple(output[key].shape[-2:]) if key in output else None
                if shape is not None and len(output[key]) and shape != (info["height"],
                                                                        info["width"]):
                    raise ValueError(
                        f"image id {image_id}: {key!r} is {shape[1]}x{shape[0]} but "
                        f"{self.ground_truth_name} has the image as {info['width']}x"
                        f"{info['height']}; paste masks in original image coordinates")
            records = output_to_records(output, image_id, self.record_category_ids,
                                        mask_keys=self.mask_keys,
                                        mask_threshold=self.mask_threshold)
            self._records.setdefault(image_id, self.keep(records))

    def records_to_score(self) -> dict[int, list[dict[str, Any]]] | None:
        """:meth:`gathered` on the process that scores (rank 0, or every rank with
        ``all_ranks``); None elsewhere and when no image was processed (with a warning)."""
        records = self.gathered()
        if get_rank() != 0 and not getattr(self, "all_ranks", False):
            return None
        if not records:
            logger.warning("%s: no images were processed", type(self).__name__)
            return None
        return records

    @staticmethod
    def detections(records: dict[int, list[dict[str, Any]]], key: str | None = None
                   ) -> tuple[list[int], list[dict[str, Any]]]:
        """``(sorted image ids, result records)`` ready for a COCO-style scorer: boxes
        (``key=None``: ``image_id, category_id, bbox, score``) or the masks of ``key``
        (``image_id, category_id, score, segmentation``; no ``bbox``, so that the scorers
        take the mask's area as the instance's)."""
        img_ids = sorted(records)
        flat = [r for i in img_ids for r in records[i]]
        if key is None:
            fields = ("image_id", "category_id", "bbox", "score")
            return img_ids, [{k: r[k] for k in fields} for r in flat]
        return img_ids, [{"image_id": r["image_id"], "category_id": r["category_id"],
                          "score": r["score"], "segmentation": r[key]} for r in flat]

    def gathered(self) -> dict[int, list[dict[str, Any]]]:
        """Every process's records (under DDP; this process's otherwise), by image id."""
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in all_gather(self._records):
            for image_id, recs in part.items():
                merged.setdefault(image_id, recs)
        return merged
