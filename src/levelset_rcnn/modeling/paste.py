"""Pasting RoI-grid maps into the image with the boxes' exact (float) geometry.

torchvision's ``paste_masks_in_image`` rounds every box to whole pixels (with the legacy
``+1`` width) before resizing the mask into it, so a 112x112 mask lands up to about a pixel
off: as large as AF1's whole tolerance, and not where the sub-pixel contours
(:func:`~levelset_rcnn.levelset.tsdf_to_polygons`, float boxes) put the boundary.

:func:`paste_roi_maps` samples each ``M x M`` map at the image's pixel centres instead. The
geometry is RoIAlign's with ``aligned=True`` (the targets', :func:`~levelset_rcnn.modeling.
losses.project_masks`): cell ``i`` of a box ``[x0, x1]`` is centred at ``x0 + (i + 1/2)
(x1 - x0) / M``, and image pixel ``j`` at ``j + 1/2``; values in between are bilinear, and
beyond the outer cell centres they blend into ``fill`` over half a cell (as torchvision's zero
padding does). Only the pixels near each box are computed (detectron2's ``skip_empty``);
under tracing the whole image is sampled instead, which has no data-dependent shapes.

Level sets are pasted as level sets (``fill=-1``, the TSDF's outside value) and turned into
mask probabilities after pasting, so that the pasted mask's 0.5 level is the pasted zero level
set: the same curve as the polygons.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["paste_roi_maps"]


def _normalised(coords: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """grid_sample's ``align_corners=False`` coordinate of pixel centres ``coords`` in
    ``[lo, hi]`` (-1 and 1 are the grid's outer edges)."""
    return 2.0 * (coords - lo) / (hi - lo).clamp_min(1e-6) - 1.0


def _paste_whole_image(src: Tensor, boxes: Tensor, H: int, W: int) -> Tensor:
    """Every pixel of every box's image at once (no data-dependent shapes: traceable)."""
    K = src.shape[0]
    gx = _normalised(torch.arange(W, dtype=src.dtype, device=src.device)[None] + 0.5,
                     boxes[:, 0:1], boxes[:, 2:3])  # (K, W)
    gy = _normalised(torch.arange(H, dtype=src.dtype, device=src.device)[None] + 0.5,
                     boxes[:, 1:2], boxes[:, 3:4])  # (K, H)
    grid = torch.stack((gx[:, None, :].expand(K, H, W), gy[:, :, None].expand(K, H, W)), -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste_roi_maps(maps: Tensor, boxes: Tensor, image_shape: tuple[int, int], *,
                   fill: float = 0.0, then: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Paste ``(K, 1, M, M)`` RoI-grid maps into ``(K, 1, H, W)`` images.

    Args:
        maps: per-box maps on the RoI grid (mask probabilities, or level sets).
        boxes: ``(K, 4)`` ``(x0, y0, x1, y1)`` float boxes in the image's pixel coordinates
            (pixel ``j`` spans ``[j, j + 1]``).
        image_shape: ``(H, W)``.
        fill: the value far outside each box (0 for probabilities, -1 for a TSDF).
        then: an elementwise function applied to the pasted maps (e.g. a level set's mask
            probabilities): the same values as ``then(paste_roi_maps(...))``, computed on the
            pixels near each box only (the rest is ``then(fill)``, computed once).

    Returns:
        ``(K, 1, H, W)`` of ``maps``' floating dtype (float32 for other dtypes), or of
        ``then``'s.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    K, M = maps.shape[0], maps.shape[-1]
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    src = maps.to(dtype) - fill  # zero padding of (maps - fill) is padding with fill
    boxes = boxes.to(dtype)
    if then is None:
        def then(t: Tensor) -> Tensor:
            return t
    if torch.jit.is_tracing() or K == 0:
        return then(_paste_whole_image(src, boxes, H, W) + fill)
    outside = then(torch.full((), fill, dtype=dtype, device=maps.device))
    out = torch.full((K, 1, H, W), float(outside), dtype=outside.dtype, device=maps.device)
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        # pixels whose centres lie within half a cell of the box: the rest stay `fill`
        hx, hy = 0.5 * (x1 - x0) / M, 0.5 * (y1 - y0) / M
        c0, c1 = max(0, math.floor(x0 - hx - 0.5)), min(W, math.ceil(x1 + hx + 0.5))
        r0, r1 = max(0, math.floor(y0 - hy - 0.5)), min(H, math.ceil(y1 + hy + 0.5))
        if c1 <= c0 or r1 <= r0:
            continue
        gx = _normalised(torch.arange(c0, c1, dtype=dtype, device=maps.device) + 0.5,
                         boxes[k, 0], boxes[k, 2])
        gy = _normalised(torch.arange(r0, r1, dtype=dtype, device=maps.device) + 0.5,
                         boxes[k, 1], boxes[k, 3])
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None]
        out[k, :, r0:r1, c0:c1] = then(F.grid_sample(src[k:k + 1], grid, mode="bilinear",
                                                     padding_mode="zeros",
                                                     align_corners=False)[0] + fill)
    return out
