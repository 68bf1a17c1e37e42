"""Shape families and textures of the synthetic dataset (pure numpy, one object at a time).

Every shape is drawn into a full-image boolean mask; the families are chosen for the fine
structure a 28x28 mask loses: a ring (a hole), a star (thin spikes, concavities), a fork
(thin parallel tines) and a dumbbell (two blobs joined by a thin, sometimes broken, bar:
several components).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from skimage.draw import disk, polygon

__all__ = ["SHAPE_NAMES", "draw_shape", "textured_fill", "background"]

SHAPE_NAMES: tuple[str, ...] = ("ring", "star", "fork", "dumbbell")


def _rotate(xy: np.ndarray, theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return xy @ np.array([[c, s], [-s, c]])


def _fill_polygon(mask: np.ndarray, xy: np.ndarray) -> None:
    rr, cc = polygon(xy[:, 1], xy[:, 0], shape=mask.shape)
    mask[rr, cc] = True


def _rect(cx: float, cy: float, half_len: float, half_wid: float, theta: float) -> np.ndarray:
    """Corners ``(4, 2)`` (x, y) of a rectangle centred at (cx, cy), long axis at ``theta``."""
    corners = np.array([[-half_len, -half_wid], [half_len, -half_wid],
                        [half_len, half_wid], [-half_len, half_wid]])
    return _rotate(corners, theta) + np.array([cx, cy])


def _ring(mask: np.ndarray, cx: float, cy: float, r: float, theta: float,
          rng: np.random.Generator) -> None:
    h, w = mask.shape
    y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
    x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    uv = _rotate(np.stack([xx.ravel() - cx, yy.ravel() - cy], axis=1), -theta)
    aspect = rng.uniform(0.7, 1.0)
    d = np.hypot(uv[:, 0] / r, uv[:, 1] / (r * aspect)).reshape(xx.shape)
    # A scalloped outer edge (bumps a few pixels high) that a 28x28 mask smooths away.
    lobes, depth = int(rng.integers(8, 15)), rng.uniform(2.0, 4.0) / r
    angle = np.arctan2(uv[:, 1], uv[:, 0]).reshape(xx.shape)
    outer = 1.0 - depth * (0.5 + 0.5 * np.sin(lobes * angle + rng.uniform(0, 2 * np.pi)))
    inner = rng.uniform(0.5, 0.75)
    mask[y0:y1, x0:x1] |= (d <= outer) & (d >= inner)


def _star(mask: np.ndarray, cx: float, cy: float, r: float, theta: float,
          rng: np.random.Generator) -> None:
    n = int(rng.integers(6, 11))
    inner = rng.uniform(0.25, 0.4)
    angles = theta + np.arange(2 * n) * np.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, r, r * inner)
    _fill_polygon(mask, np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1))


def _fork(mask: np.ndarray, cx: float, cy: float, r: float, theta: float,
          rng: np.random.Generator) -> None:
    r = 0.75 * r  # the fork's outline reaches 1.33 r from its centre: keep it in the circle
    tines = int(rng.integers(3, 5))
    half_wid = rng.uniform(1.0, 2.0)  # tines 2-4 px wide: thinner than a 28x28 mask's cell
    spread = r * 0.8
    base_y = -r * 0.6
    offset = np.array([cx, cy])
    base = _rect(0, base_y, spread + half_wid, 1.8 * half_wid, 0.0)
    _fill_polygon(mask, _rotate(base, theta) + offset)
    for k in range(tines):
        x = -spread + 2 * spread * k / (tines - 1)
        tine_len = r * rng.uniform(0.6, 0.8)
        rect = _rect(x, base_y + tine_len, half_wid, tine_len, 0.0)
        _fill_polygon(mask, _rotate(rect, theta) + offset)
    handle = _rect(0, base_y - r * 0.2, 1.6 * half_wid, r * 0.2, 0.0)
    _fill_polygon(mask, _rotate(handle, theta) + offset)


def _dumbbell(mask: np.ndarray, cx: float, cy: float, r: float, theta: float,
              rng: np.random.Generator) -> None:
    blob = r * rng.uniform(0.3, 0.4)
    arm = r - blob
    ends = _rotate(np.array([[-arm, 0.0], [arm, 0.0]]), theta) + np.array([cx, cy])
    for ex, ey in ends:
        rr, cc = disk((ey, ex), blob, shape=mask.shape)
        mask[rr, cc] = True
    half_wid = rng.uniform(1.0, 2.0)
    if rng.random() < 0.3:  # a broken bar: two components
        for sign in (-1, 1):
            seg = _rect(sign * arm * 0.6, 0, arm * 0.3, half_wid, 0.0)
            _fill_polygon(mask, _rotate(seg, theta) + np.array([cx, cy]))
    else:
        _fill_polygon(mask, _rotate(_rect(0, 0, arm, half_wid, 0.0), theta) + np.array([cx, cy]))


_DRAW = {"ring": _ring, "star": _star, "fork": _fork, "dumbbell": _dumbbell}


def draw_shape(name: str, shape: tuple[int, int], *, center: tuple[float, float], radius: float,
               theta: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(H, W)`` mask of one shape of family ``name`` with the given centre (x, y)."""
    mask = np.zeros(shape, dtype=bool)
    _DRAW[name](mask, center[0], center[1], radius, theta, rng)
    return mask


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.1, 0.9, size=3)


def textured_fill(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A high-frequency texture ``(H, W, 3)``: stripes, checks or speckle in two colours.

    Objects carry texture while the background is smooth, so per-pixel colour alone (both
    draw colours from one distribution) does not separate them; local statistics do.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 7.0)
        t = (np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period) > 0)
    elif kind == 1:
        cell = int(rng.integers(2, 5))
        t = ((xx // cell + yy // cell) % 2) > 0
    else:
        t = rng.random((h, w)) > 0.5
    c1, c2 = _color(rng), _color(rng)
    while np.abs(c1 - c2).sum() < 0.6:
        c2 = _color(rng)
    return np.where(t[:, :, None], c1, c2).astype(np.float32)


def background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Cluttered ``(H, W, 3)`` background: smooth colour field plus solid distractor blobs
    and thin lines (clutter an untextured detector might mistake for objects)."""
    h, w = shape
    low = rng.uniform(0.1, 0.9, size=(3, max(2, h // 32), max(2, w // 32), 1))
    field = np.stack([np.kron(low[c, :, :, 0], np.ones((32, 32)))[:h, :w] for c in range(3)], -1)
    if field.shape[:2] != (h, w):
        field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1]), (0, 0)),
                       mode="edge")
    img = uniform_filter(field, size=(33, 33, 1), mode="nearest").astype(np.float32)
    n_clutter = int(rng.integers(4, 12))
    for _ in range(n_clutter):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.5:
            rr, cc = disk((cy, cx), rng.uniform(2, 7), shape=(h, w))
        else:
            length, ang = rng.uniform(15, 60), rng.uniform(0, np.pi)
            m = np.zeros((h, w), dtype=bool)
            _fill_polygon(m, _rect(cx, cy, length / 2, rng.uniform(0.5, 1.5), ang))
            rr, cc = np.nonzero(m)
        img[rr, cc] = _color(rng)
    return img
