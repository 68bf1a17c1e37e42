"""Reading images of any common mode into float RGB tensors.

COCO pixel coordinates refer to the raw stored pixels, so EXIF orientation is ignored on
purpose (as pycocotools and torchvision's COCO readers do).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

T = TypeVar("T")

__all__ = ["read_image", "read_image_size", "image_to_float_rgb"]

_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def image_to_float_rgb(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to ``(H, W, 3) float32`` in [0, 1].

    Grayscale (``L``, ``1``, 16-bit ``I;16*``, 32-bit ``I``/``F``) is replicated to three
    channels; alpha (``LA``, ``RGBA``, ``PA``) is dropped; palette and CMYK are converted.
    16-bit images (``I;16*``, and ``I``, which older Pillow uses for 16-bit PNGs) are scaled
    by 65535, so brightness is consistent across a dataset; ``F`` is assumed in [0, 1].
    """
    mode = img.mode
    if mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if mode == "F" else 65535.0
        gray = np.clip(arr / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGB":
        rgb = img
    elif mode in ("L", "1"):
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(arr[:, :, None], 3, axis=2)
    else:  # RGBA, LA, P, PA, CMYK, YCbCr, ...
        via_rgba = "A" in mode or mode == "P"
        rgb = img.convert("RGBA").convert("RGB") if via_rgba else img.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _with_image(path: str | Path, record: str, use: Callable[[Image.Image], T]) -> T:
    """Open ``path`` with PIL and apply ``use``; a missing or undecodable file is a
    :class:`DatasetError` naming the file and ``record``."""
    path = Path(path)
    where = f" ({record})" if record else ""
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}{where}")
    try:
        with Image.open(path) as img:
            return use(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot decode image {path}{where}: {exc}") from exc


def read_image(path: str | Path, *, record: str = "") -> torch.Tensor:
    """Read an image file as ``(3, H, W) float32`` in [0, 1].

    Raises:
        DatasetError: the file is missing or cannot be decoded; the message names ``path``
            and ``record`` (e.g. ``"image id 42"``).
    """
    def decode(img: Image.Image) -> np.ndarray:
        img.load()
        return image_to_float_rgb(img)

    arr = _with_image(path, record, decode)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_image_size(path: str | Path, *, record: str = "", verify: bool = False
                    ) -> tuple[int, int]:
    """``(height, width)`` of an image: from its header only (fast), or with ``verify`` after
    decoding every pixel, so that a truncated or corrupt file is a :class:`DatasetError` now
    rather than when training reaches it."""
    def size(img: Image.Image) -> tuple[int, int]:
        if verify:
            img.load()
        return img.size

    width, height = _with_image(path, record, size)
    return height, width
