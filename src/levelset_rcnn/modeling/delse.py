"""DELSE (Wang et al., "Object instance annotation with deep extreme level set evolution",
CVPR 2019; the paper's reference [65]) inside the RoI heads, for Table 3 of the paper.

DELSE evolves a level set with an *edge-based* update (geodesic active contours with learned
terms) instead of the region-based Chan-Vese energy. As the paper adapted it to instance
segmentation, the mask head becomes the TSDF head (``phi_0``, shared with LevelSet R-CNN) and
two heads are added on the same mask trunk, both :class:`.heads.ChanVeseFeatureHead` modules
(28x28 convolutions, bilinear upsampling to the ``M x M`` RoI grid):

* the velocity head, 2 channels ``(v_x, v_y)`` (x along columns, y along rows), normalised
  per pixel to a unit direction, trained to point towards the object boundary;
* the modulation head, 1 channel, ``g = sigmoid(.)`` in (0, 1), which weights the curvature
  term (DELSE uses a sigmoid too).

One step, on the ``M x M`` (112x112) grid, with the gradients and the curvature of
:mod:`levelset_rcnn.levelset.functional` (Sobel, replicate padding)::

    phi <- phi + dt_n * ( c * g * kappa(phi) * |grad phi|  -  a * v . grad phi )

``-v . grad phi`` is the advection of the level sets along ``v``: with ``v`` the direction to
the ground-truth boundary, every contour (whatever the sign convention of ``phi``) is carried
towards it at ``a * dt_n`` pixels per step. ``g kappa |grad phi|`` is mean-curvature motion,
the smoothing term of geodesic active contours. Both terms are invariant to the scale of
``phi`` (our ``phi`` is the TSDF divided by the truncation), so ``dt`` is in pixels of the
``M`` grid. DELSE's own code gates both terms with a compactly supported Dirac band of its
pixel-valued ``phi`` and adds DRLSE's distance-regularisation term; neither is used here:
the truncated TSDF is flat (zero gradient, no motion) outside its band already, and three
steps do not drift far from a distance function.

Settings (``mask_head_type``):

* ``"delse"``: hand-set ``dt_n = dt`` (:data:`DELSE_DT` = 2 px), ``a = 1``, ``c`` =
  :data:`DELSE_CURVATURE` = 0.5, and DELSE's losses: L2 on ``phi_0`` against the TSDF,
  class-balanced cross entropy (:func:`class_balanced_bce`, DEXTR / DELSE form, counts over the
  batch) on ``H_0.1(phi_N)``, and the angular L2 loss (:func:`angular_loss`) on the velocity.
  ``dt * c * max(g) <= 1`` keeps the explicit curvature step within its stability bound.
* ``"delse_hp"``: the paper's hyperparameter head (:class:`.heads.HyperParameterHead`,
  unchanged, ``2N + 3`` outputs in (0, 2)) supplies per-instance multipliers of the hand-set
  values: ``a = lambda_1``, ``c = DELSE_CURVATURE * mu``, ``dt_n = DELSE_DT * dt_n`` (``lambda_2``
  and ``eps_n`` have no role in the edge-based update and are unused), starting at 1
  (:data:`DELSE_HP_INIT`). Losses: ours (:func:`.losses.tsdf_loss` on ``phi_0`` and
  ``phi_N``) plus the velocity loss.

The velocity target (:func:`velocity_targets`) is the direction of steepest descent of the
ground-truth distance to the boundary, ``-sign(D) grad D / |grad D|`` for the signed distance
``D`` (positive inside), i.e. minus the normalised gradient of the unsigned distance, taken
from the same TSDF target as the other losses (so it is defined in the truncation band, where
the contours move; outside it the loss is not applied).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..levelset.functional import CURVATURE_ETA, curvature, sobel
from .losses import heaviside_nll

__all__ = [
    "DELSE_CURVATURE",
    "DELSE_DT",
    "DELSE_HP_INIT",
    "VELOCITY_MARGIN",
    "angular_loss",
    "class_balanced_bce",
    "delse_evolve",
    "normalise_velocity",
    "velocity_targets",
]

#: Hand-set step of the ``"delse"`` setting, in pixels of the 112x112 grid per step: three
#: steps move a contour by up to 6 px (1.5 px of the 28x28 TSDF head's grid), the size of the
#: errors of a bilinearly upsampled 28x28 prediction.
DELSE_DT = 2.0
#: Hand-set gain of the curvature term (times ``g`` in (0, 1)): ``DELSE_DT * 0.5 = 1`` is the
#: stability bound of an explicit step of the (Sobel) curvature flow.
DELSE_CURVATURE = 0.5
#: ``"delse_hp"``: initial outputs of the hyperparameter head; the multipliers of the advection
#: (``lambda1``), of the curvature (``mu``) and of the steps (``dt``) start at 1.
DELSE_HP_INIT: Mapping[str, float] = {"lambda1": 1.0, "lambda2": 1.0, "mu": 1.0, "eps": 0.1,
                                      "dt": 1.0}
#: Velocity targets are used where the TSDF's 3x3 Sobel stencil stays inside the truncation
#: band: ``|D| < truncation - VELOCITY_MARGIN`` pixels.
VELOCITY_MARGIN = 2.0
#: Regulariser of ``|v|`` when normalising predicted velocities (head outputs are O(0.1-1)).
VELOCITY_ETA = 1e-2


def normalise_velocity(v: Tensor, eta: float = VELOCITY_ETA) -> Tensor:
    """``v / sqrt(|v|^2 + eta^2)`` for ``v: (R, 2, H, W)``: unit length where ``|v| >> eta``,
    finite (and zero) at ``v = 0``."""
    return v * torch.rsqrt(v.square().sum(1, keepdim=True) + eta * eta)


def delse_evolve(
    phi: Tensor, velocity: Tensor, modulation: Tensor, dt: Tensor, *,
    advection: Tensor | float = 1.0, curvature_gain: Tensor | float = DELSE_CURVATURE,
    eta: float = CURVATURE_ETA,
) -> Tensor:
    """Unrolled DELSE evolution (see the module docstring), differentiable in every input.

    Args:
        phi: ``(R, 1, M, M)`` initial level set ``phi_0``.
        velocity: ``(R, 2, M, M)`` directions ``(v_x, v_y)`` (normalised by the caller).
        modulation: ``(R, 1, M, M)`` curvature weights ``g >= 0``.
        dt: ``(R, N)`` step sizes in pixels (``N`` steps).
        advection, curvature_gain: ``a`` and ``c``: floats or ``(R,)`` tensors.
        eta: regulariser of ``|grad phi|`` (flat regions stay finite in value and gradient).

    Returns:
        ``phi_N: (R, 1, M, M)`` float32 (float64 for float64 inputs), also under autocast.
    """
    if phi.dim() != 4 or phi.shape[1] != 1:
        raise ValueError(f"phi must be (R, 1, M, M), got {tuple(phi.shape)}")
    R = phi.shape[0]
    if velocity.shape != (R, 2, *phi.shape[2:]):
        raise ValueError(f"velocity must be (R, 2, M, M) = {(R, 2, *phi.shape[2:])}, got "
                         f"{tuple(velocity.shape)}")
    if modulation.shape != phi.shape:
        raise ValueError(f"modulation must be {tuple(phi.shape)}, got {tuple(modulation.shape)}")
    if dt.dim() != 2 or dt.shape[0] != R:
        raise ValueError(f"dt must be (R, N) with R={R}, got {tuple(dt.shape)}")
    dtype = torch.float64 if phi.dtype == torch.float64 else torch.float32

    def per_roi(x: Tensor | float) -> Tensor | float:
        return x.to(dtype).view(R, 1, 1, 1) if isinstance(x, Tensor) else float(x)

    with torch.autocast(device_type=phi.device.type, enabled=False):
        phi = phi.to(dtype)
        vx, vy = velocity.to(dtype).split(1, dim=1)
        weight = per_roi(curvature_gain) * modulation.to(dtype)
        a = per_roi(advection)
        steps = dt.to(dtype)
        for n in range(steps.shape[1]):
            gx, gy = sobel(phi)
            grad_norm = torch.sqrt(gx * gx + gy * gy + eta * eta)
            smooth = weight * curvature(phi, eta) * grad_norm
            advect = vx * gx + vy * gy
            phi = phi + steps[:, n].view(R, 1, 1, 1) * (smooth - a * advect)
    return phi


def velocity_targets(tsdf: Tensor, truncation: float, *,
                     margin: float = VELOCITY_MARGIN) -> tuple[Tensor, Tensor]:
    """Unit directions towards the ground-truth boundary, from the TSDF target.

    Args:
        tsdf: ``(R, M, M)`` TSDF targets in [-1, 1] (positive inside,
            :func:`~levelset_rcnn.levelset.masks_to_tsdf` with ``truncation``).
        truncation: the TSDF's truncation in pixels.
        margin: pixels kept clear of the truncation plateau (see :data:`VELOCITY_MARGIN`).

    Returns:
        ``v: (R, 2, M, M)`` float32 ``(v_x, v_y)``, ``-sign(D) grad D / |grad D|`` with
        ``D = truncation * tsdf`` (Sobel gradient), zero where invalid; ``valid: (R, M, M)``
        bool: ``|D| < truncation - margin`` and ``|grad D| > 0.5`` (a distance function has a
        unit gradient; smaller Sobel values mark the medial axis, where the direction flips).
    """
    if tsdf.dim() != 3:
        raise ValueError(f"tsdf must be (R, M, M), got {tuple(tsdf.shape)}")
    d = tsdf.float()[:, None] * float(truncation)
    gx, gy = sobel(d)
    norm = torch.sqrt(gx * gx + gy * gy)
    valid = (d.abs() < float(truncation) - margin) & (norm > 0.5)
    scale = torch.where(valid, -torch.sign(d) / norm.clamp_min(1e-6), torch.zeros_like(d))
    return torch.cat([gx * scale, gy * scale], dim=1), valid[:, 0]


def angular_loss(pred: Tensor, target: Tensor, valid: Tensor, *,
                 eta: float = VELOCITY_ETA) -> Tensor:
    """DELSE's "L2 on the angular domain": mean over valid pixels of ``angle(pred, target)^2``.

    Args:
        pred: ``(R, 2, M, M)`` predicted velocities (any length; normalised here).
        target: ``(R, 2, M, M)`` unit target directions (:func:`velocity_targets`).
        valid: ``(R, M, M)`` bool, where the target is defined.

    Returns:
        A scalar in ``[0, pi^2]`` radians squared; 0 (still in the graph) when no pixel is
        valid. The cosine is scaled by ``1 - 1e-4`` (as DELSE does) so that
        ``acos`` keeps a finite derivative for aligned vectors.
    """
    if pred.shape != target.shape or pred.shape[1] != 2:
        raise ValueError(f"pred and target must both be (R, 2, M, M), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = normalise_velocity(pred.float(), eta)
        cos = (p * target.float()).sum(1)
        angle = torch.acos(cos * (1.0 - 1e-4))
        w = valid.to(angle.dtype)
        # No host sync: with no valid pixel the sum is 0 and pred stays in the graph.
        return (angle.square() * w).sum() / w.sum().clamp_min(1.0)


def class_balanced_bce(phi: Tensor, mask_target: Tensor, *, eps: float) -> Tensor:
    """Class-balanced cross entropy (DEXTR / DELSE) of ``H_eps(phi)`` against a mask.

    With ``P`` pixels over the whole batch, ``P+`` of them inside: ``-(P-/P sum_{inside}
    log H + P+/P sum_{outside} log(1 - H)) / P``, so that each class weighs in proportion to
    the other's frequency.

    Args:
        phi: ``(R, M, M)`` level sets (positive inside).
        mask_target: ``(R, M, M)`` 0/1 floats.
        eps: Heaviside width.

    Returns:
        A scalar; ``phi.sum() * 0`` (still in the graph) when there are no RoIs.
    """
    if phi.numel() == 0:
        return phi.sum() * 0.0
    with torch.autocast(device_type=phi.device.type, enabled=False):
        nll_in, nll_out = heaviside_nll(phi, mask_target, eps)
        total = float(mask_target.numel())
        pos = mask_target.float().sum()
        neg = total - pos
        return (neg / total * nll_in.sum() + pos / total * nll_out.sum()) / total
