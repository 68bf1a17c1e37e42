"""``LevelSetRCNN``: torchvision's ``MaskRCNN`` with :class:`LevelSetRoIHeads` and a mask
branch (:mod:`.mask_branches`).

Same inputs and output dict as Mask R-CNN (``boxes, labels, scores, masks``; masks are
``(K, 1, H, W)`` probabilities pasted by torchvision's transform), plus, with
``model(images, return_tsdf=True)``, ``tsdf`` and ``tsdf_init`` (``(K, 1, 112, 112)`` in RoI
coordinates). Sub-pixel contours are traced from those where they are used
(:func:`levelset_rcnn.levelset.tsdf_to_polygons`), after any score filtering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads
from torchvision.ops import MultiScaleRoIAlign

from .mask_branches import MaskBranch
from .roi_heads import LevelSetRoIHeads
from .transform import LevelSetTransform

__all__ = ["LevelSetRCNN", "validate_inputs"]


def validate_inputs(images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]) -> None:
    """Raise a ``ValueError`` / ``TypeError`` that names the problem for malformed targets.

    Checks: one target per image; ``boxes (N, 4)`` float, ``labels (N,)`` int64 and
    ``masks (N, H, W)`` with the same ``N`` and the image's ``H, W``; boxes of positive area.
    """
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets; "
                         "pass exactly one target dict per image")
    for i, (img, t) in enumerate(zip(images, targets, strict=True)):
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"target {i} has no {key!r} (keys: {sorted(t)})")
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: boxes must be (N, 4), got {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(f"target {i}: boxes must be float, got {boxes.dtype}")
        if labels.dtype != torch.int64:
            raise TypeError(f"target {i}: labels must be int64, got {labels.dtype}")
        n = boxes.shape[0]
        if labels.shape != (n,) or masks.dim() != 3 or masks.shape[0] != n:
            raise ValueError(
                f"target {i}: mismatched lengths: boxes {tuple(boxes.shape)}, labels "
                f"{tuple(labels.shape)}, masks {tuple(masks.shape)} (need N, N, N x H x W)"
            )
        if tuple(masks.shape[-2:]) != tuple(img.shape[-2:]):
            raise ValueError(
                f"target {i}: masks are {tuple(masks.shape[-2:])} but the image is "
                f"{tuple(img.shape[-2:])}; masks must be full-image (N, H, W)"
            )
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bool(bad.any()):
            j = int(torch.where(bad)[0][0])
            raise ValueError(f"target {i}: box {j} {boxes[j].tolist()} has zero or negative "
                             "area (need x0 < x1 and y0 < y1)")


class LevelSetRCNN(MaskRCNN):
    """LevelSet R-CNN, one of its ablations or the Mask R-CNN baseline: a torchvision detector
    whose mask part is given as parts, as ``MaskRCNN`` takes ``mask_roi_pool``, ``mask_head``
    and ``mask_predictor``.

    Args:
        backbone: a backbone with ``out_channels`` (e.g. ResNet + FPN).
        num_classes: classes including background (``None`` if ``box_predictor`` is given).
        mask_branch: the :class:`~.mask_branches.MaskBranch` on the trunk's output (e.g.
            :class:`~.mask_branches.LevelSetBranch`; ``None``: a box detector).
        mask_roi_pool: RoIAlign of the mask branch (default: 14x14 on FPN levels 0-3).
        mask_head: the mask trunk (default: Mask R-CNN's, four 3x3 convs of 256). It must keep
            the 14x14 size and output the channels the branch was built for.
        mask_paste: how masks are pasted into the image (:mod:`.transform`): ``"exact"``
            (float box geometry; level sets pasted before ``H``) or ``"torchvision"``
            (``paste_masks_in_image``); ``None``: exact for branches with level sets,
            torchvision's for binary ones.
        **kwargs: torchvision ``FasterRCNN`` arguments (``min_size``, ``max_size``, RPN and box
            settings and parts).

    :func:`~.builders.levelset_rcnn` builds every part from a recipe's settings.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int | None = None,
        *,
        mask_branch: MaskBranch | None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_paste: str | None = None,
        **kwargs: Any,
    ) -> None:
        # MaskRCNN.__init__ would build its own 28x28 predictor; build the box branch only.
        FasterRCNN.__init__(self, backbone, num_classes, **kwargs)
        if mask_paste is None:
            level = getattr(mask_branch, "predicts_level_sets", False)
            mask_paste = "exact" if level else "torchvision"
        self.transform = LevelSetTransform.like(self.transform, mask_paste=mask_paste)
        if mask_roi_pool is None:
            mask_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14,
                                               sampling_ratio=2)
        if mask_head is None:
            mask_head = MaskRCNNHeads(backbone.out_channels, [256, 256, 256, 256], 1)
        old = self.roi_heads
        self.roi_heads = LevelSetRoIHeads(
            old.box_roi_pool, old.box_head, old.box_predictor,
            old.proposal_matcher.high_threshold, old.proposal_matcher.low_threshold,
            old.fg_bg_sampler.batch_size_per_image, old.fg_bg_sampler.positive_fraction,
            old.box_coder.weights, old.score_thresh, old.nms_thresh, old.detections_per_img,
            mask_roi_pool=mask_roi_pool, mask_head=mask_head, mask_branch=mask_branch,
        )

    @property
    def mask_branch(self) -> MaskBranch | None:
        return self.roi_heads.mask_branch

    @property
    def refines_initial_tsdf(self) -> bool:
        """Whether the masks refine an initial TSDF ``phi_0`` (the branch says so): the engine
        then evaluates ``H_0.1(phi_0)`` beside the final masks."""
        return bool(getattr(self.mask_branch, "refines_initial_tsdf", False))

    def forward(  # type: ignore[override]
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        return_tsdf: bool = False,
    ) -> dict[str, Tensor] | list[dict[str, Any]]:
        """Training: ``images`` and ``targets`` -> loss dict. Inference: ``images`` -> one
        result dict per image with torchvision's Mask R-CNN keys, plus ``tsdf`` (``phi_N``)
        and ``tsdf_init`` (``phi_0``), ``(K, 1, M, M)`` in RoI coordinates, when
        ``return_tsdf``."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        if targets is not None:
            validate_inputs(images, targets)
        if return_tsdf and not getattr(self.mask_branch, "predicts_level_sets", False):
            raise ValueError(f"return_tsdf needs a mask branch that predicts level sets; "
                             f"{type(self.mask_branch).__name__} predicts binary masks")
        # torchvision's GeneralizedRCNN.forward, with the RoI heads reading head_features
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(
            self.head_features(features, image_list), proposals, image_list.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        out = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        keep = _OUTPUT_KEYS + (("tsdf", "tsdf_init") if return_tsdf else ())
        return [{k: r[k] for k in keep if k in r} for r in out]

    def head_features(self, features: dict[str, Tensor], images: ImageList
                      ) -> dict[str, Tensor]:
        """The maps the RoI heads read: the backbone's ``features``, plus the normalised,
        batched input as ``"image"`` when the mask branch reads the image inside each box
        (``reads_image``; e.g. ``cv_image_channels``). Code that calls
        ``roi_heads.mask_maps`` itself (test-time augmentation, figures) passes these."""
        if self.mask_branch is not None and self.mask_branch.reads_image:
            return {**features, "image": images.tensors}
        return features


#: The output dict of torchvision's Mask R-CNN.
_OUTPUT_KEYS = ("boxes", "labels", "scores", "masks")
