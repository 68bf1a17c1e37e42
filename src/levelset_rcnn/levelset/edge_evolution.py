"""Edge-based level-set evolution (geodesic active contours with learned terms), the update of
DELSE (Wang et al., "Object instance annotation with deep extreme level set evolution", CVPR
2019; reference [65] of the LevelSet R-CNN paper), which Table 3 compares with the region-based
Chan-Vese layer of :mod:`.chan_vese`.

One step on an ``M x M`` grid, with the Sobel gradients and the curvature of
:mod:`.functional` (replicate padding)::

    phi <- phi + dt_n * ( c * g * kappa(phi) * |grad phi|  -  a * v . grad phi )

``-v . grad phi`` advects the level sets along the unit directions ``v`` (``(v_x, v_y)``, x
along columns) at ``a * dt_n`` pixels per step; ``g kappa |grad phi|`` is mean-curvature
motion weighted by a modulation map ``g >= 0``. Both terms are invariant to the scale of
``phi``, so ``dt`` is in pixels. DELSE's own code also gates both terms with a compactly
supported Dirac band and adds DRLSE's distance regularisation; neither is used here (a
truncated TSDF is flat outside its band already, and a few steps do not drift far from a
distance function).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .functional import CURVATURE_ETA, curvature, sobel

__all__ = ["VELOCITY_ETA", "delse_evolve", "normalise_velocity"]

#: Regulariser of ``|v|`` when normalising velocities (head outputs are O(0.1-1)).
VELOCITY_ETA = 1e-2


def normalise_velocity(v: Tensor, eta: float = VELOCITY_ETA) -> Tensor:
    """``v / sqrt(|v|^2 + eta^2)`` for ``v: (R, 2, H, W)``: unit length where ``|v| >> eta``,
    finite (and zero) at ``v = 0``."""
    return v * torch.rsqrt(v.square().sum(1, keepdim=True) + eta * eta)


def delse_evolve(
    phi: Tensor, velocity: Tensor, modulation: Tensor, dt: Tensor, *,
    advection: Tensor | float = 1.0, curvature_gain: Tensor | float = 0.5,
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
