"""TSDF targets and the level-set loss (paper, section 4.2), shared by the level-set mask
branches.

``l_TSDF(phi, phi_GT, M_GT) = |phi - phi_GT|_1 + BCE(H_0.1(phi), M_GT)``, averaged over the
pixels of the positive RoIs, applied to ``phi_0`` and ``phi_N`` with separate weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from ..levelset import heaviside, masks_to_tsdf

__all__ = [
    "DEFAULT_TRUNCATION",
    "LOSS_EPS",
    "heaviside_nll",
    "levelset_targets",
    "project_masks",
    "tsdf_loss",
]

#: TSDF truncation in pixels of the 112x112 RoI grid. The 28x28 initial TSDF is upsampled 4x,
#: so the band must span several coarse pixels (12 px = 3 coarse pixels either side) for the
#: bilinear upsampling of a ramp to be exact; with the Heaviside width 0.1 the loss and the
#: Chan-Vese Dirac then act within ~1.2 px of the contour.
DEFAULT_TRUNCATION = 12.0
#: Heaviside width of the BCE term (paper: 0.1); also used for the inference masks, so that
#: probability 0.5 is exactly the zero level set.
LOSS_EPS = 0.1


def project_masks(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
    """Crop and resize the matched ground-truth masks to the RoIs.

    Args:
        gt_masks: ``(G, H, W)`` masks of one image (any dtype, nonzero / > 0.5 inside).
        boxes: ``(R, 4)`` RoIs ``(x0, y0, x1, y1)`` in the same (resized) image coordinates.
        matched_idxs: ``(R,)`` index of the ground truth matched to each RoI.
        size: output side ``M``.

    Returns:
        ``(R, M, M)`` float in [0, 1] (RoIAlign, bilinear, with adaptive sampling as
        torchvision's own projection: ``ceil(box side / M)`` samples per bin and axis, so a
        bin is the mean of the pixels it covers and thin parts of large boxes do not alias).

    Unlike torchvision's ``project_masks_on_boxes`` this uses ``aligned=True``: target pixel
    ``i`` of a box ``[x0, x1]`` samples the image at ``x0 + (i + 0.5) (x1 - x0) / M`` (pixel
    centres at half-integers), the same geometry as ``paste_masks_in_image`` and
    :func:`~levelset_rcnn.levelset.tsdf_to_polygons`, so that the 112x112 targets are not
    shifted by half an image pixel.
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0, -1,
                     aligned=True)[:, 0]


def levelset_targets(
    gt_masks: list[Tensor], proposals: list[Tensor], matched_idxs: list[Tensor], *,
    size: int, truncation: float,
) -> tuple[Tensor, Tensor]:
    """Mask and TSDF targets for the positive RoIs of a batch.

    Returns:
        ``masks: (R, M, M)`` float 0/1 (RoIAlign thresholded at 0.5) and ``tsdf: (R, M, M)``
        float in [-1, 1] (:func:`masks_to_tsdf` with ``truncation`` pixels of the ``M`` grid),
        on the proposals' device.
    """
    projected = [
        project_masks(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched_idxs,
                                                          strict=True)
    ]
    masks = torch.cat(projected) >= 0.5
    return masks.float(), masks_to_tsdf(masks, truncation)


def heaviside_nll(phi: Tensor, mask_target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-pixel negative log-likelihoods of the soft mask ``H_eps(phi)``: ``-m log H`` and
    ``-(1 - m) log(1 - H)`` (``1 - H`` taken as ``H(-phi)`` for accuracy; ``H`` clamped at
    1e-6), float32, for the BCE terms of :func:`tsdf_loss` and DELSE's class-balanced loss."""
    phi = phi.float()
    m = mask_target.float()
    nll_in = -(m * heaviside(phi, eps).clamp_min(1e-6).log())
    nll_out = -((1.0 - m) * heaviside(-phi, eps).clamp_min(1e-6).log())
    return nll_in, nll_out


def tsdf_loss(phi: Tensor, tsdf_target: Tensor, mask_target: Tensor, *,
              eps: float = LOSS_EPS) -> Tensor:
    """``mean |phi - tsdf| + BCE(H_eps(phi), mask)`` over all pixels.

    Args:
        phi: ``(R, M, M)`` predicted level sets.
        tsdf_target, mask_target: ``(R, M, M)`` float targets.

    Returns:
        A scalar; ``phi.sum() * 0`` (still in the graph) when there are no RoIs.
    """
    if phi.numel() == 0:
        return phi.sum() * 0.0
    with torch.autocast(device_type=phi.device.type, enabled=False):
        phi = phi.float()
        l1 = F.l1_loss(phi, tsdf_target.float())
        nll_in, nll_out = heaviside_nll(phi, mask_target, eps)
        bce = (nll_in + nll_out).mean()
    return l1 + bce
