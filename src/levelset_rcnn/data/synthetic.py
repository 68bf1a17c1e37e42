"""A synthetic COCO dataset of textured shapes with fine structure: the embedded default.

``make_synthetic_coco(out_dir, num_images=100)`` writes ``out_dir/<split>/NNNNNN.png`` and
``out_dir/<split>.json`` (COCO instances, exact RLE masks). Image ``i`` depends only on
``(seed, i)``, so the first N images are the same whatever ``num_images`` is. Objects are
20-120 px shapes of four families (see :mod:`.synthetic_shapes`) with high-frequency texture,
over a smooth background with solid clutter; later objects occlude earlier ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .masks import mask_bbox, mask_to_rle
from .synthetic_shapes import SHAPE_NAMES, background, draw_shape, textured_fill

__all__ = ["make_synthetic_coco", "synthetic_image_dir", "SYNTHETIC_CATEGORIES"]

SYNTHETIC_CATEGORIES: list[dict[str, Any]] = [
    {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_NAMES)]
_VERSION = 3
_MIN_VISIBLE = 0.6  # drop an object if occlusion leaves less than this fraction of it


def synthetic_image_dir(ann_file: str | Path) -> Path:
    """The image folder that goes with an annotation file written by this module."""
    ann_file = Path(ann_file)
    return ann_file.parent / ann_file.stem


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...], limit: float) -> bool:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter > limit * small


def render_image(shape: tuple[int, int], rng: np.random.Generator, *, max_objects: int = 4
                 ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image ``(H, W, 3) uint8`` and its instances ``[(category_id, mask (H, W) bool)]``."""
    h, w = shape
    img = background(shape, rng)
    placed: list[tuple[int, np.ndarray, tuple[float, ...]]] = []
    lo, hi = 18.0, min(60.0, 0.45 * min(h, w))  # radius: objects ~35-120 px across
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(lo, max(lo + 1, hi))
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            box = (cx - r, cy - r, cx + r, cy + r)
            if not any(_boxes_overlap(box, p[2], 0.25) for p in placed):
                break
        else:
            continue
        cat = int(rng.integers(len(SHAPE_NAMES)))
        mask = draw_shape(SHAPE_NAMES[cat], shape, center=(cx, cy), radius=r,
                          theta=rng.uniform(0, 2 * np.pi), rng=rng)
        if mask.sum() < 20:
            continue
        img[mask] = textured_fill(shape, rng)[mask]
        placed.append((cat + 1, mask, box))
    instances: list[tuple[int, np.ndarray]] = []
    for k, (cat_id, mask, _) in enumerate(placed):
        visible = mask.copy()
        for _, later, _ in placed[k + 1:]:
            visible &= ~later
        if visible.sum() >= _MIN_VISIBLE * mask.sum():
            instances.append((cat_id, visible))
    img = img + rng.normal(0.0, 0.03, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), instances


def make_synthetic_coco(out_dir: str | Path, *, num_images: int,
                        image_size: int | tuple[int, int] = (256, 256), seed: int = 0,
                        split_name: str = "train", max_objects: int = 4,
                        overwrite: bool = False) -> Path:
    """Write the synthetic dataset and return the path of its COCO JSON.

    Args:
        out_dir: destination; images go to ``out_dir/split_name/``.
        num_images: number of images.
        image_size: ``(H, W)`` or one int for square images.
        seed: base seed (image ``i`` uses ``(seed, i)``).
        split_name: name of the JSON file and image folder.
        max_objects: at most this many objects per image (at least one is attempted).
        overwrite: replace an existing dataset made with other parameters.

    Without ``overwrite`` an existing dataset with identical parameters is reused as is and
    one with other parameters raises ``FileExistsError``; ``overwrite`` regenerates it.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    params = {"version": _VERSION, "num_images": num_images, "image_size": [h, w], "seed": seed,
              "max_objects": max_objects}
    out_dir = Path(out_dir)
    ann_path = out_dir / f"{split_name}.json"
    img_dir = synthetic_image_dir(ann_path)
    if ann_path.exists() and not overwrite:
        try:
            existing = json.loads(ann_path.read_text()).get("info", {}).get("params")
        except (json.JSONDecodeError, AttributeError):
            existing = None
        if existing == params and all((img_dir / f"{i:06d}.png").is_file()
                                      for i in range(num_images)):
            return ann_path
        raise FileExistsError(f"{ann_path} exists with other parameters; pass overwrite=True "
                              "to replace it")
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        pixels, instances = render_image((h, w), rng, max_objects=max_objects)
        name = f"{i:06d}.png"
        Image.fromarray(pixels).save(img_dir / name, compress_level=1)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for cat_id, mask in instances:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": cat_id,
                "segmentation": mask_to_rle(mask), "area": float(mask.sum()),
                "bbox": mask_bbox(mask), "iscrowd": 0})
    data = {"info": {"description": "levelset-rcnn synthetic textured shapes", "params": params},
            "images": images, "annotations": annotations, "categories": SYNTHETIC_CATEGORIES}
    tmp = ann_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(ann_path)
    return ann_path
