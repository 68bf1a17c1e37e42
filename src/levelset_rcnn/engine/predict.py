"""Prediction on image files: overlay PNGs (masks and sub-pixel contours), COCO results JSON,
polygons JSON. Unreadable images are skipped with a message; the rest go on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from ..data import DatasetError, read_image
from ..evaluation import write_coco_results
from ..levelset import level_set_polygons, tsdf_to_polygons
from .inference import has_phi0, predict_batch

__all__ = ["IMAGE_SUFFIXES", "collect_images", "contours_of", "draw_overlay", "run_predict"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.float32)


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus the image files (by suffix, sorted) of given folders."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def contours_of(output: dict[str, Any], threshold: float = 0.5) -> list[list[np.ndarray]]:
    """Per instance, closed ``(n, 2)`` ``(x, y)`` polygons in continuous image coordinates
    (pixel ``i`` spans ``[i, i + 1]``): the sub-pixel zero level set of phi_N (``tsdf``, in
    RoI coordinates) when present, else marching squares on the pasted mask probability at
    ``threshold``. Call it after any score filtering: it costs CPU time per instance."""
    if "tsdf" in output:
        return tsdf_to_polygons(output["tsdf"], output["boxes"])
    polys = []
    for m in output["masks"]:
        prob = m[0].numpy().astype(np.float64)
        # pixel-centre (row, col) -> continuous (x, y), where pixel i spans [i, i + 1]
        polys.append([p[:, ::-1] + 0.5 for p in level_set_polygons(prob, threshold)])
    return polys


def draw_overlay(image: torch.Tensor, output: dict[str, Any], polygons: list[list[np.ndarray]],
                 *, class_names: Sequence[str] | None = None, alpha: float = 0.45,
                 threshold: float = 0.5) -> Image.Image:
    """The image with translucent masks, contours, boxes and labels: an RGB ``PIL`` image."""
    base = (image.permute(1, 2, 0).numpy() * 255).astype(np.float32)
    for k, m in enumerate(output["masks"]):
        inside = m[0].numpy() > threshold
        base[inside] = (1 - alpha) * base[inside] + alpha * _PALETTE[k % len(_PALETTE)]
    scale = 2  # contours are drawn on a 2x canvas so sub-pixel positions show
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize(
        (image.shape[-1] * scale, image.shape[-2] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for k, polys in enumerate(polygons):
        color = tuple(int(c) for c in _PALETTE[k % len(_PALETTE)])
        for poly in polys:
            pts = [(x * scale, y * scale) for x, y in poly]
            if len(pts) >= 2:
                draw.line(pts, fill=(255, 255, 255), width=3)
                draw.line(pts, fill=color, width=1)
        x0, y0, x1, y1 = (float(v) * scale for v in output["boxes"][k])
        draw.rectangle([x0, y0, x1, y1], outline=color, width=1)
        label = int(output["labels"][k])
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        draw.text((x0 + 2, y0 + 1), f"{name} {float(output['scores'][k]):.2f}", fill=color)
    return img


def _keep(output: dict[str, Any], score_thresh: float) -> dict[str, Any]:
    keep = output["scores"] >= score_thresh
    idx = torch.where(keep)[0].tolist()
    out = {}
    for k, v in output.items():
        if isinstance(v, torch.Tensor) and v.shape[:1] == keep.shape:
            out[k] = v[keep]
        elif isinstance(v, list) and len(v) == len(keep):
            out[k] = [v[i] for i in idx]
        else:
            out[k] = v
    return out


def run_predict(model: nn.Module, images: Iterable[Path], out_dir: Path, *,
                device: torch.device, class_names: Sequence[str] | None = None,
                label_to_cat_id: dict[int, int] | None = None, score_thresh: float = 0.5,
                polygons: bool = False, progress: bool = True, tta: bool = False,
                tta_flip: bool = True, tta_min_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """Predict every image; write ``overlays/<stem>.png``, ``results.json`` (COCO results,
    image ids in ``image_ids.json``) and, with ``polygons``, ``polygons.json``.

    ``tta``, ``tta_flip``, ``tta_min_sizes``: test-time augmentation (see
    :func:`~levelset_rcnn.engine.inference.predict_batch`).

    Returns ``{"done": [...], "skipped": [(path, reason), ...]}``.
    """
    out_dir = Path(out_dir)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    level = has_phi0(model)
    outputs, ids, names, skipped, poly_records = [], [], {}, [], {}
    images = list(images)
    for path in tqdm(images, desc="predict", unit="img", disable=not progress,
                     dynamic_ncols=True):
        try:
            image = read_image(path)
        except DatasetError as exc:
            msg = str(exc)
            skipped.append((str(path), msg))
            tqdm.write(f"skipping {path}: {msg}")
            continue
        (output,) = predict_batch(model, [image], device, tsdf=level, tta=tta,
                                  tta_flip=tta_flip, tta_min_sizes=tta_min_sizes)
        output = _keep(output, score_thresh)
        polys = contours_of(output)
        output.pop("tsdf", None)
        output.pop("tsdf_init", None)
        draw_overlay(image, output, polys, class_names=class_names).save(
            out_dir / "overlays" / f"{path.stem}.png")
        image_id = len(ids) + 1
        ids.append(image_id)
        names[str(path)] = image_id
        outputs.append(output)
        if polygons:
            poly_records[str(path)] = [
                {"label": int(output["labels"][k]),
                 "category": (class_names[int(output["labels"][k])] if class_names else None),
                 "score": float(output["scores"][k]),
                 "box": [float(v) for v in output["boxes"][k]],
                 "polygons": [p.round(3).tolist() for p in polys[k]]}
                for k in range(len(output["labels"]))]
    mapping = label_to_cat_id or {i: i for i in range(1, 1 + 1000)}
    write_coco_results(outputs, ids, mapping, out_dir / "results.json")
    (out_dir / "image_ids.json").write_text(json.dumps(names, indent=1))
    if polygons:
        (out_dir / "polygons.json").write_text(json.dumps(poly_records))
    return {"done": list(names), "skipped": skipped}
