"""Chan-Vese on bilinearly upsampled features, without materialising them.

The feature head makes ``F = up(f)``: a low-resolution map ``f: (R, C, s, s)`` (28x28)
upsampled bilinearly to ``M x M`` (112x112). Upsampling is linear and separable,
``F_c = U_y f_c U_x^T`` with ``U: (M, s)`` having at most two non-zeros per row, so every
quantity a Chan-Vese step needs from ``F`` can be computed at low resolution:

* region sums ``sum_x F(x) H(x) = sum_ij f_ij (U_y^T H U_x)_ij`` (``U^T`` is a small matmul);
* the projection ``F(x) . w = up(f . w)(x)``: one channel upsampled instead of ``C``;
* ``||F(x) - m||^2`` (once per forward): a quadratic form in the four low-resolution
  neighbours of ``x``, i.e. ten Gram maps ``<f_p, f_q>`` at ``s x s``, combined with the
  bilinear weights.

The step arithmetic (region means, data term, update) is the core layer's
(:func:`.chan_vese.region_terms`, :func:`.chan_vese.level_set_step`); only the way the
features are read differs. The result equals :class:`levelset_rcnn.levelset.ChanVese` applied to
``F.interpolate(f, (M, M), mode="bilinear", align_corners=False)`` (same centring by the
per-RoI mean, same region regulariser, same curvature and curvature floor; tested to float32
round-off), at a fraction of the cost: nothing of size ``C x M x M`` is ever created, so on a
CPU the 100-RoI forward costs tens of milliseconds instead of a few hundred, and the backward
pass (plain autograd) keeps only ``M x M`` maps per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chan_vese import (
    CURVATURE_STEP_BOUND,
    EPS_FLOOR,
    curvature_floor,
    level_set_step,
    region_terms,
    roi_chunks,
)
from .functional import CURVATURE_ETA, curvature, dirac, heaviside

__all__ = ["UpsampledChanVese", "bilinear_matrix", "upsampled_sq_norm"]

def _linear_taps(s: int, M: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For each of ``M`` outputs: left source index ``i0 (M,)`` and weight ``l (M,)`` of the
    right neighbour ``i0 + 1`` (PyTorch's ``align_corners=False`` rule; ``i0 + 1 = s`` means
    the replicated last source)."""
    y = torch.arange(M, dtype=torch.float64, device=device)
    src = ((y + 0.5) * (s / M) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(s - 1)
    return i0, src - i0


def bilinear_matrix(s: int, M: int, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``U: (M, s)`` with ``F.interpolate(f, (M, M), mode="bilinear", align_corners=False)
    == U @ f @ U.T`` for ``f: (s, s)``."""
    i0, l = _linear_taps(s, M, device or torch.device("cpu"))
    U = torch.zeros(M, s + 1, dtype=torch.float64, device=i0.device)
    rows = torch.arange(M, device=i0.device)
    U[rows, i0] += 1.0 - l
    U[rows, i0 + 1] += l
    U[:, s - 1] += U[:, s]  # the replicated last source
    return U[:, :s].to(dtype)


def upsampled_sq_norm(f: Tensor, M: int) -> Tensor:
    """``||up(f)(x)||^2`` over channels at every pixel of the ``M x M`` grid.

    Args:
        f: ``(R, C, s, s)``.

    Returns:
        ``(R, M, M)``, equal to ``F.interpolate(f, (M, M), "bilinear").square().sum(1)``.
    """
    s = f.shape[-1]
    fp = F.pad(f, (0, 1, 0, 1), mode="replicate")  # (R, C, s + 1, s + 1)
    # The ten Gram maps of a 2x2 block (corners a b / c d) are shifts of five maps: norms,
    # right, down, down-right and down-left neighbours, each (R, s, s) at block origins.
    norm = fp.square().sum(1)  # (R, s + 1, s + 1)
    right = (fp[..., :-1, :-1] * fp[..., :-1, 1:]).sum(1)  # <a, b>
    down = (fp[..., :-1, :-1] * fp[..., 1:, :-1]).sum(1)  # <a, c>
    diag = (fp[..., :-1, :-1] * fp[..., 1:, 1:]).sum(1)  # <a, d>
    anti = (fp[..., :-1, 1:] * fp[..., 1:, :-1]).sum(1)  # <b, c>
    aa, bb = norm[:, :-1, :-1], norm[:, :-1, 1:]
    cc, dd = norm[:, 1:, :-1], norm[:, 1:, 1:]
    ab = right
    fr = F.pad(right[:, None], (0, 0, 0, 1), mode="replicate")[:, 0]  # (R, s + 1, s)
    cd = fr[:, 1:, :]  # <c, d>: right-neighbour map one row down
    fd = F.pad(down[:, None], (0, 1, 0, 0), mode="replicate")[:, 0]  # (R, s, s + 1)
    bd = fd[:, :, 1:]  # <b, d>: down-neighbour map one column right
    ac = down

    i0, ly = _linear_taps(s, M, f.device)
    ly = ly.to(f.dtype)
    lx, j0 = ly, i0
    wx0, wx1 = (1 - lx) ** 2, lx**2
    wx01 = 2 * (1 - lx) * lx

    def along_x(g0: Tensor, g01: Tensor, g1: Tensor) -> Tensor:
        # sum over the two x taps: (R, s, s) -> (R, s, M)
        return wx0 * g0[..., j0] + wx01 * g01[..., j0] + wx1 * g1[..., j0]

    top = along_x(aa, ab, bb)  # both taps on row i0
    bottom = along_x(cc, cd, dd)  # both on row i0 + 1
    # one tap on each row: (1-lx)^2 <a,c> + (1-lx) lx (<a,d> + <b,c>) + lx^2 <b,d>
    cross = along_x(ac, 0.5 * (diag + anti), bd)
    wy0 = ((1 - ly) ** 2)[:, None]
    wy1 = (ly**2)[:, None]
    wy01 = (2 * (1 - ly) * ly)[:, None]
    return wy0 * top[:, i0] + wy1 * bottom[:, i0] + wy01 * cross[:, i0]


class UpsampledChanVese(nn.Module):
    """``N`` unrolled Chan-Vese steps (eq. 7-9) on ``F = bilinear_up(f)`` given ``f``.

    ``forward(phi0 (R, 1, M, M), f (R, C, s, s), *, lambda1, lambda2, mu (R,), eps, dt (R, N),
    return_all=False) -> phi_N (R, 1, M, M)`` float32 (float64 for float64 inputs),
    differentiable with respect to every input through autograd; ``return_all=True`` gives
    ``[phi_0, ..., phi_N]``.
    """

    def __init__(self, num_steps: int = 3, *, eta: float = CURVATURE_ETA,
                 step_bound: float | None = CURVATURE_STEP_BOUND) -> None:
        super().__init__()
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if step_bound is not None and not step_bound > 0:
            raise ValueError(f"step_bound must be positive or None, got {step_bound}")
        self.num_steps = num_steps
        self.eta = eta
        self.step_bound = step_bound

    def forward(
        self, phi0: Tensor, f: Tensor, *, lambda1: Tensor, lambda2: Tensor, mu: Tensor,
        eps: Tensor, dt: Tensor, return_all: bool = False,
    ) -> Tensor | list[Tensor]:
        R, _, M, Mw = phi0.shape
        if M != Mw or f.shape[-1] != f.shape[-2] or f.shape[0] != R:
            raise ValueError(f"need square maps and matching RoIs: phi0 {tuple(phi0.shape)}, "
                             f"f {tuple(f.shape)}")
        dtype = torch.float64 if torch.float64 in (phi0.dtype, f.dtype) else torch.float32
        with torch.autocast(device_type=phi0.device.type, enabled=False):
            # Traced (ONNX / TorchScript export): one chunk and no R == 0 shortcut, so that the
            # graph holds for any number of RoIs.
            tracing = torch.jit.is_tracing()
            if self.num_steps == 0 or (R == 0 and not tracing):
                phi = phi0.to(dtype)
                return [phi] * (self.num_steps + 1) if return_all else phi
            U = bilinear_matrix(f.shape[-1], M, device=f.device, dtype=dtype)  # (M, s), tiny
            args = [t.to(dtype) for t in (phi0, f, lambda1, lambda2, mu, eps, dt)]
            # RoIs are independent: the core layer's chunking policy (cache-sized on the CPU).
            parts = [
                self._evolve(*(t[sl] for t in args), U=U)
                for sl in ([slice(None)] if tracing else roi_chunks(R, M * M, phi0.device))
            ]
        steps = [torch.cat(p) if len(p) > 1 else p[0] for p in zip(*parts, strict=True)]
        return steps if return_all else steps[-1]

    def _evolve(
        self, phi0: Tensor, f: Tensor, lambda1: Tensor, lambda2: Tensor, mu: Tensor,
        eps: Tensor, dt: Tensor, *, U: Tensor,
    ) -> list[Tensor]:
        """Every level set ``[phi_0, ..., phi_N]`` of one chunk, each ``(R, 1, M, M)``."""
        R = phi0.shape[0]
        M, s = U.shape
        P = M * M
        Ut = U.t()
        phi = phi0[:, 0]
        # Per-RoI mean of F over the M x M grid; F - m = up(f - m) (rows of U sum to 1).
        col = U.sum(0)  # (s,)
        m = torch.einsum("rcij,i,j->rc", f, col, col) / P
        fc = f - m[:, :, None, None]
        q = upsampled_sq_norm(fc, M).view(R, P)  # ||F - m||^2
        l1, l2, mu_ = lambda1[:, None], lambda2[:, None], mu[:, None]
        eps = eps.clamp_min(EPS_FLOOR)
        phis = [phi0]
        for n in range(self.num_steps):
            e = eps[:, n, None, None]
            H, d = heaviside(phi, e), dirac(phi, e)
            a = H.sum((1, 2))  # (R,)
            fh = torch.einsum("rcij,rij->rc", fc, Ut @ H @ U)  # sum_x (F - m) H
            _, _, w, const = region_terms(fh, a, m, P, l1, l2)
            fw = U @ torch.einsum("rcij,rc->rij", fc, w) @ Ut  # (F - m) . w: (R, M, M)
            floor = curvature_floor(mu_, dt[:, n, None], self.step_bound, self.eta)
            K = curvature(phi[:, None], self.eta,
                          None if floor is None else floor[:, :, None, None])[:, 0]
            flat, _ = level_set_step(phi.reshape(R, P), d.reshape(R, P), K.reshape(R, P), q,
                                     fw.reshape(R, P), const, l1, l2, mu_, dt[:, n, None])
            phi = flat.view(R, M, M)
            phis.append(phi[:, None])
        return phis

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, eta={self.eta}, step_bound={self.step_bound}"
