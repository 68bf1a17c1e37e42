"""Tiny CPU configurations and synthetic data shared by the modeling tests."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

TINY: dict[str, Any] = dict(
    backbone="resnet18",
    weights_backbone=None,
    num_classes=4,
    fpn_channels=32,
    box_representation_size=64,
    mask_layers=(32, 32),
    predictor_channels=32,
    cv_channels=16,
    cv_hidden_channels=16,
    min_size=96,
    max_size=96,
    rpn_batch_size_per_image=64,
    box_batch_size_per_image=32,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50,
)


def tiny_kwargs(**overrides: Any) -> dict[str, Any]:
    kw = dict(TINY)
    kw.update(overrides)
    return kw


def shape_mask(kind: str, H: int, W: int, cy: float, cx: float, r: float) -> Tensor:
    """A filled disk, rectangle or ring of size ~``r`` at ``(cy, cx)``: ``(H, W)`` bool."""
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    if kind == "disk":
        return d <= r
    if kind == "ring":
        return (d <= r) & (d >= 0.5 * r)
    return ((yy - cy).abs() <= 0.7 * r) & ((xx - cx).abs() <= r)


KINDS = ("disk", "rect", "ring")


def synthetic_sample(
    num_objects: int, *, size: tuple[int, int] = (96, 96), seed: int = 0
) -> tuple[Tensor, dict[str, Tensor]]:
    """An image of filled shapes on noise and its target (class = 1 + shape kind)."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    img = 0.25 * torch.rand(3, H, W, generator=g)
    masks, boxes, labels = [], [], []
    occupied = torch.zeros(H, W, dtype=torch.bool)
    for k in range(num_objects):
        for _ in range(50):
            r = float(10 + 8 * torch.rand(1, generator=g))
            cy = float(r + 2 + (H - 2 * r - 4) * torch.rand(1, generator=g))
            cx = float(r + 2 + (W - 2 * r - 4) * torch.rand(1, generator=g))
            kind = KINDS[(k + seed) % 3]
            m = shape_mask(kind, H, W, cy, cx, r)
            if not (m & occupied).any():
                break
        occupied |= m
        color = torch.tensor([0.9, 0.6, 0.3]).roll(k)[:, None]
        img[:, m] = color + 0.05 * torch.randn(3, int(m.sum()), generator=g)
        ys, xs = torch.where(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        masks.append(m)
        labels.append(1 + KINDS.index(kind))
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": (torch.stack(masks) if masks else torch.zeros(0, H, W)).to(torch.uint8),
    }
    return img.clamp(0, 1), target


def mask_iou(a: Tensor, b: Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


def matched_mask_iou(outputs: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], *,
                     min_score: float = 0.5) -> float:
    """Mean over ground-truth objects of the best mask IoU among the detections scoring at
    least ``min_score`` (0 for an object without any such detection)."""
    ious = []
    for out, t in zip(outputs, targets, strict=True):
        pred = out["masks"][out["scores"] >= min_score, 0] >= 0.5
        for gt in t["masks"].bool():
            best = max((mask_iou(p, gt) for p in pred), default=0.0)
            ious.append(best)
    return sum(ious) / max(len(ious), 1) if ious else math.nan
