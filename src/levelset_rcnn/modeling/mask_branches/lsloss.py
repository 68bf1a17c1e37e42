"""``"lsloss"``: Mask R-CNN plus the Chan-Vese energy of its output as a loss (Table 3's
"LS loss").

The loss is the level-set loss of Hu et al. ("Deep level sets for salient
object detection", CVPR 2017; the paper's reference [29]) on Mask R-CNN's mask output: the
sigmoid probabilities shifted by -0.5 are the level set ``phi``, and the Chan-Vese energy of
``H_eps(phi)`` with the ground-truth mask as the image ``u_0`` is added to Mask R-CNN's loss::

    c1 = sum u0 H / sum H,   c2 = sum u0 (1 - H) / sum (1 - H)
    E  = (lambda1 sum |u0 - c1|^2 H + lambda2 sum |u0 - c2|^2 (1 - H) + mu sum |grad H|) / P

per RoI (``P`` pixels; the length term is the total variation of ``H``, ``int delta(phi)
|grad phi|``, with Sobel gradients), averaged over the RoIs. With the ground truth as ``u_0``
the region terms vanish exactly when ``H`` is the mask, so the energy is a supervised,
region-based loss; it changes training only (inference is Mask R-CNN's).

Losses ``loss_mask`` (Mask R-CNN's) and ``loss_levelset`` (the energy, weight
``lsloss_weight``), the ground truth projected on the RoIs as ``u_0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...levelset import heaviside
from ...levelset.chan_vese import REGION_KAPPA
from ...levelset.functional import sobel
from ..losses import project_masks
from .base import MaskTargets
from .binary import BinaryMaskBranch, binary_mask_predictor

__all__ = ["LSLOSS_EPS", "LSLOSS_MU", "LSLossBranch", "chan_vese_energy_loss"]

#: Heaviside width of the LS-loss baseline. Its level set ``sigmoid - 0.5`` lies in
#: (-0.5, 0.5), so the paper's 0.1 maps a confident pixel (|phi| -> 0.5) to H = 0.94 / 0.06.
LSLOSS_EPS = 0.1
#: Weight of the length term (per pixel of the 28x28 mask): small, so that the total variation
#: only removes specks (a bump of perimeter p pixels and area A goes when mu p > A).
LSLOSS_MU = 0.01



class LSLossBranch(BinaryMaskBranch):
    """Mask R-CNN's branch with the Chan-Vese energy loss added.

    Args:
        mask_predictor: as :class:`~.binary.BinaryMaskBranch`.
        weight, eps, mu: the energy's weight, Heaviside width and length weight.
    """

    def __init__(self, mask_predictor: nn.Module, *, weight: float = 1.0,
                 eps: float = LSLOSS_EPS, mu: float = LSLOSS_MU) -> None:
        super().__init__(mask_predictor)
        if not eps > 0:
            raise ValueError(f"lsloss_eps must be positive, got {eps}")
        for name, value in (("lsloss_weight", weight), ("lsloss_mu", mu)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        self.weight = float(weight)
        self.eps = float(eps)
        self.mu = float(mu)

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,  # type: ignore[override]
              mask_resolution: int = 28, lsloss_weight: float = 1.0,
              lsloss_eps: float = LSLOSS_EPS, lsloss_mu: float = LSLOSS_MU) -> LSLossBranch:
        return cls(binary_mask_predictor(in_channels, num_classes,
                                         hidden_channels=predictor_channels,
                                         resolution=mask_resolution),
                   weight=lsloss_weight, eps=lsloss_eps, mu=lsloss_mu)

    def losses(self, out: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        """``loss_mask`` and ``loss_levelset``."""
        losses = super().losses(out, targets)
        mask_logits, roi_labels = out["mask_logits"], targets.labels
        S = mask_logits.shape[-1]
        logits = mask_logits[torch.arange(roi_labels.shape[0], device=roi_labels.device),
                             roi_labels]
        image = torch.cat([project_masks(m, p, i, S) for m, p, i in
                           zip(targets.gt_masks, targets.proposals, targets.matched_idxs,
                               strict=True)])
        energy = chan_vese_energy_loss(logits, image, eps=self.eps, mu=self.mu)
        losses["loss_levelset"] = self.weight * energy
        return losses

    def extra_repr(self) -> str:
        return f"weight={self.weight}, eps={self.eps}, mu={self.mu}"


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
