"""Checks that keep bad numbers out of pycocotools' C code.

pycocotools' rasteriser and RLE decoder trust their input: a NaN or a vertex at 1e9 makes
``frPyObjects`` allocate without bound or crash, a negative or oversized RLE count writes past
its buffer. Every annotation this package reads (COCO, LVIS, converter output) passes through
these checks first:

- :func:`polygon_problem` / :func:`clip_polygon`: polygon coordinates must be finite numbers
  of a sane magnitude; vertices beyond a one-pixel margin around the image are clipped to it
  (the part inside the image is unchanged: Sutherland-Hodgman against the margin rectangle);
- :func:`rle_problem`: an RLE's ``size`` is its image's ``[h, w]`` and its counts (a list or
  COCO's compressed string, decoded here by :func:`decode_rle_string`) are non-negative and
  sum to ``h * w``;
- :func:`bbox_problem`: four finite numbers with non-negative width and height;
- :func:`image_size_problem`: a positive, plausible image size.

The ``*_problem`` functions return a reason string (``None`` when the value is fine), so the
caller names the file and the record and decides whether to skip or to raise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MAX_ABS_COORDINATE", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "bbox_problem",
           "clip_polygon", "decode_rle_string", "image_size_problem", "is_finite_number",
           "outside_window", "polygon_problem", "rle_problem"]

#: Coordinates beyond this magnitude are garbage, not geometry (and lose all precision).
MAX_ABS_COORDINATE = 1e12
#: The largest image side and pixel count accepted (a 2^31-byte mask is already 2 GB).
MAX_IMAGE_SIDE = 100_000
MAX_IMAGE_PIXELS = 2**31 - 1
#: Vertices may lie this many pixels outside the image before they are clipped.
CLIP_MARGIN = 1.0


def is_finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def image_size_problem(height: Any, width: Any) -> str | None:
    """Why ``(height, width)`` is not a usable image size, or None."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            return f"no positive integer '{name}' (got {v!r})"
        if v > MAX_IMAGE_SIDE:
            return f"'{name}' {v} is larger than {MAX_IMAGE_SIDE} pixels"
    if height * width > MAX_IMAGE_PIXELS:
        return f"{width}x{height} has more than {MAX_IMAGE_PIXELS} pixels"
    return None


def polygon_problem(poly: Any) -> str | None:
    """Why one flat ``[x0, y0, x1, y1, ...]`` polygon cannot be used, or None (fewer than
    three vertices or zero area is left to the caller: that is degenerate, not corrupt)."""
    if not isinstance(poly, list):
        return f"a polygon must be a list of numbers, got {type(poly).__name__}"
    for i, v in enumerate(poly):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"polygon value [{i}] is not a number: {v!r}"
        if not math.isfinite(v):
            return f"polygon value [{i}] is not finite: {v!r}"
        if abs(v) > MAX_ABS_COORDINATE:
            return f"polygon value [{i}] is absurd: {v!r}"
    if len(poly) % 2:
        return f"a polygon needs an even number of values, got {len(poly)}"
    return None


def outside_window(poly: Sequence[float], height: int, width: int,
                   margin: float = CLIP_MARGIN) -> bool:
    """Whether a vertex of ``poly`` lies more than ``margin`` pixels outside the image."""
    xs, ys = poly[0::2], poly[1::2]
    return bool(xs) and (min(xs) < -margin or max(xs) > width + margin
                         or min(ys) < -margin or max(ys) > height + margin)


