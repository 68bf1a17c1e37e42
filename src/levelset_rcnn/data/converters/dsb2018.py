"""Kaggle DSB2018 layout (one PNG mask per instance) -> COCO JSON.

Layout: ``SRC/<id>/images/<id>.png`` and ``SRC/<id>/masks/<mask_id>.png`` (nonzero = the
instance). ``SRC`` may also be the folder above ``stage1_train``. Masks are stored as exact
compressed RLE; ``file_name`` is relative to ``SRC`` (pass ``SRC`` as the dataset's
``image_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import DatasetError
from ..image_io import read_image_size
from ..masks import mask_bbox, mask_to_rle
from .common import CocoBuilder, check_output, write_coco_json

__all__ = ["convert_dsb2018", "dsb2018_image_ids", "dsb2018_root"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "all")


def dsb2018_root(src: str | Path) -> Path:
    """The folder holding one sub-folder per image (``SRC`` or ``SRC/stage1_train``)."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"DSB2018 source folder not found: {src}")
    if (src / "stage1_train").is_dir():
        src = src / "stage1_train"
    return src


def dsb2018_image_ids(root: Path, split: str = "all", train_fraction: float = 0.8) -> list[str]:
    """Sorted image ids of ``split``: the first ``round(0.8 n)`` train, the rest val."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ids = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    if not ids:
        raise DatasetError(f"{root}: no '<id>/images/' folders (not the DSB2018 layout)")
    n_train = int(round(train_fraction * len(ids)))
    return ids[:n_train] if split == "train" else ids[n_train:] if split == "val" else ids


def _read_mask(path: Path, shape: tuple[int, int], image_id: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode mask {path} (image {image_id}): {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[2] < 4 else arr[..., :3].max(axis=2)
    if arr.shape != shape:
        raise DatasetError(f"mask {path} is {arr.shape[1]}x{arr.shape[0]} but its image "
                           f"{image_id} is {shape[1]}x{shape[0]}")
    return arr > 0


def convert_dsb2018(src: str | Path, out: str | Path, *, split: str = "all",
                    overwrite: bool = False, progress: bool = True, verify: bool = True
                    ) -> Path:
    """Convert a DSB2018-layout folder to a COCO instances JSON (one class, ``nucleus``).

    Args:
        src: the ``stage1_train`` folder (or its parent).
        out: the JSON file to write.
        split: ``"train"`` (first 80% of sorted ids: 200 of 250), ``"val"`` (the rest) or
            ``"all"``.
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar.
        verify: decode every image (a truncated one raises now); ``False`` reads headers only.

    Raises:
        FileExistsError: ``out`` exists and not ``overwrite``.
        DatasetError: a missing/corrupt image or mask, or a mask whose size differs from its
            image (the message names the file). An empty mask is skipped with a warning.
    """
    check_output(out, overwrite)
    root = dsb2018_root(src)
    builder = CocoBuilder([{"id": 1, "name": "nucleus", "supercategory": "nucleus"}],
                          description=f"DSB2018 nuclei ({split}) converted from {root.name}")
    for image_id in tqdm(dsb2018_image_ids(root, split), desc="dsb2018", disable=not progress):
        image_path = root / image_id / "images" / f"{image_id}.png"
        h, w = read_image_size(image_path, record=f"image {image_id}", verify=verify)
        coco_id = builder.add_image(f"{image_id}/images/{image_id}.png", h, w)
        mask_dir = root / image_id / "masks"
        for mask_path in sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []:
            mask = _read_mask(mask_path, (h, w), image_id)
            area = int(mask.sum())
            if area == 0:
                builder.skip(f"empty mask {mask_path}")
                continue
            builder.add_annotation(coco_id, 1, mask_to_rle(mask), area=area, bbox=mask_bbox(mask))
    if builder.num_skipped:
        logger.warning("%s: skipped %d empty masks", root, builder.num_skipped)
        builder.notes.append(f"{builder.num_skipped} empty mask(s) skipped")
    builder.verified = verify
    return write_coco_json(builder.to_dict(), out, overwrite=overwrite)
