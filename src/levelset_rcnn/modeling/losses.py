"""TSDF targets and the level-set loss (paper, section 4.2), and the Chan-Vese energy loss of
the "LS loss" baseline (Table 3).

``l_TSDF(phi, phi_GT, M_GT) = |phi - phi_GT|_1 + BCE(H_0.1(phi), M_GT)``, averaged over the
pixels of the positive RoIs, applied to ``phi_0`` and ``phi_N`` with separate weights.

:func:`chan_vese_energy_loss` is the level-set loss of Hu et al. ("Deep level sets for salient
object detection", CVPR 2017; the paper's reference [29]) on Mask R-CNN's mask output: the
sigmoid probabilities shifted by -0.5 are the level set ``phi``, and the Chan-Vese energy of
``H_eps(phi)`` with the ground-truth mask as the image ``u_0`` is added to Mask R-CNN's loss::

    c1 = sum u0 H / sum H,   c2 = sum u0 (1 - H) / sum (1 - H)
    E  = (lambda1 sum |u0 - c1|^2 H + lambda2 sum |u0 - c2|^2 (1 - H) + mu sum |grad H|) / P

per RoI (``P`` pixels; the length term is the total variation of ``H``, ``int delta(phi)
|grad phi|``, with Sobel gradients), averaged over the RoIs. With the ground truth as ``u_0``
the region terms vanish exactly when ``H`` is the mask, so the energy is a supervised,
region-based loss; it changes training only (inference is Mask R-CNN's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from ..levelset import heaviside, masks_to_tsdf
from ..levelset.chan_vese import REGION_KAPPA
from ..levelset.functional import sobel

__all__ = [
    "LSLOSS_EPS",
    "LSLOSS_MU",
    "LOSS_EPS",
    "chan_vese_energy_loss",
    "levelset_targets",
    "project_masks",
    "tsdf_loss",
]

#: Heaviside width of the BCE term (paper: 0.1); also used for the inference masks, so that
#: probability 0.5 is exactly the zero level set.
LOSS_EPS = 0.1
#: Heaviside width of the LS-loss baseline. Its level set ``sigmoid - 0.5`` lies in
#: (-0.5, 0.5), so the paper's 0.1 maps a confident pixel (|phi| -> 0.5) to H = 0.94 / 0.06.
LSLOSS_EPS = 0.1
#: Weight of the length term (per pixel of the 28x28 mask): small, so that the total variation
#: only removes specks (a bump of perimeter p pixels and area A goes when mu p > A).
LSLOSS_MU = 0.01


def project_masks(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
    """Crop and resize the matched ground-truth masks to the RoIs.

    Args:
        gt_masks: ``(G, H, W)`` masks of one image (any dtype, nonzero / > 0.5 inside).
        boxes: ``(R, 4)`` RoIs ``(x0, y0, x1, y1)`` in the same (resized) image coordinates.
        matched_idxs: ``(R,)`` index of the ground truth matched to each RoI.
        size: output side ``M``.

    Returns:
        ``(R, M, M)`` float in [0, 1] (RoIAlign, bilinear, one sample per bin).

    Unlike torchvision's ``project_masks_on_boxes`` this uses ``aligned=True``: target pixel
    ``i`` of a box ``[x0, x1]`` samples the image at ``x0 + (i + 0.5) (x1 - x0) / M`` (pixel
    centres at half-integers), the same geometry as ``paste_masks_in_image`` and
    :func:`~levelset_rcnn.levelset.tsdf_to_polygons`, so that the 112x112 targets are not
    shifted by half an image pixel.
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0, 1, aligned=True)[:, 0]


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


def chan_vese_energy_loss(
    mask_logits: Tensor, image: Tensor, *, eps: float = LSLOSS_EPS, lambda1: float = 1.0,
    lambda2: float = 1.0, mu: float = LSLOSS_MU,
) -> Tensor:
    """The Chan-Vese energy of Mask R-CNN's output as a loss (module docstring).

    Args:
        mask_logits: ``(R, S, S)`` mask logits of each RoI's class.
        image: ``(R, S, S)`` the "image" ``u_0`` of the energy: the ground-truth masks
            projected on the RoIs, in [0, 1].
        eps: Heaviside width; lambda1, lambda2, mu: the energy's weights.

    Returns:
        A scalar (mean over RoIs of the per-pixel energy); ``mask_logits.sum() * 0`` (still in
        the graph) when there are no RoIs. Region means divide by ``sum H + kappa``
        (:data:`~levelset_rcnn.levelset.chan_vese.REGION_KAPPA`), so an empty region is
        finite.
    """
    if mask_logits.shape != image.shape or mask_logits.dim() != 3:
        raise ValueError(f"mask_logits and image must both be (R, S, S), got "
                         f"{tuple(mask_logits.shape)} and {tuple(image.shape)}")
    if mask_logits.numel() == 0:
        return mask_logits.sum() * 0.0
    with torch.autocast(device_type=mask_logits.device.type, enabled=False):
        phi = torch.sigmoid(mask_logits.float()) - 0.5
        h = heaviside(phi, eps)
        u0 = image.float()
        dims = (1, 2)
        c1 = (u0 * h).sum(dims) / (h.sum(dims) + REGION_KAPPA)
        c2 = (u0 * (1.0 - h)).sum(dims) / ((1.0 - h).sum(dims) + REGION_KAPPA)
        region = (lambda1 * (u0 - c1[:, None, None]).square() * h
                  + lambda2 * (u0 - c2[:, None, None]).square() * (1.0 - h)).sum(dims)
        energy = region
        if mu:
            gx, gy = sobel(h[:, None])
            # sqrt(.. + tiny): finite gradient where H is flat (a constant offset otherwise).
            energy = energy + mu * torch.sqrt(gx * gx + gy * gy + 1e-12).sum((1, 2, 3))
        return (energy / float(h.shape[1] * h.shape[2])).mean()
