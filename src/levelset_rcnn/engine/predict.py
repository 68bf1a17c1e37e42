"""Prediction on image files: overlay PNGs (masks and sub-pixel contours), COCO results JSON,
polygons JSON. Unreadable images are skipped with a message; the rest go on.

Memory does not grow with image size times detections: the model's masks are kept on its RoI
grid (``(K, 1, M, M)``; the transform's full-image pasting is bypassed), and each detection is
pasted on its own, into a crop around its box, with the model's own pasting
(:func:`~levelset_rcnn.modeling.transform.paste_masks`, same geometry, same values); its RLE is
encoded from one image-sized buffer reused for every detection. With test-time augmentation
the wrapper's pasted masks are used as they come (memory then grows with the detections).

Overlay names are ``overlays/<stem>.png`` when the stem is unique among the inputs, else
``<name with suffix>.png`` (``a.jpg.png`` beside ``a.png.png``), with the parent folders
prefixed (``x__a.png.png``) for the same name in several folders (:func:`overlay_names`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection.transform import resize_boxes
from tqdm import tqdm

from ..comm import unwrap
from ..data import DatasetError, read_image
from ..data.masks import encode_masks
from ..evaluation.coco_results import output_to_records
from ..levelset import level_set_polygons, tsdf_to_polygons
from ..modeling.transform import paste_masks
from .inference import has_phi0, predict_batch

__all__ = ["IMAGE_SUFFIXES", "collect_images", "contours_of", "draw_overlay",
           "masks_on_roi_grid", "overlay_names", "paste_detection", "run_predict"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.float32)


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus the image files (by suffix, sorted) of given folders; a
    file reached twice is kept once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) \
            if p.is_dir() else [p]
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """A distinct overlay file name per input (see the module docstring)."""
    def name_at(p: Path, depth: int) -> str:
        if depth == 0:
            return f"{p.stem}.png"
        parts = p.resolve().parts[-depth:]
        return "__".join(parts) + ".png"

    depth = [0] * len(paths)
    names = [name_at(p, 0) for p in paths]
    while True:
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n.lower(), []).append(i)  # case-insensitive file systems too
        clashes = [idx for idx in groups.values() if len(idx) > 1]
        if not clashes:
            return names
        progressed = False
        for idx in clashes:
            for i in idx:
                if depth[i] < len(paths[i].resolve().parts):
                    depth[i] += 1
                    names[i] = name_at(paths[i], depth[i])
                    progressed = True
        if not progressed:  # identical paths: number them
            for idx in clashes:
                for n, i in enumerate(idx[1:], start=2):
                    names[i] = f"{names[i][:-4]}-{n}.png"
            return names


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


class _Overlay:
    """The overlay of one image, drawn one detection at a time: translucent masks on the
    image, then (on a 2x canvas, so sub-pixel positions show) contours, boxes and labels."""

    def __init__(self, image: torch.Tensor, alpha: float = 0.45) -> None:
        self.base = (image.permute(1, 2, 0).numpy() * 255).astype(np.float32)
        self.alpha = alpha

    def add_mask(self, k: int, inside: np.ndarray, r0: int = 0, c0: int = 0) -> None:
        """Blend detection ``k``'s mask ``inside`` (bool, a crop at row ``r0``, column
        ``c0``)."""
        h, w = inside.shape
        region = self.base[r0:r0 + h, c0:c0 + w]
        region[inside] = (1 - self.alpha) * region[inside] + self.alpha * _PALETTE[
            k % len(_PALETTE)]

    def finish(self, output: dict[str, Any], polygons: list[list[np.ndarray]],
               class_names: Sequence[str] | None = None) -> Image.Image:
        H, W = self.base.shape[:2]
        scale = 2
        img = Image.fromarray(self.base.clip(0, 255).astype(np.uint8)).resize(
            (W * scale, H * scale), Image.NEAREST)
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


def draw_overlay(image: torch.Tensor, output: dict[str, Any], polygons: list[list[np.ndarray]],
                 *, class_names: Sequence[str] | None = None, alpha: float = 0.45,
                 threshold: float = 0.5) -> Image.Image:
    """The image with translucent masks (``output["masks"]``: ``(K, 1, H, W)`` pasted
    probabilities), contours, boxes and labels: an RGB ``PIL`` image."""
    overlay = _Overlay(image, alpha)
    for k, m in enumerate(output["masks"]):
        overlay.add_mask(k, m[0].numpy() > threshold)
    return overlay.finish(output, polygons, class_names)


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


@contextlib.contextmanager
def masks_on_roi_grid(model: nn.Module) -> Iterator[bool]:
    """Within the block the model's results keep their masks on the RoI grid (``(K, 1, M,
    M)``, boxes still in original image coordinates): its transform's post-processing only
    rescales the boxes. Yields whether that applies (False for a model without a
    torchvision-style ``transform``)."""
    t = getattr(unwrap(model), "transform", None)
    if t is None or not hasattr(t, "postprocess"):
        yield False
        return

    def postprocess(result: list[dict[str, Any]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
        if not t.training:
            for pred, s, o in zip(result, image_shapes, original_image_sizes, strict=True):
                pred["boxes"] = resize_boxes(pred["boxes"], s, o)
        return result

    t.postprocess = postprocess
    try:
        yield True
    finally:
        del t.postprocess


def paste_detection(output: dict[str, Any], k: int, image_shape: tuple[int, int], *,
                    mode: str) -> tuple[torch.Tensor, int, int] | None:
    """Detection ``k``'s mask probabilities pasted into a crop of the image around its box,
    as the model pastes them (``mode``: its ``transform.mask_paste``): ``(crop (h, w), row,
    column of the crop)``, or None when the box lies outside the image. ``output`` holds
    ``masks`` (and ``tsdf`` for level-set models) on the RoI grid; pixels outside the crop
    are below any threshold."""
    H, W = image_shape
    M = output["masks"].shape[-1]
    x0, y0, x1, y1 = (float(v) for v in output["boxes"][k])
    # a RoI cell's blending band, torchvision's one-cell padding and its rounding
    mx, my = 2 * (x1 - x0) / M + 2, 2 * (y1 - y0) / M + 2
    c0, c1 = max(0, math.floor(x0 - mx)), min(W, math.ceil(x1 + mx))
    r0, r1 = max(0, math.floor(y0 - my)), min(H, math.ceil(y1 + my))
    if c1 <= c0 or r1 <= r0:
        return None
    shift = torch.tensor([c0, r0, c0, r0], dtype=output["boxes"].dtype)
    one = {key: output[key][k:k + 1] for key in ("masks", "tsdf") if key in output}
    prob = paste_masks(one, output["boxes"][k:k + 1] - shift, (r1 - r0, c1 - c0), mode=mode)
    return prob[0, 0], r0, c0


def _paste_mode(model: nn.Module) -> str:
    return getattr(getattr(unwrap(model), "transform", None), "mask_paste", "torchvision")


def _predict_one(model: nn.Module, image: torch.Tensor, device: torch.device, *, level: bool,
                 tta: bool, tta_flip: bool, tta_min_sizes: Sequence[int]
                 ) -> tuple[dict[str, Any], bool]:
    """``(output, whether its masks are on the RoI grid)``."""
    if tta:  # the TTA wrapper pastes its merged masks itself
        (output,) = predict_batch(model, [image], device, tsdf=level, tta=True,
                                  tta_flip=tta_flip, tta_min_sizes=tta_min_sizes)
        return output, False
    with masks_on_roi_grid(model) as on_grid:
        (output,) = predict_batch(model, [image], device, tsdf=level)
    return output, on_grid


def run_predict(model: nn.Module, images: Iterable[Path], out_dir: Path, *,
                device: torch.device, class_names: Sequence[str] | None = None,
                label_to_cat_id: dict[int, int] | None = None, score_thresh: float = 0.5,
                polygons: bool = False, progress: bool = True, tta: bool = False,
                tta_flip: bool = True, tta_min_sizes: Sequence[int] = (),
                threshold: float = 0.5) -> dict[str, Any]:
    """Predict every image; write ``overlays/<name>.png`` (:func:`overlay_names`;
    ``overlays.json`` maps each input to its overlay), ``results.json`` (COCO results, image
    ids in ``image_ids.json``) and, with ``polygons``, ``polygons.json``.

    ``tta``, ``tta_flip``, ``tta_min_sizes``: test-time augmentation (see
    :func:`~levelset_rcnn.engine.inference.predict_batch`).

    Returns ``{"done": [...], "skipped": [(path, reason), ...]}``.

    Raises:
        DatasetError: no image could be read (nothing is written).
    """
    out_dir = Path(out_dir)
    level = has_phi0(model)
    mode = _paste_mode(model)
    images = list(images)
    overlay_of = dict(zip(map(str, images), overlay_names(images), strict=True))
    mapping = label_to_cat_id or {i: i for i in range(1, 1 + 1000)}
    records, names, skipped, poly_records, overlays = [], {}, [], {}, {}
    for path in tqdm(images, desc="predict", unit="img", disable=not progress,
                     dynamic_ncols=True):
        try:
            image = read_image(path)
        except DatasetError as exc:
            msg = str(exc)
            skipped.append((str(path), msg))
            tqdm.write(f"skipping {path}: {msg}")
            continue
        output, on_grid = _predict_one(model, image, device, level=level, tta=tta,
                                       tta_flip=tta_flip, tta_min_sizes=tta_min_sizes)
        output = _keep(output, score_thresh)
        H, W = image.shape[-2:]
        overlay = _Overlay(image)
        buffer = np.zeros((H, W, 1), dtype=np.bool_, order="F")  # one detection's full mask
        rles, polys = [], []
        for k in range(len(output["labels"])):
            if not on_grid:
                prob, r0, c0 = output["masks"][k, 0], 0, 0
            else:
                crop = paste_detection(output, k, (H, W), mode=mode)
                prob, r0, c0 = crop if crop is not None else (torch.zeros(0, 0), 0, 0)
            inside = prob.numpy() > threshold
            h, w = inside.shape
            buffer[r0:r0 + h, c0:c0 + w, 0] = inside
            rles.append(encode_masks(buffer.transpose(2, 0, 1))[0])
            buffer[r0:r0 + h, c0:c0 + w, 0] = False
            overlay.add_mask(k, inside, r0, c0)
            if "tsdf" in output:
                polys.append(tsdf_to_polygons(output["tsdf"][k:k + 1],
                                              output["boxes"][k:k + 1])[0])
            else:  # marching squares on the pasted probabilities, pixel i spanning [i, i + 1]
                polys.append([p[:, ::-1] + 0.5 + (c0, r0) for p in
                              level_set_polygons(prob.numpy().astype(np.float64), threshold)
                              ] if inside.any() else [])
        overlay_path = out_dir / "overlays" / overlay_of[str(path)]
        overlay_path.parent.mkdir(parents=True, exist_ok=True)
        overlay.finish(output, polys, class_names).save(overlay_path)
        overlays[str(path)] = overlay_path.relative_to(out_dir).as_posix()
        image_id = len(names) + 1
        names[str(path)] = image_id
        for rec, rle in zip(output_to_records(output, image_id, mapping), rles, strict=True):
            rec["segmentation"] = rle
            records.append(rec)
        if polygons:
            poly_records[str(path)] = [
                {"label": int(output["labels"][k]),
                 "category": (class_names[int(output["labels"][k])] if class_names else None),
                 "score": float(output["scores"][k]),
                 "box": [float(v) for v in output["boxes"][k]],
                 "polygons": [p.round(3).tolist() for p in polys[k]]}
                for k in range(len(output["labels"]))]
    if not names:
        raise DatasetError(f"none of the {len(images)} input image(s) could be read: "
                           + "; ".join(f"{p}: {why}" for p, why in skipped[:5])
                           + (" ..." if len(skipped) > 5 else ""))
    (out_dir / "results.json").write_text(json.dumps(records))
    (out_dir / "image_ids.json").write_text(json.dumps(names, indent=1))
    (out_dir / "overlays.json").write_text(json.dumps(overlays, indent=1))
    if polygons:
        (out_dir / "polygons.json").write_text(json.dumps(poly_records))
    return {"done": list(names), "skipped": skipped}
