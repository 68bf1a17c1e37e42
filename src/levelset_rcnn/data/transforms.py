"""Joint image/target transforms for detection: multi-scale resize and horizontal flip.

Each transform is a callable ``(image, target) -> (image, target)`` with ``image: (3, H, W)``
and a target as returned by :class:`~levelset_rcnn.data.CocoInstanceDataset`. Targets may
lack ``masks`` (box-only data). Note that outputs of a model fed resized images are in the
resized frame: evaluate without a data-side resize (torchvision's model transform already
resizes and maps predictions back to the input size).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Compose", "RandomHorizontalFlip", "ResizeShortestEdge"]

Target = dict[str, Any]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirror image, boxes and masks left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if random.random() >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        image = image.flip(-1)
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image, target


class ResizeShortestEdge:
    """Resize so the shorter edge is a random size, the longer one at most ``max_size``.

    Args:
        min_sizes: candidate shorter-edge sizes; with ``sample="range"`` a ``(low, high)``
            pair sampled uniformly (inclusive), e.g. ``(800, 1024)`` as the paper does on
            Cityscapes; with ``sample="choice"`` one of the listed values.
        max_size: cap on the longer edge (the scale is reduced to respect it).
        sample: ``"choice"`` or ``"range"``.

    Images are resized bilinearly, masks by nearest neighbour, boxes and ``area`` scaled.
    """

    def __init__(self, min_sizes: int | Sequence[int], max_size: int = 2048, *,
                 sample: str = "choice") -> None:
        self.min_sizes = [min_sizes] if isinstance(min_sizes, int) else list(min_sizes)
        if sample not in ("choice", "range"):
            raise ValueError(f"sample must be 'choice' or 'range', got {sample!r}")
        if sample == "range" and len(self.min_sizes) != 2:
            raise ValueError("sample='range' needs min_sizes=(low, high)")
        self.max_size = max_size
        self.sample = sample

    def _draw(self) -> int:
        if self.sample == "range":
            return random.randint(self.min_sizes[0], self.min_sizes[1])
        return random.choice(self.min_sizes)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        size = self._draw()
        scale = min(size / min(h, w), self.max_size / max(h, w))
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        if (new_h, new_w) == (h, w):
            return image, target
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                              align_corners=False)[0]
        sx, sy = new_w / w, new_h / h
        target = dict(target)
        target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy])
        if "area" in target:
            target["area"] = target["area"] * (sx * sy)
        if "masks" in target:
            masks = target["masks"]
            if masks.shape[0] == 0:
                target["masks"] = masks.new_zeros((0, new_h, new_w))
            else:
                target["masks"] = F.interpolate(masks[None].float(), size=(new_h, new_w),
                                                mode="nearest")[0].to(masks.dtype)
        return image, target
