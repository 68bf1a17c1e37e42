"""``LevelSetRoIHeads``: torchvision's ``RoIHeads`` with a mask branch.

torchvision's ``RoIHeads.forward`` calls its mask functions by name, so ``forward`` is
overridden; sampling (``select_training_samples``), the box branch, ``fastrcnn_loss`` and
``postprocess_detections`` are torchvision's own. The mask part, for the positive RoIs
(training) or the detections (inference), is one code path for every variant::

    x = mask_head(mask_roi_pool(features, boxes))       # Mask R-CNN's trunk, (R, C_t, 14, 14)
    out = mask_branch(x, labels)                        # the variant's heads and evolution
    #   (a branch with ``reads_image`` also gets image=the RoI's pixels at M x M, RoIAligned
    #    from features["image"], the normalised input batch)
    mask_branch.losses(out, targets)                    # training
    maps = mask_branch.inference(out)                   # inference: masks, tsdf, tsdf_init

The branch (:mod:`.mask_branches`) decides everything else; ``mask_branch=None`` gives a box
detector, as torchvision's ``RoIHeads`` without mask parts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import roi_align

from .mask_branches import MaskBranch, MaskTargets, masks_from_maps

__all__ = ["LevelSetRoIHeads"]

#: Sub-modules that sat on the RoI heads before they moved into the mask branch (checkpoints
#: written then still load).
_LEGACY_PARTS = ("tsdf_predictor", "hyper_head", "feature_head", "velocity_head",
                 "modulation_head", "mask_predictor")


class LevelSetRoIHeads(RoIHeads):
    """RoI heads of LevelSet R-CNN (box branch from torchvision, any mask branch).

    The first eleven arguments are torchvision's ``RoIHeads`` ones (box branch).

    Args:
        mask_roi_pool: RoIAlign for the mask branch (14x14 output).
        mask_head: the mask trunk ``(R, C_in, 14, 14) -> (R, C_t, 14, 14)``.
        mask_branch: a :class:`~.mask_branches.MaskBranch` (``None``: no masks).
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        *,
        mask_roi_pool: nn.Module | None,
        mask_head: nn.Module | None,
        mask_branch: MaskBranch | None,
    ) -> None:
        super().__init__(
            box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
            batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh,
            nms_thresh, detections_per_img, mask_roi_pool=mask_roi_pool, mask_head=mask_head,
        )
        if mask_branch is not None and (mask_roi_pool is None or mask_head is None):
            raise ValueError("a mask branch needs mask_roi_pool and mask_head")
        self.mask_branch = mask_branch
        self._register_load_state_dict_pre_hook(self._rename_legacy_keys)

    def has_mask(self) -> bool:
        return self.mask_branch is not None

    def _rename_legacy_keys(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix):].split(".", 1)[0]
            if name in _LEGACY_PARTS and hasattr(self.mask_branch, name):
                state_dict[f"{prefix}mask_branch.{key[len(prefix):]}"] = state_dict.pop(key)

    def branch_outputs(self, features: dict[str, Tensor], boxes: list[Tensor],
                       image_shapes: list[tuple[int, int]], labels: Tensor,
                       **kwargs: Any) -> dict[str, Tensor]:
        """The mask branch's raw outputs for ``boxes`` (per image) of classes ``labels``
        (all images concatenated); ``kwargs`` go to the branch (e.g. ``return_all``).

        A branch that ``reads_image`` also gets ``image``: the pixels inside each box at its
        ``M x M`` resolution (``roi_align`` of ``features["image"]``, pixel-centre sampling,
        adaptive samples per bin).
        """
        assert self.mask_branch is not None
        x = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        if self.mask_branch.reads_image:
            if "image" not in features:
                raise KeyError(
                    f"{type(self.mask_branch).__name__} reads the image inside each box: the "
                    "features need the normalised input batch as 'image' (LevelSetRCNN."
                    "head_features adds it)")
            size = int(self.mask_branch.resolution)
            kwargs["image"] = roi_align(features["image"], boxes, output_size=size,
                                        spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return self.mask_branch(x, labels, **kwargs)

    def mask_maps(self, features: dict[str, Tensor], boxes: list[Tensor],
                  image_shapes: list[tuple[int, int]], labels: list[Tensor]
                  ) -> dict[str, Tensor]:
        """The branch's inference maps ``(R, 1, M, M)`` (all images in order) for ``boxes``
        with classes ``labels`` (see :meth:`.mask_branches.MaskBranch.inference`)."""
        assert self.mask_branch is not None
        out = self.branch_outputs(features, boxes, image_shapes, torch.cat(labels))
        return self.mask_branch.inference(out)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Same contract as torchvision's ``RoIHeads.forward``.

        Inference results hold ``boxes, labels, scores`` and ``masks: (K, 1, M, M)``
        probabilities in RoI coordinates (pasted into the image by the transform), plus the
        branch's inference maps (``tsdf`` / ``tsdf_init`` or ``mask_probs``; the model keeps
        the level sets on request and drops the rest).
        """
        if targets is not None:
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be float, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")

        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        else:
            boxes, scores, det_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [{"boxes": b, "labels": lab, "scores": s}
                      for b, lab, s in zip(boxes, det_labels, scores, strict=True)]
        if self.mask_branch is None:
            return result, losses

        if self.training:
            assert targets is not None
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_targets = MaskTargets(
                gt_masks=[t["masks"] for t in targets],
                gt_labels=[t["labels"] for t in targets],
                proposals=[p[i] for p, i in zip(proposals, positive, strict=True)],
                matched_idxs=[m[i] for m, i in zip(matched_idxs, positive, strict=True)],
                labels=torch.cat([lab[i] for lab, i in zip(labels, positive, strict=True)]),
            )
            out = self.branch_outputs(features, mask_targets.proposals, image_shapes,
                                      mask_targets.labels)
            losses.update(self.mask_branch.losses(out, mask_targets))
            return result, losses

        maps = self.mask_maps(features, boxes, image_shapes, det_labels)
        counts = [b.shape[0] for b in boxes]  # sizes, not ints, under tracing (export)
        per_image = {k: v.split(counts) for k, v in maps.items()}
        for i, (r, m) in enumerate(zip(result, masks_from_maps(maps).split(counts),
                                       strict=True)):
            r.update({k: v[i] for k, v in per_image.items()})
            r["masks"] = m
        return result, losses
