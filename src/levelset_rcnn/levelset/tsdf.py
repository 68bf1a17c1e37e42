"""Truncated signed distance targets (paper, section 4.1 "Initial TSDF Head").

``masks_to_tsdf`` computes, on the masks' own device, the exact Euclidean distance of every
pixel to the nearest pixel of the other label, up to the truncation distance, without leaving
the device: a separable transform whose first pass (distance along columns) uses two
cumulative maxima, and whose second pass (along rows) takes a minimum over the
``2 * ceil(T) + 3`` offsets that can matter below the truncation ``T``. Cost is ``O(T)`` passes
over the masks, which for RoI-sized masks (112 x 112) is a handful of milliseconds per hundred
masks on a CPU and negligible on a GPU.

Sign and offset convention: the boundary lies half-way between the centres of an inside and an
outside pixel, so the signed distance of a pixel is ``d - 0.5`` inside and ``-(d - 0.5)``
outside, where ``d`` is the Euclidean distance (in pixels) to the nearest pixel of the other
label. Values are clamped to ``[-T, T]`` and divided by ``T``: positive inside, in [-1, 1], and
``tsdf > 0`` gives the mask back exactly. A mask with no pixel of the other label (all inside
or all outside) is at the truncation everywhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["masks_to_tsdf", "tsdf_to_masks", "truncated_edt"]


def _column_distance(features: Tensor, cap: int) -> Tensor:
    """Distance along dim -2 to the nearest True of ``features: (B, H, W)``, capped."""
    H = features.shape[-2]
    idx = torch.arange(H, device=features.device, dtype=torch.int64).view(1, H, 1)
    neg = torch.full_like(idx, -(cap + H + 1)).expand_as(features)
    above = torch.where(features, idx.expand_as(features), neg).cummax(dim=-2).values
    flipped = torch.where(features.flip(-2), idx.expand_as(features), neg)
    below = (H - 1) - flipped.cummax(dim=-2).values.flip(-2)
    return torch.minimum(idx - above, below - idx).clamp_max(cap)


def truncated_edt(inputs: Tensor, truncation: float) -> Tensor:
    """Euclidean distance of each nonzero pixel to the nearest zero pixel, exact up to
    ``truncation`` and ``>= truncation`` beyond it (like ``scipy.ndimage.distance_transform_edt``
    followed by a clamp); zero pixels get 0.

    Args:
        inputs: ``(B, H, W)`` bool or 0/1 tensor, on any device.
        truncation: distance in pixels beyond which values are only known to be large.

    Returns:
        ``(B, H, W)`` float32 distances.
    """
    if inputs.dim() != 3:
        raise ValueError(f"expected (B, H, W) masks, got {tuple(inputs.shape)}")
    cap = int(math.ceil(truncation)) + 1
    features = inputs == 0
    g = _column_distance(features, cap).to(torch.float32)
    g2 = g * g
    W = inputs.shape[-1]
    d2 = g2.clone()
    for o in range(1, min(cap, W - 1) + 1):
        shifted_cost = g2[..., o:] + float(o * o)  # neighbour at column j + o, seen from j
        torch.minimum(d2[..., :-o], shifted_cost, out=d2[..., :-o])
        shifted_cost = g2[..., :-o] + float(o * o)  # neighbour at column j - o
        torch.minimum(d2[..., o:], shifted_cost, out=d2[..., o:])
    return d2.clamp_max_(float(cap * cap)).sqrt_()


def masks_to_tsdf(masks: Tensor, truncation: float) -> Tensor:
    """Binary masks to the truncated signed distance function, normalised to [-1, 1].

    Args:
        masks: ``(B, H, W)`` bool, integer or float (nonzero / > 0.5 is inside).
        truncation: ``T`` in pixels: distances beyond it are clamped.

    Returns:
        ``(B, H, W)`` float32 on ``masks.device``, positive inside.
    """
    if truncation <= 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    if masks.dim() != 3:
        raise ValueError(f"expected (B, H, W) masks, got {tuple(masks.shape)}")
    inside = masks > 0.5 if masks.is_floating_point() else masks != 0
    if inside.shape[0] == 0:
        return torch.zeros(inside.shape, dtype=torch.float32, device=inside.device)
    both = truncated_edt(torch.cat([inside, ~inside]), truncation)
    d_in, d_out = both.split(inside.shape[0])
    signed = torch.where(inside, d_in - 0.5, 0.5 - d_out)
    return signed.clamp_(-truncation, truncation).div_(truncation)


def tsdf_to_masks(tsdf: Tensor, threshold: float = 0.0) -> Tensor:
    """Masks from level sets: ``tsdf > threshold`` (bool, same shape)."""
    return tsdf > threshold
