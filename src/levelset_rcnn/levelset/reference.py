"""The readable, slow reference of the level-set core: direct, line-by-line transcriptions of
the paper's eq. 4 and 7-9, kept independent of the fast code in
:mod:`levelset_rcnn.levelset.chan_vese` and :mod:`levelset_rcnn.levelset.functional`: Sobel by
``conv2d`` with the explicit 3x3 kernels, data terms with ``F - c`` materialised, autograd for
the backward pass. It exists to check the fast layer: the tests compare against it (in
float64) and ``benchmarks/bench_chan_vese.py`` times it as the baseline. Do not use it for
training; it is several times slower and keeps every intermediate for backward.

The regularisers the package documents (``eta`` in ``|grad phi|``, ``kappa`` in the region
areas, and the floor ``tau = dt mu / (pi step_bound)`` under ``|grad phi|`` that bounds the
explicit curvature step) are part of the discretisation, so the reference applies them the
same way; ``step_bound=None`` is eq. 8 as printed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]


def ref_heaviside(x, eps):
    return 0.5 * (1.0 + (2.0 / math.pi) * torch.atan(x / eps))  # eq. 4


def ref_dirac(x, eps):
    return (1.0 / math.pi) * eps**2 / (eps**2 + x**2)  # eq. 4 as printed


def ref_sobel(phi):
    kx = torch.tensor(SOBEL_X, dtype=phi.dtype, device=phi.device) / 8.0
    ky = kx.t().contiguous()
    p = F.pad(phi, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(p, kx.view(1, 1, 3, 3)), F.conv2d(p, ky.view(1, 1, 3, 3))


def ref_curvature(phi, eta, floor=None):
    gx, gy = ref_sobel(phi)
    norm = torch.sqrt(gx**2 + gy**2 + eta**2)
    if floor is not None:
        norm = torch.maximum(norm, floor)
    div_x, _ = ref_sobel(gx / norm)
    _, div_y = ref_sobel(gy / norm)
    return div_x + div_y


def ref_chan_vese(phi0, feats, lambda1, lambda2, mu, eps, dt, *, eta=1e-4, kappa=1e-4,
                  step_bound=None, return_all=False):
    """Eq. 7-9 for ``phi0 (R,1,M,M)``, ``feats (R,C,M,M)``, ``lambda*/mu (R,)``,
    ``eps/dt (R,N)``."""
    R = phi0.shape[0]
    l1, l2, m = (t.view(R, 1, 1, 1) for t in (lambda1, lambda2, mu))
    phi = phi0
    phis = [phi]
    for n in range(eps.shape[1]):
        e = eps[:, n].view(R, 1, 1, 1)
        t = dt[:, n].view(R, 1, 1, 1)
        H = ref_heaviside(phi, e)
        c1 = (feats * H).sum((2, 3), keepdim=True) / (H.sum((2, 3), keepdim=True) + kappa)
        c2 = (feats * (1 - H)).sum((2, 3), keepdim=True) / (
            (1 - H).sum((2, 3), keepdim=True) + kappa
        )
        data = -l1 * ((feats - c1) ** 2).sum(1, keepdim=True) + l2 * (
            (feats - c2) ** 2
        ).sum(1, keepdim=True)
        floor = None
        if step_bound is not None:  # the diffusion number of the curvature step <= step_bound
            floor = torch.clamp(t * m / (math.pi * step_bound), min=eta / 2)
        dphi_dt = ref_dirac(phi, e) * (m * ref_curvature(phi, eta, floor) + data)  # eq. 8
        phi = phi + t * dphi_dt  # eq. 7
        phis.append(phi)
    return phis if return_all else phi
