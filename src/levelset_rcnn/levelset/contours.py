"""Sub-pixel contours: the zero level set of a TSDF as polygons, in image coordinates.

Marching squares (scikit-image's ``find_contours``) on the level set padded by one pixel of
"outside", so every contour is closed, even where the object touches the RoI border. A RoI
level set of ``M x W`` pixels covers its box ``(x0, y0, x1, y1)`` the way torchvision pastes
masks: pixel ``(i, j)`` has its centre at ``(x0 + (j + 0.5) (x1 - x0) / W,
y0 + (i + 0.5) (y1 - y0) / M)``.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import find_contours
from torch import Tensor

__all__ = ["tsdf_to_polygons", "level_set_polygons"]


def level_set_polygons(phi: np.ndarray, level: float = 0.0) -> list[np.ndarray]:
    """Closed polygons ``(K, 2)`` as ``(row, col)`` pixel coordinates of ``phi == level``.

    Points are in the pixel-centre coordinates of ``phi: (H, W)`` (so they can lie in
    ``[-0.5, H - 0.5]``); the region ``phi > level`` is inside. Polygons with fewer than three
    distinct points are dropped.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2:
        raise ValueError(f"expected a 2-D level set, got shape {phi.shape}")
    outside = min(float(phi.min()), level) - 1.0
    padded = np.pad(phi, 1, mode="constant", constant_values=outside)
    polys = []
    for c in find_contours(padded, level):
        if len(np.unique(np.round(c, 6), axis=0)) >= 3:
            # The padding value is far below the level, so points that fall in the padding
            # ring are pulled to within half a pixel of the border; clip them onto it.
            polys.append(np.clip(c - 1.0, -0.5, np.array(phi.shape) - 0.5))
    return polys


def tsdf_to_polygons(
    tsdf: Tensor, boxes: Tensor, *, level: float = 0.0
) -> list[list[np.ndarray]]:
    """Zero-level polygons of RoI level sets, mapped into image coordinates.

    Args:
        tsdf: ``(K, 1, M, W)`` or ``(K, M, W)`` level sets in RoI coordinates (positive inside).
        boxes: ``(K, 4)`` RoI boxes ``(x0, y0, x1, y1)`` in image pixels.
        level: which level set to trace (0 for the boundary).

    Returns:
        One list per RoI of polygons, each an ``(n, 2)`` float64 array of ``(x, y)`` image
        coordinates, closed (first point repeated last).
    """
    if tsdf.dim() == 4:
        tsdf = tsdf[:, 0]
    if tsdf.dim() != 3 or boxes.shape != (tsdf.shape[0], 4):
        raise ValueError(
            f"expected tsdf (K, M, W) and boxes (K, 4), got {tuple(tsdf.shape)} and "
            f"{tuple(boxes.shape)}"
        )
    arr = tsdf.detach().to("cpu", torch.float64).numpy()
    bx = boxes.detach().to("cpu", torch.float64).numpy()
    M, W = arr.shape[1:]
    out = []
    for phi, (x0, y0, x1, y1) in zip(arr, bx, strict=True):
        sx, sy = (x1 - x0) / W, (y1 - y0) / M
        polys = []
        for rc in level_set_polygons(phi, level):
            xy = np.stack([x0 + (rc[:, 1] + 0.5) * sx, y0 + (rc[:, 0] + 0.5) * sy], axis=1)
            polys.append(xy)
        out.append(polys)
    return out
