"""The unrolled deep Chan-Vese optimisation (paper, eq. 6-9), fused and memory-lean.

One step, for every RoI ``r`` with level set ``phi`` and features ``F`` (C channels, P pixels)::

    H = H_eps(phi),  delta = delta_eps(phi)                               (eq. 4)
    c1 = sum_x F H / sum_x H,  c2 = sum_x F (1 - H) / sum_x (1 - H)       (eq. 9)
    phi <- phi + dt * delta * (mu * div(grad phi/|grad phi|)
                               - lambda1 ||F - c1||^2 + lambda2 ||F - c2||^2)  (eq. 7-8)

A direct transcription materialises ``F - c1`` and ``F - c2`` (each as large as ``F``) several
times per step, and autograd keeps most of them for the backward pass. Here the data term is
expanded as ``||F - c||^2 = ||F||^2 - 2 F.c + ||c||^2``, so that a step reads ``F`` exactly
twice (``F^T H`` for the region means, then ``F.w`` with ``w = lambda1 c1 - lambda2 c2``), both
as batched matrix-vector products, and nothing of the size of ``F`` is created. The backward
pass is written by hand: it reads ``F`` twice per step and writes the gradient of ``F`` once,
as one low-rank product ``sum_k a_k (x) b_k`` plus one in-place ``F * g`` term. What is saved for
it is of the size of ``phi`` (per step) and of ``c`` (per step), never of ``F``.

Numerical choices (all exact identities or documented regularisers):

* ``||F||^2`` and ``F.w`` are evaluated on features centred by their per-RoI mean ``m`` (a
  constant): the energy is invariant to that shift, and it avoids the float32 cancellation of
  ``||F||^2 - 2 F.c + ||c||^2`` for features with a large common offset (ReLU outputs).
* Region means divide by ``sum H + kappa`` (``kappa = 1e-4`` pixel): an empty region gives a
  zero mean and finite gradients instead of 0/0.
* The curvature uses ``CURVATURE_ETA`` (see :mod:`.functional`).
* The evolving state (``phi``, ``c1``, ``c2``) is float32 (float64 if the inputs are float64),
  also under autocast: half-precision features are upcast on entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .functional import CURVATURE_ETA, curvature, dirac, heaviside

__all__ = ["ChanVese", "chan_vese_evolve", "REGION_KAPPA", "level_set_step", "region_terms",
           "roi_chunks"]

#: Regulariser (in pixels) of the region areas in eq. 9.
REGION_KAPPA = 1e-4
#: On the CPU, RoIs are processed in chunks of about this many pixels (see roi_chunks).
CPU_CHUNK_ELEMENTS = 1 << 17
#: Smallest Heaviside width used; smaller (or zero) eps is raised to it.
EPS_FLOOR = 1e-12

HyperParam = Tensor | float


def _step_terms(phi: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
    return heaviside(phi, e), dirac(phi, e)


def region_terms(
    fh: Tensor, a: Tensor, m: Tensor, P: int, l1: Tensor, l2: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The region means (eq. 9) and the per-RoI parts of the data term, from centred sums.

    Shared by :class:`ChanVese` and :class:`~levelset_rcnn.levelset.upsampled.
    UpsampledChanVese`, which differ only in how they read the features.

    Args:
        fh: ``(R, C)`` ``sum_x (F(x) - m) H(x)``.
        a: ``(R,)`` inside area ``sum_x H(x)``.
        m: ``(R, C)`` per-RoI mean of ``F`` (``sum_x (F - m) = 0``).
        P: pixels per RoI.
        l1, l2: ``(R, 1)`` ``lambda_1``, ``lambda_2``.

    Returns:
        ``c1 - m, c2 - m: (R, C)`` (areas regularised by :data:`REGION_KAPPA`),
        ``w = l1 (c1 - m) - l2 (c2 - m): (R, C)`` and
        ``const = l2 |c2 - m|^2 - l1 |c1 - m|^2: (R, 1)``, so that
        ``-l1 ||F - c1||^2 + l2 ||F - c2||^2 = (l2 - l1) ||F - m||^2 + 2 (F - m).w + const``.
    """
    c1m = (fh - REGION_KAPPA * m) / (a + REGION_KAPPA)[:, None]
    c2m = (-fh - REGION_KAPPA * m) / (P - a + REGION_KAPPA)[:, None]
    w = l1 * c1m - l2 * c2m
    const = l2 * c2m.square().sum(1, keepdim=True) - l1 * c1m.square().sum(1, keepdim=True)
    return c1m, c2m, w, const