def _clip_edge(points: list[tuple[float, float]], axis: int, bound: float, keep_low: bool
               ) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman pass: keep the side ``p[axis] <= bound`` (``keep_low``) or
    ``>= bound``."""
    def inside(p: tuple[float, float]) -> bool:
        return p[axis] <= bound if keep_low else p[axis] >= bound

    out: list[tuple[float, float]] = []
    n = len(points)
    for i in range(n):
        cur, prev = points[i], points[i - 1]
        cin, pin = inside(cur), inside(prev)
        if cin != pin:  # the edge crosses the bound: add the crossing point
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            other = 1 - axis
            q = [0.0, 0.0]
            q[axis] = bound
            q[other] = prev[other] + t * (cur[other] - prev[other])
            out.append((q[0], q[1]))
        if cin:
            out.append(cur)
    return out


def clip_polygon(poly: Sequence[float], height: int, width: int,
                 margin: float = CLIP_MARGIN) -> list[float]:
    """``poly`` clipped to the rectangle ``[-margin, width + margin] x [-margin, height +
    margin]`` (flat list; empty when nothing of it is inside). The polygon's part inside the
    image is unchanged, so its mask is too."""
    pts = [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)]
    for axis, bound, low in ((0, -margin, False), (0, width + margin, True),
                             (1, -margin, False), (1, height + margin, True)):
        if not pts:
            break
        pts = _clip_edge(pts, axis, bound, low)
    return [c for p in pts for c in p]


def decode_rle_string(counts: str) -> np.ndarray:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString`` format:
    each count in 5-bit groups from ``'0'`` (48) on, 0x20 = more groups follow, 0x10 in the
    last group = negative; from the fourth count on, a count is stored as its difference to
    the count two places before), as int64.

    Raises:
        ValueError: a character outside the alphabet, a count cut short, or one too long.
    """
    try:
        raw = np.frombuffer(counts.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        raise ValueError("a character is not in the compressed RLE alphabet") from None
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    c = raw.astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        bad = counts[int(np.flatnonzero((c < 0) | (c > 63))[0])]
        raise ValueError(f"character {bad!r} is not in the compressed RLE alphabet")
    ends = (c & 0x20) == 0
    if not ends[-1]:
        raise ValueError("the last count is cut short")
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    lengths = np.diff(np.concatenate((starts, [c.size])))
    if lengths.max() > 12:  # 60 bits: far beyond any image
        raise ValueError("a count is too long")
    pos = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    negative = (c[ends] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * lengths)), x)
    out = x.copy()
    # counts m >= 3 are deltas to count m - 2: a running sum along each parity
    out[1::2] = np.cumsum(x[1::2])
    if x.size > 2:
        out[2::2] = np.cumsum(x[2::2])
    return out


def rle_problem(seg: dict[str, Any]) -> str | None:
    """Why an RLE ``{"size": [h, w], "counts"}`` is not a valid ``h x w`` mask, or None:
    counts that are not non-negative integers summing to ``h * w``, or a corrupt compressed
    string. (Whether ``size`` is the image's is the caller's check.)"""
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return f"RLE 'size' must be [height, width] integers, got {size!r}"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "uncompressed RLE 'counts' must be integers"
        if any(v < 0 for v in counts):
            return "uncompressed RLE has a negative count"
        total = sum(counts)
    elif isinstance(counts, str):
        try:
            runs = decode_rle_string(counts)
        except ValueError as exc:
            return f"compressed RLE 'counts' is corrupt: {exc}"
        if (runs < 0).any():
            return "compressed RLE has a negative count"
        total = int(runs.sum())
    else:
        return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
    height, width = size
    if height < 0 or width < 0 or total != height * width:
        return f"RLE counts sum to {total}, not {height}x{width} = {height * width} pixels"
    return None


def bbox_problem(bbox: Any) -> str | None:
    """Why ``bbox`` is not ``[x, y, w, h]`` of finite numbers with ``w, h >= 0``, or None."""
    if not (isinstance(bbox, list) and len(bbox) == 4):
        return f"'bbox' is not [x, y, w, h]: {bbox!r}"
    if not all(is_finite_number(v) for v in bbox):
        return f"'bbox' has a value that is not a finite number: {bbox!r}"
    if any(abs(v) > MAX_ABS_COORDINATE for v in bbox):
        return f"'bbox' has an absurd value: {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"'bbox' has a negative width or height: {bbox!r}"
    return None
