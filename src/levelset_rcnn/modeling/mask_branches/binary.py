"""``"binary"``: Mask R-CNN's own mask branch (binary logits at 28x28, or at 112x112 for the
paper's high-resolution ablation), so that baselines run through the same RoI heads.

Loss ``loss_mask``: torchvision's ``maskrcnn_loss`` (per-pixel BCE of the RoI's class against
the ground truth projected on the ``S x S`` grid); masks ``sigmoid(logits[label])``, exactly
as torchvision's ``maskrcnn_inference``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_loss

from ..heads import HighResMaskPredictor
from .base import MaskBranch, MaskTargets

__all__ = ["BinaryMaskBranch", "binary_mask_predictor"]


def binary_mask_predictor(in_channels: int, num_classes: int, *, hidden_channels: int = 256,
                          resolution: int = 28) -> nn.Module:
    """Mask R-CNN's predictor (``resolution=28``) or the 112x112 one
    (:class:`~levelset_rcnn.modeling.heads.HighResMaskPredictor`)."""
    if resolution == 28:
        return MaskRCNNPredictor(in_channels, hidden_channels, num_classes)
    if resolution == 112:
        return HighResMaskPredictor(in_channels, num_classes, hidden_channels=hidden_channels)
    raise ValueError(f"mask_resolution must be 28 or 112, got {resolution}")


class BinaryMaskBranch(MaskBranch):
    """Mask R-CNN's mask branch.

    Args:
        mask_predictor: ``(R, C_t, 14, 14) -> (R, K, S, S)`` logits (``K = num_classes``).
    """

    predicts_level_sets = False

    def __init__(self, mask_predictor: nn.Module) -> None:
        super().__init__()
        self.mask_predictor = mask_predictor

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,
              mask_resolution: int = 28) -> BinaryMaskBranch:
        return cls(binary_mask_predictor(in_channels, num_classes,
                                         hidden_channels=predictor_channels,
                                         resolution=mask_resolution))

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``mask_logits: (R, K, S, S)`` and the RoIs' ``labels``."""
        return {"mask_logits": self.mask_predictor(x), "labels": labels}

    def losses(self, out: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        return {"loss_mask": maskrcnn_loss(out["mask_logits"], targets.proposals,
                                           targets.gt_masks, targets.gt_labels,
                                           targets.matched_idxs)}

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, labels = out["mask_logits"], out["labels"]
        probs = logits.sigmoid()[torch.arange(labels.shape[0], device=labels.device), labels]
        return {"mask_probs": probs[:, None].float()}
