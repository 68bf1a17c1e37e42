"""Test-time augmentation (the paper's Table 1 "F" and "MS"): horizontal flip and multi-scale
inference with detections merged across views and the level sets of each instance averaged.

Views are ``min_sizes x {no flip, flip}``. For every view the image is (flipped and) resized by
the model's own transform at that shorter edge (the longer edge capped at ``max_size``), then:

1. backbone, RPN and the box branch (``box_roi_pool -> box_head -> box_predictor ->
   postprocess_detections``) give detections in the view; their boxes are mapped back into the
   original image (resized back, then un-flipped);
2. all views' detections of an image are merged by class-wise NMS
   (``torchvision.ops.batched_nms`` at ``roi_heads.nms_thresh``), keeping the
   ``roi_heads.detections_per_img`` best by score;
3. the mask branch runs for the merged boxes in every view (each box mapped into the view, so
   flipped in a flipped view; ``roi_heads.mask_maps``); a flipped view's RoI grids are
   flipped back horizontally (flipping a box flips its RoI grid), and the branch's inference
   maps are averaged over the views: ``phi_N`` and ``phi_0`` for level-set branches, mask
   probabilities for binary ones;
4. masks come from the averaged maps as in the model (``H_0.1(mean phi_N)``), pasted into the
   image as the model pastes them (:func:`~levelset_rcnn.modeling.transform.paste_masks`,
   the model's ``transform.mask_paste``).

The output is the model's own dict per image: ``boxes, labels, scores, masks (K, 1, H, W)``,
plus ``tsdf`` / ``tsdf_init`` (the averaged level sets in RoI coordinates) with
``return_tsdf=True``. The backbone features of all views are kept until the mask branch has
run (memory grows with the number of views).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import batched_nms

from .mask_branches import masks_from_maps
from .transform import paste_masks

__all__ = ["TTAView", "TTAWrapper", "hflip_boxes"]


@dataclass(frozen=True)
class TTAView:
    """One augmented view: the shorter edge it is resized to and whether it is mirrored."""

    min_size: int
    flip: bool = False


def hflip_boxes(boxes: Tensor, width: int | float) -> Tensor:
    """Mirror ``(K, 4)`` ``(x0, y0, x1, y1)`` boxes in an image ``width`` pixels wide."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack((width - x1, y0, width - x0, y1), dim=1)


@dataclass
class _ViewRun:
    """What stage 1 leaves for stage 2 in one view."""

    view: TTAView
    features: dict[str, Tensor]
    image_sizes: list[tuple[int, int]]


