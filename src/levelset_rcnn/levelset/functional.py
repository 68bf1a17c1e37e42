"""Pointwise and stencil operators of the Chan-Vese energy (paper, eq. 3-4 and section 4.1).

Every function works on batches of level sets ``phi: (R, 1, M, M)`` (or any leading shape for
the pointwise ones) and is differentiable through plain autograd. The fused Chan-Vese layer
(:mod:`levelset_rcnn.levelset.chan_vese`) calls the same functions, so there is one definition
of each operator in the package.

Conventions
-----------
* ``dirac`` is eq. 4 of the paper as printed, ``eps**2 / (pi * (eps**2 + z**2))``. This is
  ``eps`` times the derivative of ``heaviside`` (whose derivative is
  ``eps / (pi * (eps**2 + z**2))``): its peak is ``1/pi`` whatever ``eps`` is, so ``eps`` only
  sets the width of the band that moves, not the size of the step. :func:`heaviside_grad`
  gives the true derivative where one is needed.
* Gradients use the 3x3 Sobel operator normalised by 1/8, so that on a linear ramp it returns
  the slope in units per pixel, with replicate padding at the border (the RoI has no outside).
* The curvature ``div(grad phi / |grad phi|)`` divides by ``sqrt(|grad phi|^2 + eta^2)``:
  ``eta`` keeps flat regions (a truncated TSDF is flat away from the boundary) finite in values
  and in gradients. Its Jacobian there is still of order ``1 / eta``; the Chan-Vese layers
  bound what an explicit step does with it through ``floor`` (see
  :func:`levelset_rcnn.levelset.chan_vese.curvature_floor`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CURVATURE_ETA",
    "curvature",
    "dirac",
    "heaviside",
    "heaviside_grad",
    "sobel",
]

#: Default regulariser of ``|grad phi|`` in the curvature (units of phi per pixel).
CURVATURE_ETA = 1e-4

_INV_PI = 1.0 / math.pi


def heaviside(x: Tensor, eps: Tensor | float, *, out: Tensor | None = None) -> Tensor:
    """Soft Heaviside ``H_eps(x) = 1/2 (1 + 2/pi atan(x / eps))`` (eq. 4), values in (0, 1).

    With ``out`` (not differentiable), written there; the same values bit for bit."""
    if out is None:
        return 0.5 + _INV_PI * torch.atan(x / eps)
    return torch.atan(x / eps, out=out).mul_(_INV_PI).add_(0.5)


def dirac(x: Tensor, eps: Tensor | float) -> Tensor:
    """Soft Dirac ``delta_eps(x) = 1/pi * eps^2 / (eps^2 + x^2)`` (eq. 4), peak ``1/pi``.

    Evaluated as ``1/pi / (1 + (x/eps)^2)``, which neither overflows for huge ``eps`` nor
    divides 0 by 0 for tiny ``eps``.
    """
    u = x / eps
    return _INV_PI / (1.0 + u * u)


def heaviside_grad(x: Tensor, eps: Tensor | float) -> Tensor:
    """``d H_eps / dx = 1/pi * eps / (eps^2 + x^2)`` (equals ``dirac(x, eps) / eps``)."""
    return dirac(x, eps) / eps


def _check_batch(phi: Tensor) -> None:
    if phi.dim() != 4 or phi.shape[1] != 1:
        raise ValueError(f"expected phi of shape (R, 1, H, W), got {tuple(phi.shape)}")


def _sobel_x8(phi: Tensor) -> Tensor:
    """Eight times the Sobel x-derivative (the 1/8 is applied by the callers, once)."""
    p = F.pad(phi, (1, 1, 1, 1), mode="replicate")
    rows = torch.add(p[:, :, :-2, :], p[:, :, 2:, :]).add_(p[:, :, 1:-1, :], alpha=2.0)
    return rows[..., 2:] - rows[..., :-2]


def _sobel_y8(phi: Tensor) -> Tensor:
    """Eight times the Sobel y-derivative."""
    p = F.pad(phi, (1, 1, 1, 1), mode="replicate")
    cols = torch.add(p[..., :-2], p[..., 2:]).add_(p[..., 1:-1], alpha=2.0)
    return cols[:, :, 2:, :] - cols[:, :, :-2, :]


def sobel(phi: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel derivatives of ``phi: (R, 1, H, W)`` with replicate padding.

    Returns ``(d/dx, d/dy)``, each ``(R, 1, H, W)``, x along the last (column) axis, y along
    rows, scaled by 1/8 so a unit ramp gives 1. The separable stencil (smooth across with
    [1, 2, 1], difference along with [-1, 0, 1]) is applied by slicing: on the CPU this is
    several times faster than a 1-channel ``conv2d``.
    """
    _check_batch(phi)
    return _sobel_x8(phi) * 0.125, _sobel_y8(phi) * 0.125


def curvature(phi: Tensor, eta: float = CURVATURE_ETA, floor: Tensor | None = None) -> Tensor:
    """Mean curvature term ``div(grad phi / |grad phi|)`` of ``phi: (R, 1, H, W)``.

    Both the gradient and the divergence use :func:`sobel`; ``|grad phi|`` is regularised as
    ``sqrt(|grad phi|^2 + eta^2)``, and with ``floor`` (a tensor broadcastable to ``phi``, in
    the same units of phi per pixel) as ``max(sqrt(|grad phi|^2 + eta^2), floor)``, so that
    the normal's Jacobian is at most ``1 / floor``. Where the first term is the larger (every
    pixel when ``floor <= eta``) the result is bit for bit the one without ``floor``.
    Returns ``(R, 1, H, W)``, same dtype as ``phi``.
    """
    _check_batch(phi)
    # With gradients kept at 8x scale, n = g / sqrt(g^2 + (8 eta)^2) is unchanged, and the
    # divergence's 1/8 is applied once at the end: fewer passes over the maps.
    gx, gy = _sobel_x8(phi), _sobel_y8(phi)
    inv_norm = torch.rsqrt(gx * gx + gy * gy + 64.0 * eta * eta)
    if floor is not None:
        # 1 / max(8 |g|_eta, 8 floor) as a minimum of reciprocals: unchanged rsqrt values
        # wherever the floor does not bind.
        inv_norm = torch.minimum(inv_norm, 0.125 / floor)
    return (_sobel_x8(gx * inv_norm) + _sobel_y8(gy * inv_norm)).mul_(0.125)