def level_set_step(
    phi: Tensor, d: Tensor, K: Tensor, q: Tensor, fw: Tensor, const: Tensor, l1: Tensor,
    l2: Tensor, mu: Tensor, dt: Tensor,
) -> tuple[Tensor, Tensor]:
    """One update of eq. 7 on ``(R, P)`` maps: ``phi + dt * delta * V`` with the speed
    ``V = mu K + (l2 - l1) ||F - m||^2 + 2 (F - m).w + const`` (see :func:`region_terms`).

    Args:
        phi, d, K, q, fw: ``(R, P)`` level set, ``delta_eps(phi)``, curvature,
            ``||F - m||^2`` and ``(F - m).w``.
        const, l1, l2, mu, dt: ``(R, 1)``.

    Returns:
        ``(phi_next, V)``, both ``(R, P)``.
    """
    V = mu * K + ((l2 - l1) * q + 2.0 * fw + const)
    return phi + dt * d * V, V


def roi_chunks(R: int, P: int, device: torch.device) -> list[slice]:
    """Split the RoIs so that on the CPU a per-pixel tensor of a chunk stays cache-sized.

    RoIs are independent, so a chunk runs all N steps on its own. On the CPU this keeps the
    many small per-pixel tensors of a step (level sets, curvature, data term) in cache and
    out of the allocator's page-faulting large-block path, which is several times faster
    than stepping all RoIs at once; a GPU wants the whole batch in each kernel.
    """
    size = R if device.type != "cpu" else max(1, CPU_CHUNK_ELEMENTS // P)
    return [slice(i, min(i + size, R)) for i in range(0, R, max(size, 1))]


def _project(Ff: Tensor, x: Tensor) -> Tensor:
    """``sum_p F[r, c, p] x[r, p]``: ``(R, C)``. A batched matrix-vector product; for a few
    channels (classic mode) a fused multiply-sum is several times faster than ``bmm``."""
    if Ff.shape[1] <= _FEW_CHANNELS:
        return (Ff * x.unsqueeze(1)).sum(-1)
    return torch.bmm(Ff, x.unsqueeze(-1)).squeeze(-1)


def _contract(Ff: Tensor, w: Tensor) -> Tensor:
    """``sum_c F[r, c, p] w[r, c]``: ``(R, P)``."""
    if Ff.shape[1] <= _FEW_CHANNELS:
        return (Ff * w.unsqueeze(-1)).sum(1)
    return torch.bmm(w.unsqueeze(1), Ff).squeeze(1)


_FEW_CHANNELS = 4


def _centred_sq_norm(Ff: Tensor, m: Tensor) -> Tensor:
    """``||F - m||^2`` over channels: ``(R, P)``. On the CPU one RoI at a time, so the
    temporary ``F - m`` is cache-sized (a chunk-sized temporary costs ten times more, mostly
    in page faults); on a GPU in one kernel sequence."""
    if Ff.device.type != "cpu":
        return (Ff - m.unsqueeze(-1)).square_().sum(1)
    q = Ff.new_empty(Ff.shape[0], Ff.shape[2])
    for r in range(Ff.shape[0]):
        torch.sum((Ff[r] - m[r].unsqueeze(-1)).square_(), dim=0, out=q[r])
    return q


def _forward_chunk(
    phi: Tensor,
    Ff: Tensor,
    lambda1: Tensor,
    lambda2: Tensor,
    mu: Tensor,
    eps: Tensor,
    dt: Tensor,
    *,
    width: int,
    eta: float,
    record: bool,
    keep_all: bool,
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Run the N steps on flattened tensors: ``phi (R, P)``, ``Ff (R, C, P)``.

    Returns the level sets (all of them when ``keep_all`` or ``record``; else only the last)
    and, when ``record``, what the hand-written backward pass needs.
    """
    R, C, P = Ff.shape
    height = P // width
    num_steps = eps.shape[1]
    sF = Ff.sum(-1)  # (R, C)
    m = sF / P  # per-RoI channel means: a constant shift, see the module docstring
    q = _centred_sq_norm(Ff, m)  # ||F - m||^2: (R, P)
    l1, l2, mu_ = lambda1.unsqueeze(-1), lambda2.unsqueeze(-1), mu.unsqueeze(-1)
    phis = [phi]
    saved: dict[str, list[Tensor]] = {"V": [], "c1m": [], "c2m": [], "a": [], "w": []}
    for n in range(num_steps):
        e = eps[:, n : n + 1]
        H, d = _step_terms(phi, e)
        a = H.sum(-1)  # inside area (R,)
        fh = _project(Ff, H) - m * a.unsqueeze(-1)  # sum_x (F - m) H: (R, C)
        c1m, c2m, w, const = region_terms(fh, a, m, P, l1, l2)
        Fw = _contract(Ff, w) - (w * m).sum(-1, keepdim=True)  # (F - m).w: (R, P)
        K = curvature(phi.view(R, 1, height, width), eta).view(R, P)
        phi, V = level_set_step(phi, d, K, q, Fw, const, l1, l2, mu_, dt[:, n : n + 1])
        if record:
            for key, val in (("V", V), ("c1m", c1m), ("c2m", c2m), ("a", a), ("w", w)):
                saved[key].append(val)
        if record or keep_all:
            phis.append(phi)
        else:
            phis = [phi]
    extras = {k: torch.stack(v) for k, v in saved.items()} if record else {}
    if record:
        extras["q"], extras["m"] = q, m
    return phis, extras


def _backward_chunk(
    grad_out: Tensor,
    phis: Tensor,
    Ff: Tensor,
    lambda1: Tensor,
    lambda2: Tensor,
    mu: Tensor,
    eps: Tensor,
    dt: Tensor,
    saved: dict[str, Tensor],
    *,
    width: int,
    eta: float,
    g_F_out: Tensor | None,
) -> tuple[Tensor, ...]:
    """Gradients of one RoI chunk; writes the gradient of ``Ff`` into ``g_F_out`` if given."""
    R, C, P = Ff.shape
    height = P // width
    num_steps = eps.shape[1]
    Vs, c1s, c2s, As, Ws = (saved[k] for k in ("V", "c1m", "c2m", "a", "w"))
    q, m = saved["q"], saved["m"]
    l1, l2, mu_ = lambda1.unsqueeze(-1), lambda2.unsqueeze(-1), mu.unsqueeze(-1)

    g_l1 = torch.zeros_like(lambda1)
    g_l2 = torch.zeros_like(lambda1)
    g_mu = torch.zeros_like(lambda1)
    g_eps = torch.zeros_like(eps)
    g_dt = torch.zeros_like(dt)
    g_q = torch.zeros_like(q)
    g_sF = torch.zeros_like(m)
    left: list[Tensor] = []  # gradient of F = sum_k left_k (x) right_k + 2 F * g_q
    right: list[Tensor] = []

    g = grad_out[num_steps]
    for n in reversed(range(num_steps)):
        phi = phis[n]
        e, t = eps[:, n : n + 1], dt[:, n : n + 1]
        V, c1m, c2m, a, w = Vs[n], c1s[n], c2s[n], As[n], Ws[n]
        H, d = _step_terms(phi, e)
        u = phi / e  # d = s / pi with s = 1 / (1 + u^2); dd/dphi = -2 u s d / e
        ud_e = u * d * (1.0 + u * u).reciprocal_() / e
        # phi_next = phi + t * d * V
        g_dt[:, n] = (g * d * V).sum(-1)
        gV = g * t * d
        gd = g * t * V
        g_phi = g - 2.0 * gd * ud_e
        g_e = 2.0 * (gd * ud_e * u).sum(-1)
        # V = mu K + D
        with torch.enable_grad():
            phi_r = phi.detach().requires_grad_(True)
            K = curvature(phi_r.view(R, 1, height, width), eta).view(R, P)
            (g_phi_K,) = torch.autograd.grad(K, phi_r, gV * mu_)
        g_mu += (gV * K.detach()).sum(-1)
        g_phi = g_phi + g_phi_K
        # D = (l2 - l1) q + 2 (F - m).w + l2 |c2 - m|^2 - l1 |c1 - m|^2
        s = gV.sum(-1, keepdim=True)
        gVq = (gV * q).sum(-1)
        g_l2 += gVq + s.squeeze(-1) * c2m.square().sum(-1)
        g_l1 -= gVq + s.squeeze(-1) * c1m.square().sum(-1)
        g_q += (l2 - l1) * gV
        gy = 2.0 * gV
        g_w = _project(Ff, gy) - m * gy.sum(-1, keepdim=True)
        g_c1 = -2.0 * l1 * s * c1m
        g_c2 = 2.0 * l2 * s * c2m
        # w = l1 (c1 - m) - l2 (c2 - m)
        g_l1 += (g_w * c1m).sum(-1)
        g_l2 -= (g_w * c2m).sum(-1)
        g_c1 = g_c1 + l1 * g_w
        g_c2 = g_c2 - l2 * g_w
        # c1 = fH / (a + k), c2 = (sF - fH) / (P - a + k), fH = F^T H, a = sum H
        ia = 1.0 / (a + REGION_KAPPA).unsqueeze(-1)
        ib = 1.0 / (P - a + REGION_KAPPA).unsqueeze(-1)
        g_fH = g_c1 * ia - g_c2 * ib
        g_sF += g_c2 * ib
        c1, c2 = c1m + m, c2m + m
        g_a = -(g_c1 * c1).sum(-1, keepdim=True) * ia + (g_c2 * c2).sum(-1, keepdim=True) * ib
        gH = _contract(Ff, g_fH) + g_a
        g_phi = g_phi + gH * (d / e)
        g_e = g_e - (gH * (d * u / e)).sum(-1)
        g_eps[:, n] = g_e
        if g_F_out is not None:
            left += [w, g_fH]
            right += [gy, H]
        g = g_phi + grad_out[n]

    if g_F_out is not None:
        left += [g_sF, -2.0 * m]
        right += [torch.ones_like(q), g_q]
        torch.bmm(torch.stack(left, -1), torch.stack(right, 1), out=g_F_out)  # (R, C, P)
        g_F_out.addcmul_(Ff, g_q.unsqueeze(1), value=2.0)
    return g, g_l1, g_l2, g_mu, g_eps, g_dt


_SAVED_KEYS = ("V", "c1m", "c2m", "a", "w", "q", "m")


class _ChanVeseFunction(torch.autograd.Function):
    """Fused forward and hand-written backward of N Chan-Vese steps; see module docstring."""

    @staticmethod
    def forward(ctx, phi0, Ff, lambda1, lambda2, mu, eps, dt, width, eta):  # noqa: D102
        R, C, P = Ff.shape
        chunks = roi_chunks(R, P, Ff.device)
        runs = [
            _forward_chunk(
                phi0[sl], Ff[sl], lambda1[sl], lambda2[sl], mu[sl], eps[sl], dt[sl],
                width=width, eta=eta, record=True, keep_all=True,
            )
            for sl in chunks
        ]
        out = torch.cat([torch.stack(phis) for phis, _ in runs], dim=1)  # (N + 1, R, P)
        # Step-major tensors (N, R, ...) join along dim 1, per-RoI ones (R, ...) along dim 0.
        saved = [
            torch.cat([ex[k] for _, ex in runs], dim=0 if k in ("q", "m") else 1)
            for k in _SAVED_KEYS
        ]
        ctx.save_for_backward(out, Ff, lambda1, lambda2, mu, eps, dt, *saved)
        ctx.width, ctx.eta = width, eta
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        out, Ff, lambda1, lambda2, mu, eps, dt, *rest = ctx.saved_tensors
        saved = dict(zip(_SAVED_KEYS, rest, strict=True))
        R, C, P = Ff.shape
        g_F = torch.empty_like(Ff) if ctx.needs_input_grad[1] else None
        parts = []
        for sl in roi_chunks(R, P, Ff.device):
            chunk_saved = {k: (v[sl] if k in ("q", "m") else v[:, sl]) for k, v in saved.items()}
            parts.append(_backward_chunk(
                grad_out[:, sl], out[:, sl], Ff[sl], lambda1[sl], lambda2[sl], mu[sl],
                eps[sl], dt[sl], chunk_saved, width=ctx.width, eta=ctx.eta,
                g_F_out=None if g_F is None else g_F[sl],
            ))
        g_phi, g_l1, g_l2, g_mu, g_eps, g_dt = (torch.cat(p) for p in zip(*parts, strict=True))
        return g_phi, g_F, g_l1, g_l2, g_mu, g_eps, g_dt, None, None


def _evolve_no_grad(phi0, Ff, l1, l2, mu, eps, dt, *, width, eta, keep_all):
    R, _, P = Ff.shape
    runs = [
        _forward_chunk(
            phi0[sl], Ff[sl], l1[sl], l2[sl], mu[sl], eps[sl], dt[sl],
            width=width, eta=eta, record=False, keep_all=keep_all,
        )[0]
        for sl in roi_chunks(R, P, Ff.device)
    ]
    return [torch.cat(steps) for steps in zip(*runs, strict=True)]


def _per_roi(x: HyperParam, R: int, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, R)):
        raise ValueError(
            f"{name} must be a scalar or of shape (R,) with R={R}, got {tuple(t.shape)}"
        )
    return t.to(like.dtype).expand(R)


def _per_step(x: HyperParam, R: int, N: int, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(R, N)
    if t.dim() == 1 and t.shape[0] == N:
        return t.unsqueeze(0).expand(R, N)
    if t.dim() == 2 and t.shape[0] in (1, R) and t.shape[1] == N:
        return t.expand(R, N)
    raise ValueError(
        f"{name} must be a scalar, (N,) or (R, N) with R={R}, N={N}; got {tuple(t.shape)}"
    )


def _num_steps(eps: HyperParam, dt: HyperParam, num_steps: int | None) -> int:
    for x in (eps, dt):
        if isinstance(x, Tensor) and x.dim() >= 1:
            n = x.shape[-1]
            if num_steps is not None and n != num_steps:
                raise ValueError(f"eps/dt carry {n} steps but num_steps={num_steps}")
            return n
    if num_steps is None:
        raise ValueError("num_steps is needed when eps and dt are both scalars")
    return num_steps


def chan_vese_evolve(
    phi0: Tensor,
    features: Tensor,
    *,
    lambda1: HyperParam,
    lambda2: HyperParam,
    mu: HyperParam,
    eps: HyperParam,
    dt: HyperParam,
    num_steps: int | None = None,
    return_all: bool = False,
    eta: float = CURVATURE_ETA,
) -> Tensor | list[Tensor]:
    """Evolve level sets by ``N`` unrolled Chan-Vese steps (eq. 7-9) on a feature map.

    Args:
        phi0: ``(R, 1, M, W)`` initial level sets (a TSDF in [-1, 1] in the model).
        features: ``(R, C, M, W)`` the features ``F`` that replace image intensities.
        lambda1, lambda2, mu: region and length weights, scalars or ``(R,)``.
        eps, dt: Heaviside width and step size per step, scalars, ``(N,)`` or ``(R, N)``.
        num_steps: ``N``; needed only when ``eps`` and ``dt`` are both scalars.
        return_all: return ``[phi_0, ..., phi_N]`` instead of ``phi_N``.
        eta: regulariser of ``|grad phi|`` in the curvature.

    Returns:
        ``phi_N: (R, 1, M, W)`` (or the list), float32, or float64 when ``phi0`` or
        ``features`` is float64. Differentiable with respect to every tensor input.
    """
    if phi0.dim() != 4 or phi0.shape[1] != 1:
        raise ValueError(f"phi0 must be (R, 1, M, W), got {tuple(phi0.shape)}")
    if (
        features.dim() != 4
        or features.shape[0] != phi0.shape[0]
        or features.shape[2:] != phi0.shape[2:]
    ):
        raise ValueError(
            f"features must be (R, C, M, W) matching phi0 {tuple(phi0.shape)}, "
            f"got {tuple(features.shape)}"
        )
    R, C, height, width = features.shape
    N = _num_steps(eps, dt, num_steps)
    dtype = torch.float64 if torch.float64 in (phi0.dtype, features.dtype) else torch.float32
    device_type = phi0.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        phi = phi0.to(dtype)
        l1 = _per_roi(lambda1, R, phi, "lambda1")
        l2 = _per_roi(lambda2, R, phi, "lambda2")
        mu_ = _per_roi(mu, R, phi, "mu")
        eps_ = _per_step(eps, R, N, phi, "eps")
        # eps > 0 is required; the floor only keeps x/eps finite if a head outputs 0.
        eps_ = eps_.clamp_min(EPS_FLOOR)
        dt_ = _per_step(dt, R, N, phi, "dt")
        if R == 0 or N == 0:
            phis = [phi] * (N + 1)
            return phis if return_all else phi
        Ff = features.to(dtype).reshape(R, C, height * width)
        phi_flat = phi.reshape(R, height * width)
        inputs = (phi_flat, Ff, l1, l2, mu_, eps_, dt_)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            stacked = _ChanVeseFunction.apply(*inputs, width, eta)
            phis = list(stacked.unbind(0))
        else:
            phis = _evolve_no_grad(*inputs, width=width, eta=eta, keep_all=return_all)
    phis = [p.view(R, 1, height, width) for p in phis]
    return phis if return_all else phis[-1]


class ChanVese(nn.Module):
    """The deep Chan-Vese module: ``N`` unrolled steps of eq. 7-9 as a feed-forward layer.

    It has no parameters of its own: the hyperparameters come from the hyperparameter head
    (or are fixed numbers, for classic Chan-Vese). See :func:`chan_vese_evolve` for shapes.

    Example::

        cv = ChanVese(num_steps=3)
        phi_n = cv(phi0, feats, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)
    """

    def __init__(self, num_steps: int = 3, *, eta: float = CURVATURE_ETA) -> None:
        super().__init__()
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.num_steps = num_steps
        self.eta = eta

    def forward(
        self,
        phi0: Tensor,
        features: Tensor,
        *,
        lambda1: HyperParam,
        lambda2: HyperParam,
        mu: HyperParam,
        eps: HyperParam,
        dt: HyperParam,
        return_all: bool = False,
    ) -> Tensor | Sequence[Tensor]:
        return chan_vese_evolve(
            phi0, features,
            lambda1=lambda1, lambda2=lambda2, mu=mu, eps=eps, dt=dt,
            num_steps=self.num_steps, return_all=return_all, eta=self.eta,
        )

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, eta={self.eta}"
