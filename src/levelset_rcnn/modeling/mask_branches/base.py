"""The interface between :class:`~levelset_rcnn.modeling.roi_heads.LevelSetRoIHeads` and a
mask branch, and the one conversion of level sets to mask probabilities.

A mask branch is the part of the model after the mask trunk: it owns its heads, its
evolution (Chan-Vese, DELSE, none), its targets and losses, and its inference output. The RoI
heads call it the same way whatever the variant:

* ``out = branch(x, labels)`` on trunk features ``x: (R, C_t, 14, 14)`` of the positive RoIs
  (training) or the detections (inference), with their classes ``labels: (R,)``;
* ``branch.losses(out, targets)`` in training, ``targets`` a :class:`MaskTargets`;
* ``branch.inference(out)`` at test time: float32 maps ``(R, 1, M, M)`` in RoI coordinates
  that may be averaged over views (test-time augmentation): the final level set ``tsdf``
  (and the initial ``tsdf_init``) of level-set branches, ``mask_probs`` of binary ones;
  :func:`masks_from_maps` makes the mask probabilities of either.

Class attributes say what a branch is: ``refines_initial_tsdf`` (its masks refine an initial
TSDF ``phi_0``, which the engine evaluates beside them), ``predicts_level_sets`` (its
inference maps include ``tsdf``) and ``reads_image`` (``forward`` also takes the pixels
inside each box as ``image``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ...levelset import heaviside
from ..losses import LOSS_EPS

__all__ = ["MaskBranch", "MaskTargets", "mask_probabilities", "masks_from_maps"]


@dataclass
class MaskTargets:
    """The matched ground truth of a batch's positive RoIs (per image lists, in order).

    Attributes:
        gt_masks: ``(G_i, H, W)`` masks of each image.
        gt_labels: ``(G_i,)`` classes of each image's objects.
        proposals: ``(R_i, 4)`` positive RoIs of each image.
        matched_idxs: ``(R_i,)`` index of the ground truth matched to each RoI.
        labels: ``(R,)`` class of every positive RoI (all images concatenated).
    """

    gt_masks: list[Tensor]
    gt_labels: list[Tensor]
    proposals: list[Tensor]
    matched_idxs: list[Tensor]
    labels: Tensor


def mask_probabilities(phi: Tensor) -> Tensor:
    """``H_0.1(phi)`` in float32: the mask probabilities of a level set (probability 0.5 is the
    zero level set; the width is the loss's, :data:`~levelset_rcnn.modeling.losses.LOSS_EPS`).
    """
    return heaviside(phi.float(), LOSS_EPS)


def masks_from_maps(maps: dict[str, Tensor]) -> Tensor:
    """``(R, 1, M, M)`` mask probabilities from a branch's inference maps: ``H_0.1(tsdf)`` for
    level-set branches, ``mask_probs`` for binary ones."""
    if "tsdf" in maps:
        return mask_probabilities(maps["tsdf"])
    return maps["mask_probs"]


class MaskBranch(nn.Module):
    """Base class of the mask branches (see the module docstring for the interface)."""

    #: The masks refine an initial TSDF ``phi_0`` (reported as ``tsdf_init``).
    refines_initial_tsdf: bool = False
    #: The inference maps hold level sets (``tsdf``), not only mask probabilities.
    predicts_level_sets: bool = True
    #: ``forward`` also takes ``image``: the pixels inside each box at the branch's
    #: ``resolution`` (the RoI heads RoIAlign them from ``features["image"]``).
    reads_image: bool = False

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def losses(self, out: dict[str, Tensor],
               targets: MaskTargets) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError
