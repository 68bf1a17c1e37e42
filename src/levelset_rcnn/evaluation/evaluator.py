"""The evaluator interface shared by every metric (detectron2's reset / process / evaluate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "image_ids_of"]


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