class TTAWrapper(nn.Module):
    """Flip / multi-scale test-time augmentation around a ``LevelSetRCNN`` (or the Mask R-CNN
    baseline built by :func:`~levelset_rcnn.modeling.mask_rcnn`); eval mode only.

    Called like the model: a list of ``(3, H, W)`` images -> one result dict per image with the
    model's output keys (see the module docstring).

    Args:
        model: the detector; its ``transform``, ``backbone``, ``rpn`` and ``roi_heads``
            (``box_roi_pool``, ``box_head``, ``box_predictor``, ``postprocess_detections`` and
            ``mask_maps``) are used.
        min_sizes: shorter edges of the views (``None`` or empty: the model's test size,
            ``model.transform.min_size[-1]``).
        flip: add the mirrored view of every size.
        max_size: cap on the longer edge (``None``: the model's ``transform.max_size``).
    """

    def __init__(self, model: nn.Module, min_sizes: Sequence[int] | None = None, *,
                 flip: bool = True, max_size: int | None = None) -> None:
        super().__init__()
        for name in ("transform", "backbone", "rpn", "roi_heads"):
            if not hasattr(model, name):
                raise TypeError(f"TTAWrapper needs a torchvision-style detector with "
                                f"{name!r}; {type(model).__name__} has none")
        self.model = model
        self.training = model.training  # so that .train(was_training) round-trips
        sizes = tuple(min_sizes) if min_sizes else (int(model.transform.min_size[-1]),)
        bad = [s for s in sizes if not (isinstance(s, int) and s > 0)]
        if bad:
            raise ValueError(f"TTA min_sizes must be positive integers, got {list(sizes)}")
        self.max_size = int(model.transform.max_size if max_size is None else max_size)
        if self.max_size <= 0:
            raise ValueError(f"TTA max_size must be positive, got {self.max_size}")
        if getattr(model.transform, "fixed_size", None) is not None and len(set(sizes)) > 1:
            raise ValueError("the model's transform has a fixed_size: multi-scale TTA would "
                             "run the same size several times")
        flips = (False, True) if flip else (False,)
        self.views = [TTAView(int(s), f) for s in dict.fromkeys(sizes) for f in flips]

    @property
    def refines_initial_tsdf(self) -> bool:
        return bool(getattr(self.model, "refines_initial_tsdf", False))

    # ------------------------------------------------------------------------------------------
    def _transform(self, view: TTAView) -> nn.Module:
        t = copy.copy(self.model.transform)
        t.min_size = (view.min_size,)
        t.max_size = self.max_size
        return t

    def _to_original(self, boxes: Tensor, view: TTAView, view_size: tuple[int, int],
                     size: tuple[int, int]) -> Tensor:
        """``(K, 4)`` boxes of the view -> boxes of the original ``size = (H, W)`` image."""
        boxes = resize_boxes(boxes, list(view_size), list(size))
        return hflip_boxes(boxes, size[1]) if view.flip else boxes

    def _to_view(self, boxes: Tensor, view: TTAView, view_size: tuple[int, int],
                 size: tuple[int, int]) -> Tensor:
        """``(K, 4)`` boxes of the original image -> boxes of the view."""
        if view.flip:
            boxes = hflip_boxes(boxes, size[1])
        return resize_boxes(boxes, list(size), list(view_size))

    def _unflip_roi(self, grid: Tensor, view: TTAView) -> Tensor:
        """``(K, 1, M, M)`` RoI-grid maps of the view -> of the original (unflipped) boxes."""
        return grid.flip(-1) if view.flip else grid

    # ------------------------------------------------------------------------------------------
    def _detect(self, images: list[Tensor], view: TTAView,
                sizes: list[tuple[int, int]]) -> tuple[_ViewRun, list[dict[str, Tensor]]]:
        """Stage 1 in one view: features and detections in original-image coordinates."""
        m = self.model
        rh = m.roi_heads
        inputs = [img.flip(-1) for img in images] if view.flip else list(images)
        image_list: ImageList
        image_list, _ = self._transform(view)(inputs)
        features = m.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = m.rpn(image_list, features)
        features = m.head_features(features, image_list)
        vsizes = image_list.image_sizes
        box_features = rh.box_head(rh.box_roi_pool(features, proposals, vsizes))
        class_logits, box_regression = rh.box_predictor(box_features)
        boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression,
                                                          proposals, vsizes)
        dets = [{"boxes": self._to_original(b, view, vs, s), "scores": sc, "labels": lab}
                for b, sc, lab, vs, s in zip(boxes, scores, labels, vsizes, sizes, strict=True)]
        return _ViewRun(view, features, vsizes), dets

    def _merge(self, per_view: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Class-wise NMS over all views' detections of one image, best first."""
        rh = self.model.roi_heads
        boxes = torch.cat([d["boxes"] for d in per_view])
        scores = torch.cat([d["scores"] for d in per_view])
        labels = torch.cat([d["labels"] for d in per_view])
        keep = batched_nms(boxes, scores, labels, rh.nms_thresh)[: rh.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}

    def _masks_in_view(self, run: _ViewRun, dets: list[dict[str, Tensor]],
                       sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        """Stage 2 in one view: the mask branch's ``(R, 1, M, M)`` inference maps of all merged
        boxes (all images in order), on the original boxes' RoI grids."""
        boxes = [self._to_view(d["boxes"], run.view, vs, s)
                 for d, vs, s in zip(dets, run.image_sizes, sizes, strict=True)]
        maps = self.model.roi_heads.mask_maps(run.features, boxes, run.image_sizes,
                                              [d["labels"] for d in dets])
        return {k: self._unflip_roi(v, run.view) for k, v in maps.items()}

    @torch.no_grad()
    def forward(self, images: list[Tensor], *, return_tsdf: bool = False) -> list[dict[str, Any]]:
        """``images``: list of ``(3, H, W)`` tensors -> one result dict per image (with the
        averaged ``tsdf`` / ``tsdf_init`` when ``return_tsdf``)."""
        m = self.model
        if m.training:
            raise RuntimeError("TTAWrapper runs in eval mode only: call .eval() first")
        branch = m.roi_heads.mask_branch
        if return_tsdf and not getattr(branch, "predicts_level_sets", False):
            raise ValueError(f"return_tsdf needs a mask branch that predicts level sets; "
                             f"{type(branch).__name__} predicts binary masks")
        for i, img in enumerate(images):
            if img.dim() != 3:
                raise ValueError(f"image {i} must be (3, H, W), got {tuple(img.shape)}")
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        runs, per_view = [], []
        for view in self.views:
            run, dets = self._detect(images, view, sizes)
            runs.append(run)
            per_view.append(dets)
        merged = [self._merge([dets[i] for dets in per_view]) for i in range(len(images))]

        total: dict[str, Tensor] = {}
        for run in runs:
            for k, v in self._masks_in_view(run, merged, sizes).items():
                total[k] = total[k] + v if k in total else v
        mean = {k: v / len(runs) for k, v in total.items()}
        counts = [len(d["boxes"]) for d in merged]
        per_image = {k: v.split(counts) for k, v in mean.items()}
        probs = masks_from_maps(mean).split(counts)
        mode = getattr(m.transform, "mask_paste", "torchvision")
        results = []
        for i, (d, s, p) in enumerate(zip(merged, sizes, probs, strict=True)):
            r: dict[str, Any] = dict(d)
            maps = {k: v[i] for k, v in per_image.items()}
            r["masks"] = paste_masks({**maps, "masks": p}, d["boxes"], s, mode=mode)
            if return_tsdf:
                r.update(tsdf=maps["tsdf"], tsdf_init=maps["tsdf_init"])
            results.append(r)
        return results
