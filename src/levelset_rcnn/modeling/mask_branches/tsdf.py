"""``"tsdf"``: Mask R-CNN trained on a TSDF target (no Chan-Vese), and the initial-TSDF part
that every level-set branch shares.

``phi_0 = up_M(tsdf_predictor(x)[label])``: the 28x28 TSDF of the RoI's class (or the single
class-agnostic one), upsampled bilinearly to the ``M x M`` (112x112) grid of the targets.
Loss ``loss_tsdf_init = w_0 * l_TSDF(phi_0)`` (:func:`~levelset_rcnn.modeling.losses.
tsdf_loss`); masks ``H_0.1(phi_0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads import TSDFPredictor
from ..losses import DEFAULT_TRUNCATION, levelset_targets, tsdf_loss
from .base import MaskBranch, MaskTargets

__all__ = ["TSDFBranch", "initial_tsdf"]


def initial_tsdf(predictor: nn.Module, x: Tensor, labels: Tensor, size: int) -> Tensor:
    """``phi_0: (R, 1, size, size)`` from trunk features ``x`` and the RoIs' ``labels``."""
    coarse = predictor(x)
    if coarse.shape[1] > 1:
        coarse = coarse[torch.arange(coarse.shape[0], device=coarse.device), labels]
    else:
        coarse = coarse[:, 0]
    return F.interpolate(coarse[:, None], size=(size, size), mode="bilinear",
                         align_corners=False)


class TSDFBranch(MaskBranch):
    """Mask R-CNN on a TSDF target.

    Args:
        tsdf_predictor: ``(R, C_t, 14, 14) -> (R, K, 28, 28)`` TSDF in [-1, 1].
        resolution: side ``M`` of ``phi_0`` and of the targets (112).
        truncation: TSDF truncation in pixels of the ``M`` grid.
        loss_weights: ``(w_0, w_N)`` for the ``phi_0`` and ``phi_N`` losses (here only
            ``w_0`` is used; paper: (1, 5) Cityscapes, (0.2, 1) COCO).
    """

    def __init__(self, tsdf_predictor: nn.Module, *, resolution: int = 112,
                 truncation: float = DEFAULT_TRUNCATION,
                 loss_weights: Sequence[float] = (1.0, 5.0)) -> None:
        super().__init__()
        if len(loss_weights) != 2:
            raise ValueError(f"loss_weights must be (w_0, w_N), got {tuple(loss_weights)}")
        self.tsdf_predictor = tsdf_predictor
        self.resolution = int(resolution)
        self.truncation = float(truncation)
        self.loss_weights = (float(loss_weights[0]), float(loss_weights[1]))

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,
              class_agnostic: bool = False, resolution: int = 112,
              truncation: float = DEFAULT_TRUNCATION,
              loss_weights: Sequence[float] = (1.0, 5.0)) -> TSDFBranch:
        """The branch with its default head (:class:`~levelset_rcnn.modeling.heads.
        TSDFPredictor`, ``predictor_channels`` wide)."""
        predictor = TSDFPredictor(in_channels, num_classes, hidden_channels=predictor_channels,
                                  class_agnostic=class_agnostic)
        return cls(predictor, resolution=resolution, truncation=truncation,
                   loss_weights=loss_weights)

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``{"phi0": (R, 1, M, M)}``."""
        return {"phi0": initial_tsdf(self.tsdf_predictor, x, labels, self.resolution)}

    def targets(self, t: MaskTargets) -> tuple[Tensor, Tensor]:
        """``(mask, tsdf)`` targets ``(R, M, M)`` of the positive RoIs."""
        return levelset_targets(t.gt_masks, t.proposals, t.matched_idxs, size=self.resolution,
                                truncation=self.truncation)

    def losses(self, out: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        return self.tsdf_losses(out, *self.targets(targets))

    def tsdf_losses(self, out: dict[str, Tensor], mask_t: Tensor,
                    tsdf_t: Tensor) -> dict[str, Tensor]:
        """The losses against the ``(R, M, M)`` mask and TSDF targets: ``loss_tsdf_init``."""
        return {"loss_tsdf_init": self.loss_weights[0] * tsdf_loss(out["phi0"][:, 0], tsdf_t,
                                                                    mask_t)}

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        phi0 = out["phi0"].float()
        return {"tsdf": phi0, "tsdf_init": phi0}

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, truncation={self.truncation}, "
                f"loss_weights={self.loss_weights}")
