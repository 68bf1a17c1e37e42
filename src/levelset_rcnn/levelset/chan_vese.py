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
as one low-rank product ``sum_k a_k (x) b_k`` plus one in-place ``F * g`` term.

What the forward pass keeps for the backward pass is, besides the inputs, the level sets
``phi_1 .. phi_{N-1}`` and ``q = ||F - m||^2`` (``N`` maps of the size of ``phi``) and per
step the vectors ``c1, c2, w`` and the area ``a``: never anything of the size of ``F``, and
not the speed ``V`` of each step, which the backward pass recomputes inside a read of ``F``
it makes anyway (``F.w`` and ``F.g_fH`` as one two-row product), nor ``H``, which it writes
straight into the buffer of the low-rank gradient of ``F``. On the CPU the RoI chunks write
their state into whole-batch tensors allocated before the first chunk's temporaries, so the
kept state does not pin freed heap blocks. Only the level sets asked for are outputs
(``phi_N``, or all with ``return_all``); gradients of unused ones are never materialised.
The backward pass writes the gradient of ``phi_0`` into the storage of ``q`` (each RoI chunk
once its steps are done; a second backward pass, with ``retain_graph``, recomputes ``q``),
accumulates the gradient of ``q`` in place in a row of the low-rank factors, and makes a
step's maps in place where the same operations in the same order allow it (bit for bit the
same values): its working set beyond the gradient of ``F`` is the kept state and a few maps
of one chunk.

Numerical choices (all exact identities or documented regularisers):

* ``||F||^2`` and ``F.w`` are evaluated on features centred by their per-RoI mean ``m`` (a
  constant): the energy is invariant to that shift, and it avoids the float32 cancellation of
  ``||F||^2 - 2 F.c + ||c||^2`` for features with a large common offset (ReLU outputs).
* Region means divide by ``sum H + kappa`` (``kappa = 1e-4`` pixel): an empty region gives a
  zero mean and finite gradients instead of 0/0.
* The curvature uses ``CURVATURE_ETA`` (see :mod:`.functional`) and, per step, the floor
  ``tau = dt mu / (pi B)`` with ``B =`` :data:`CURVATURE_STEP_BOUND` under ``|grad phi|``
  (below).
* The evolving state (``phi``, ``c1``, ``c2``) is float32 (float64 if the inputs are float64),
  also under autocast: half-precision features are upcast on entry.

Stiffness at flat level sets, and the curvature floor
-----------------------------------------------------
Where ``grad phi`` vanishes (a truncated TSDF's plateaus; all of an untrained TSDF head's
nearly flat ``phi_0``) the normal ``g / sqrt(|g|^2 + eta^2)`` has a Jacobian of ``1 / eta =
1e4``, and the explicit step (eq. 7) turns the curvature term into a diffusion of number
``D = dt mu delta / |grad phi|_eta``. An explicit diffusion step amplifies perturbations once
``D`` exceeds 2 (the Sobel Laplacian's spectrum is in ``[-1, 0]``), so with ``delta`` up to
``1/pi`` the layer is ill-conditioned as soon as ``dt mu / (pi eta) > 2``, i.e. ``dt mu >
6e-4``: a larger ``eta`` cannot fix this over the head's range (``dt mu`` up to 4 would need
``eta ~ 0.6``, ten times the TSDF's own slope of 1/12 per pixel), and clamping ``dt`` would
change every step. Instead the layer divides by ``max(|grad phi|_eta, tau)`` with ``tau = dt
mu / (2 pi)``: that keeps ``D <= 2`` everywhere, for any hyperparameters, and is eq. 8 as
printed wherever ``|grad phi|_eta >= tau``, i.e. wherever the printed explicit step is
stable; it binds only where it would amplify. Forward and backward share the definition
(:func:`curvature_floor`; the backward differentiates it with respect to ``phi``, ``mu`` and
``dt``), and ``step_bound=None`` restores eq. 8 as printed.

Measured (float64, max ``|d phi_N / d phi_0|`` seen through four random cotangents; the 28 x
28 disc TSDF with plateaus upsampled to 112 x 112, tests/levelset/test_stiffness.py), before
-> after: curvature alone (constant features) 1.2 -> 1.0 at DEFAULT_INIT (lambda 1, mu 0.2,
eps 0.1, dt 0.05), up to 8e11 -> 2.1 over lambda, mu, dt in {small, 2}, eps in {0.02 .. 2};
with features 1.8 -> 1.8 at DEFAULT_INIT, up to 1e7 -> 244. What remains is the data term's
own stiffness ``dt |V| |delta'|`` with ``|delta'| <= 0.21 / eps`` (eq. 4's Dirac, also with
``mu -> 0``): 244 at eps = 0.02, at most 49 for eps >= 0.1. On the demo's model at
initialisation (nearly flat phi_0, |grad phi| ~ 5e-3 px^-1 and less, inside the Dirac band)
eq. 8 as printed is already stiff at DEFAULT_INIT: 293 -> 4.0.

At DEFAULT_INIT ``tau = 1.6e-3`` px^-1 (1/50 of the TSDF slope): on a TSDF-like phi_0 the
floor binds only at the plateaus' rims, where delta is 1/100 of its peak, and moves phi_N by
at most 5e-5 (no mask pixel changes); on the nearly flat phi_0 of an untrained head it binds
on most pixels and moves phi_N by up to 4e-3 (about 1% of mask pixels flip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .functional import CURVATURE_ETA, curvature, dirac, heaviside

__all__ = ["ChanVese", "chan_vese_evolve", "CURVATURE_STEP_BOUND", "REGION_KAPPA",
           "curvature_floor", "level_set_speed", "level_set_step", "region_terms", "roi_chunks"]

#: Regulariser (in pixels) of the region areas in eq. 9.
REGION_KAPPA = 1e-4
#: On the CPU, RoIs are processed in chunks of about this many pixels (see roi_chunks).
CPU_CHUNK_ELEMENTS = 1 << 17
#: Smallest Heaviside width used; smaller (or zero) eps is raised to it.
EPS_FLOOR = 1e-12
#: Bound on the explicit curvature step's diffusion number (see the module docstring and
#: :func:`curvature_floor`); ``None`` in the layers' ``step_bound`` gives eq. 8 as printed.
CURVATURE_STEP_BOUND = 2.0

HyperParam = Tensor | float


def _step_terms(phi: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
    return heaviside(phi, e), dirac(phi, e)


def curvature_floor(
    mu: Tensor, dt: Tensor, bound: float | None, eta: float = CURVATURE_ETA,
) -> Tensor | None:
    """The floor ``tau = dt mu / (pi bound)`` of the curvature's ``|grad phi|`` for one step
    (see the module docstring), ``None`` when ``bound`` is ``None`` (eq. 8 as printed).

    With it, the curvature part of a step, ``dt delta mu K``, has a Jacobian of at most
    ``bound`` times that of the Sobel Laplacian (``delta <= 1/pi``): the explicit step stays
    stable however large ``dt mu`` is. It is raised to ``eta / 2`` at least, where it never
    binds (``|grad phi|_eta >= eta``), so ``dt mu -> 0`` gives finite gradients.

    Args:
        mu, dt: ``(R, 1)`` (or broadcastable) length weight and step size.
    """
    if bound is None:
        return None
    return (dt * mu * (1.0 / (math.pi * bound))).clamp_min(0.5 * eta)


def _curvature(phi: Tensor, mu: Tensor, dt: Tensor, height: int, width: int, eta: float,
               bound: float | None) -> Tensor:
    """Curvature of flattened ``phi (R, P)`` with the step's floor: ``(R, P)``."""
    R, P = phi.shape
    floor = curvature_floor(mu, dt, bound, eta)
    return curvature(phi.view(R, 1, height, width), eta,
                     None if floor is None else floor.view(R, 1, 1, 1)).view(R, P)


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
    const = _region_const(c1m, c2m, l1, l2)
    return c1m, c2m, w, const


def _region_const(c1m: Tensor, c2m: Tensor, l1: Tensor, l2: Tensor) -> Tensor:
    return l2 * c2m.square().sum(1, keepdim=True) - l1 * c1m.square().sum(1, keepdim=True)


def level_set_speed(
    K: Tensor, q: Tensor, fw: Tensor, const: Tensor, l1: Tensor, l2: Tensor, mu: Tensor,
) -> Tensor:
    """The speed ``V = mu K + (l2 - l1) ||F - m||^2 + 2 (F - m).w + const`` of eq. 8 (see
    :func:`level_set_step`); the backward pass recomputes it with this same expression."""
    return mu * K + ((l2 - l1) * q + 2.0 * fw + const)


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
    V = level_set_speed(K, q, fw, const, l1, l2, mu)
    return phi + dt * d * V, V


def _level_set_step_(
    phi: Tensor, d: Tensor, K: Tensor, q: Tensor, fw: Tensor, const: Tensor, l1: Tensor,
    l2: Tensor, mu: Tensor, dt: Tensor, out: Tensor | None = None,
) -> Tensor:
    """``phi_next`` of :func:`level_set_step`, bit for bit (the same operations in the same
    order), made in place: it consumes ``K``, and writes into ``out`` if given."""
    V = torch.mul(q, l2 - l1).add_(fw, alpha=2.0).add_(const).add_(K.mul_(mu))
    return torch.add(phi, V.mul_(torch.mul(dt, d)), out=out)


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
    """``sum_p F[r, c, p] x[r, p]``: ``(R, C)``. A batched matrix-vector product, written as
    ``x^T F^T`` (on the CPU several times faster than ``bmm(F, x)``, which MKL runs as a slow
    batched gemv); for a few channels (classic mode) a fused multiply-sum is faster still."""
    if Ff.shape[1] <= _FEW_CHANNELS:
        return (Ff * x.unsqueeze(1)).sum(-1)
    return torch.bmm(x.unsqueeze(1), Ff.transpose(1, 2)).squeeze(1)


def _contract(Ff: Tensor, w: Tensor) -> Tensor:
    """``sum_c F[r, c, p] w[r, c]``: ``(R, P)``."""
    if Ff.shape[1] <= _FEW_CHANNELS:
        return (Ff * w.unsqueeze(-1)).sum(1)
    return torch.bmm(w.unsqueeze(1), Ff).squeeze(1)


def _contract_pair(Ff: Tensor, w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(F.w, F.v)``, each ``(R, P)``; with ``bmm`` in one read of ``F``."""
    if Ff.shape[1] <= _FEW_CHANNELS:
        return _contract(Ff, w), _contract(Ff, v)
    both = torch.bmm(torch.stack((w, v), 1), Ff)
    return both[:, 0], both[:, 1]


_FEW_CHANNELS = 4


def _centred_sq_norm(Ff: Tensor, m: Tensor, out: Tensor | None = None) -> Tensor:
    """``||F - m||^2`` over channels: ``(R, P)`` (written into ``out`` if given). On the CPU
    one RoI at a time, so the temporary ``F - m`` is cache-sized (a chunk-sized temporary
    costs ten times more, mostly in page faults); on a GPU in one kernel sequence."""
    if Ff.device.type != "cpu":
        if out is None:
            return (Ff - m.unsqueeze(-1)).square_().sum(1)
        return torch.sum((Ff - m.unsqueeze(-1)).square_(), dim=1, out=out)
    q = Ff.new_empty(Ff.shape[0], Ff.shape[2]) if out is None else out
    for r in range(Ff.shape[0]):
        torch.sum((Ff[r] - m[r].unsqueeze(-1)).square_(), dim=0, out=q[r])
    return q


#: What the forward pass keeps for the backward pass, besides the inputs and the level sets
#: ``phi_1 .. phi_{N-1}``: ``q = ||F - m||^2 (R, P)`` and per-RoI vectors.
_STATE_KEYS = ("q", "m", "c1m", "c2m", "a", "w")
_SAVED_KEYS = _STATE_KEYS[1:]  # q is kept apart (see _ChanVeseFunction.forward)
_PER_STEP = ("c1m", "c2m", "a", "w")  # stacked (N, R, ...)


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
    bound: float | None,
    record: bool,
    keep_all: bool,
    out_phis: Sequence[Tensor] | None = None,
    out_q: Tensor | None = None,
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Run the N steps on flattened tensors: ``phi (R, P)``, ``Ff (R, C, P)``.

    Returns the level sets (all of them when ``keep_all`` or ``record``; else only the last)
    and, when ``record``, the per-chunk state of :data:`_STATE_KEYS`: ``q (R, P)``,
    ``m (R, C)``, and stacked per step ``c1m, c2m, w (N, R, C)``, ``a (N, R)``. The speed
    ``V`` is not kept: the backward pass recomputes it within a read of ``F`` it makes
    anyway. ``out_phis`` (``phi_1 .. phi_N``) and ``out_q``, if given, receive the level
    sets and ``q`` (views of the whole batch's tensors: no per-chunk copies).
    """
    R, C, P = Ff.shape
    height = P // width
    num_steps = eps.shape[1]
    sF = Ff.sum(-1)  # (R, C)
    m = sF / P  # per-RoI channel means: a constant shift, see the module docstring
    # ||F - m||^2: (R, P); called with two arguments unless written in place (the export
    # substitutes a vectorised two-argument version)
    q = _centred_sq_norm(Ff, m) if out_q is None else _centred_sq_norm(Ff, m, out=out_q)
    l1, l2, mu_ = lambda1.unsqueeze(-1), lambda2.unsqueeze(-1), mu.unsqueeze(-1)
    phis = [phi]
    small: dict[str, list[Tensor]] = {"c1m": [], "c2m": [], "a": [], "w": []}
    for n in range(num_steps):
        e, t = eps[:, n : n + 1], dt[:, n : n + 1]
        H, d = _step_terms(phi, e)
        a = H.sum(-1)  # inside area (R,)
        fh = _project(Ff, H) - m * a.unsqueeze(-1)  # sum_x (F - m) H: (R, C)
        del H
        c1m, c2m, w, const = region_terms(fh, a, m, P, l1, l2)
        Fw = _contract(Ff, w) - (w * m).sum(-1, keepdim=True)  # (F - m).w: (R, P)
        K = _curvature(phi, mu_, t, height, width, eta, bound)
        phi = _level_set_step_(phi, d, K, q, Fw, const, l1, l2, mu_, t,
                               out=None if out_phis is None else out_phis[n])
        del K, Fw, d
        if record:
            for key, val in (("c1m", c1m), ("c2m", c2m), ("a", a), ("w", w)):
                small[key].append(val)
        if record or keep_all:
            phis.append(phi)
        else:
            phis = [phi]
    if not record:
        return phis, {}
    return phis, {"q": q, "m": m, **{k: torch.stack(v) for k, v in small.items()}}


def _curvature_vjp(
    phi: Tensor, mu: Tensor, dt: Tensor, cotangent: Tensor, *, height: int, width: int,
    eta: float, bound: float | None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``K`` (recomputed) and the vector-Jacobian products of ``cotangent . K`` with respect
    to ``phi (R, P)`` and, through the floor, ``mu, dt (R, 1)`` (``None`` without a floor).
    The same :func:`_curvature` as the forward pass, differentiated by autograd."""
    with torch.enable_grad():
        phi_r = phi.detach().requires_grad_(True)
        leaves = [phi_r]
        if bound is not None:
            mu, dt = mu.detach().requires_grad_(True), dt.detach().requires_grad_(True)
            leaves += [mu, dt]
        K = _curvature(phi_r, mu, dt, height, width, eta, bound)
        grads = torch.autograd.grad(K, leaves, cotangent)
    if bound is None:
        return K.detach(), grads[0], None, None
    return K.detach(), grads[0], grads[1][:, 0], grads[2][:, 0]


def _backward_chunk(
    g_out: Sequence[Tensor | None],
    phis: Sequence[Tensor],
    Ff: Tensor,
    lambda1: Tensor,
    lambda2: Tensor,
    mu: Tensor,
    eps: Tensor,
    dt: Tensor,
    state: dict[str, Tensor],
    *,
    width: int,
    eta: float,
    bound: float | None,
    g_F_out: Tensor | None,
    g_phi_out: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """Gradients of one RoI chunk; writes the gradient of ``Ff`` into ``g_F_out`` if given.

    ``g_out[n]`` is the incoming gradient of ``phi_n`` (``None``: zero; ``n = 1 .. N``),
    ``phis`` the level sets ``phi_0 .. phi_{N-1}``. With ``g_phi_out`` (``(R, P)``, may be
    the storage of ``state["q"]``, which is dead once the steps are done) the gradient of
    ``phi_0`` is written there and returned. The maps of a step are made in place where the
    same operations in the same order allow it (the same values bit for bit), so that fewer
    of them are alive at once.
    """
    R, C, P = Ff.shape
    height = P // width
    num_steps = eps.shape[1]
    c1s, c2s, As, Ws = (state[k] for k in ("c1m", "c2m", "a", "w"))
    q, m = state["q"], state["m"]
    l1, l2, mu_ = lambda1.unsqueeze(-1), lambda2.unsqueeze(-1), mu.unsqueeze(-1)

    g_l1 = torch.zeros_like(lambda1)
    g_l2 = torch.zeros_like(lambda1)
    g_mu = torch.zeros_like(lambda1)
    g_eps = torch.zeros_like(eps)
    g_dt = torch.zeros_like(dt)
    g_sF = torch.zeros_like(m)
    if g_F_out is not None:
        # gradient of F = sum_k left[:, :, k] (x) right[:, k] + 2 F * g_q, filled step by step;
        # the last row of right accumulates g_V = sum over steps of dL/dV, and becomes
        # g_q = (l2 - l1) g_V (the gradient of q) in place
        left = Ff.new_empty(R, C, 2 * num_steps + 2)
        right = Ff.new_empty(R, 2 * num_steps + 2, P)
        g_V = right[:, 2 * num_steps + 1]
        g_V.zero_()

    g = g_out[num_steps]
    if g is None:
        g = torch.zeros_like(q)
    for n in reversed(range(num_steps)):
        phi = phis[n]
        e, t = eps[:, n : n + 1], dt[:, n : n + 1]
        c1m, c2m, a, w = c1s[n], c2s[n], As[n], Ws[n]
        d = dirac(phi, e)
        # phi_next = phi + t * d * V
        gV = torch.mul(g, t).mul_(d)
        # V = mu K + D, K = curvature(phi) with the floor tau(mu, t); first, while few other
        # maps are alive (the autograd recomputation is the step's largest working set)
        K, g_phi_K, g_mu_K, g_t_K = _curvature_vjp(
            phi, mu_, t, gV * mu_, height=height, width=width, eta=eta, bound=bound)
        g_mu += (gV * K).sum(-1)
        # D = (l2 - l1) q + 2 (F - m).w + l2 |c2 - m|^2 - l1 |c1 - m|^2
        s = gV.sum(-1, keepdim=True)
        gVq = (gV * q).sum(-1)
        c1sq, c2sq = c1m.square().sum(1, keepdim=True), c2m.square().sum(1, keepdim=True)
        g_l2 += gVq + (s * c2sq).squeeze(-1)
        g_l1 -= gVq + (s * c1sq).squeeze(-1)
        # gy and H are factors of the gradient of F: made in place in its buffer
        if g_F_out is not None:
            g_V += gV
            gy = torch.mul(gV, 2.0, out=right[:, 2 * n])
        else:
            gy = gV.mul_(2.0)
        del gV
        g_w = _project(Ff, gy) - m * gy.sum(-1, keepdim=True)
        del gy
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
        # One read of F gives both F.w (for the speed V, not kept by the forward pass) and
        # F.g_fH (for the gradient of H).
        Fw, gH = _contract_pair(Ff, w, g_fH)
        # V = mu K + ((l2 - l1) q + 2 fw + const), as level_set_speed, made in place
        V = torch.mul(q, l2 - l1)
        V.add_(Fw.sub_((w * m).sum(-1, keepdim=True)), alpha=2.0)  # + 2 (F - m).w
        V.add_(_region_const(c1m, c2m, l1, l2)).add_(K.mul_(mu_))
        del K, Fw
        g_dt[:, n] = (g * d * V).sum(-1)
        gd = V.mul_(g * t)  # g * t * V
        del V
        u = phi / e  # d = s / pi with s = 1 / (1 + u^2); dd/dphi = -2 u s d / e
        ud_e = torch.mul(u, u).add_(1.0).reciprocal_().mul_(torch.mul(u, d)).div_(e)
        g_phi = torch.mul(gd, 2.0).mul_(ud_e)
        g_phi = torch.sub(g, g_phi, out=g_phi).add_(g_phi_K)  # g - 2 gd ud_e + g_phi_K
        del g_phi_K
        g_e = 2.0 * gd.mul_(ud_e).mul_(u).sum(-1)
        del gd, ud_e
        gH += g_a
        g_phi += torch.div(d, e).mul_(gH)  # gH * (d / e)
        g_e -= u.mul_(d).div_(e).mul_(gH).sum(-1)  # gH * (d u / e)
        del u, gH
        g_eps[:, n] = g_e
        if g_mu_K is not None:
            g_mu += g_mu_K
            g_dt[:, n] += g_t_K
        if g_F_out is not None:
            left[:, :, 2 * n] = w
            left[:, :, 2 * n + 1] = g_fH
            heaviside(phi, e, out=right[:, 2 * n + 1])
        del d
        if g_out[n] is None:
            g = g_phi
        else:
            g = g_phi.add_(g_out[n])
        del g_phi
    if g_phi_out is not None:
        g = g_phi_out.copy_(g)

    if g_F_out is not None:
        g_q = g_V.mul_(l2 - l1)
        left[:, :, 2 * num_steps] = g_sF
        right[:, 2 * num_steps] = 1.0
        left[:, :, 2 * num_steps + 1] = -2.0 * m
        torch.bmm(left, right, out=g_F_out)  # (R, C, P)
        g_F_out.addcmul_(Ff, g_q.unsqueeze(1), value=2.0)
    return g, g_l1, g_l2, g_mu, g_eps, g_dt


class _ChanVeseFunction(torch.autograd.Function):
    """Fused forward and hand-written backward of N Chan-Vese steps; see module docstring.

    Outputs ``phi_1, ..., phi_N`` (``keep_all``) or ``phi_N`` alone, each ``(R, P)``. Saved
    for the backward pass, besides the inputs: the level sets ``phi_1 .. phi_{N-1}`` and the
    state of :data:`_STATE_KEYS`, nothing of the size of ``F``.
    """

    @staticmethod
    def forward(ctx, phi0, Ff, lambda1, lambda2, mu, eps, dt, width, eta, bound, keep_all):  # noqa: D102
        R, C, P = Ff.shape
        N = eps.shape[1]
        chunks = roi_chunks(R, P, Ff.device)
        ctx.set_materialize_grads(False)
        phis: list[Tensor] = []
        state: dict[str, Tensor] = {}
        if len(chunks) > 1:
            # Several chunks write into whole-batch tensors allocated before the first chunk's
            # temporaries, so that what is kept does not pin the allocator's freed blocks.
            phis = [Ff.new_empty(R, P) for _ in range(N)]
            state = {"q": Ff.new_empty(R, P), "m": Ff.new_empty(R, C), "a": Ff.new_empty(N, R),
                     **{k: Ff.new_empty(N, R, C) for k in ("c1m", "c2m", "w")}}
        for sl in chunks:
            several = len(chunks) > 1
            steps, ex = _forward_chunk(
                phi0[sl], Ff[sl], lambda1[sl], lambda2[sl], mu[sl], eps[sl], dt[sl],
                width=width, eta=eta, bound=bound, record=True, keep_all=True,
                out_phis=[buf[sl] for buf in phis] if several else None,
                out_q=state["q"][sl] if several else None,
            )
            if not several:
                phis, state = steps[1:], ex
                break
            for k, val in ex.items():
                if k == "q":
                    continue  # written in place, as the level sets
                if k in _PER_STEP:
                    state[k][:, sl] = val
                else:
                    state[k][sl] = val
            del steps, ex
        # q is kept as an attribute, not a saved tensor: the backward pass writes the gradient
        # of phi_0 into its storage once it is dead (and recomputes q if called again)
        ctx.q = state.pop("q")
        ctx.save_for_backward(phi0, Ff, lambda1, lambda2, mu, eps, dt,
                              *(state[k] for k in _SAVED_KEYS), *phis[:-1])
        ctx.width, ctx.eta, ctx.bound, ctx.keep_all = width, eta, bound, keep_all
        return tuple(phis if keep_all else phis[-1:])

    @staticmethod
    def backward(ctx, *grads):  # noqa: D102
        phi0, Ff, lambda1, lambda2, mu, eps, dt, *rest = ctx.saved_tensors
        ns = len(_SAVED_KEYS)
        state, iterates = dict(zip(_SAVED_KEYS, rest[:ns], strict=True)), rest[ns:]
        R, C, P = Ff.shape
        N = eps.shape[1]
        g_out: list[Tensor | None] = [None] * (N + 1)  # by step; phi_0 is not an output
        if ctx.keep_all:
            g_out[1:] = grads
        else:
            g_out[N] = grads[0]
        # q's storage becomes the gradient of phi_0 (chunk by chunk, once the chunk's steps
        # are done), so q is consumed: a second backward pass (retain_graph) recomputes it.
        q, ctx.q = ctx.q, None
        if q is None:
            q = _centred_sq_norm(Ff, state["m"])
        state["q"] = q
        g_F = torch.empty_like(Ff) if ctx.needs_input_grad[1] else None
        chunks = roi_chunks(R, P, Ff.device)
        if len(chunks) > 1:
            results = [q] + [t.new_empty(t.shape) for t in (lambda1, lambda2, mu, eps, dt)]
        for sl in chunks:
            parts = _backward_chunk(
                [None if g is None else g[sl] for g in g_out],
                [phi0[sl], *(it[sl] for it in iterates)], Ff[sl],
                lambda1[sl], lambda2[sl], mu[sl], eps[sl], dt[sl],
                {k: v[:, sl] if k in _PER_STEP else v[sl] for k, v in state.items()},
                width=ctx.width, eta=ctx.eta, bound=ctx.bound,
                g_F_out=None if g_F is None else g_F[sl], g_phi_out=q[sl],
            )
            if len(chunks) == 1:
                results = list(parts)
                break
            for res, part in zip(results[1:], parts[1:], strict=True):
                res[sl] = part
            del parts
        del state, q
        g_phi, g_l1, g_l2, g_mu, g_eps, g_dt = results
        return g_phi, g_F, g_l1, g_l2, g_mu, g_eps, g_dt, None, None, None, None


def _evolve_no_grad(phi0, Ff, l1, l2, mu, eps, dt, *, width, eta, bound, keep_all):
    R, _, P = Ff.shape
    runs = [
        _forward_chunk(
            phi0[sl], Ff[sl], l1[sl], l2[sl], mu[sl], eps[sl], dt[sl],
            width=width, eta=eta, bound=bound, record=False, keep_all=keep_all,
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
    step_bound: float | None = CURVATURE_STEP_BOUND,
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
        step_bound: bound on the curvature step's diffusion number (:func:`curvature_floor`);
            ``None``: eq. 8 as printed, whatever ``dt mu`` is.

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
    if step_bound is not None and not step_bound > 0:
        raise ValueError(f"step_bound must be positive or None, got {step_bound}")
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
            outs = _ChanVeseFunction.apply(*inputs, width, eta, step_bound, return_all)
            phis = [phi_flat, *outs] if return_all else list(outs)
        else:
            phis = _evolve_no_grad(*inputs, width=width, eta=eta, bound=step_bound,
                                   keep_all=return_all)
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

    def __init__(self, num_steps: int = 3, *, eta: float = CURVATURE_ETA,
                 step_bound: float | None = CURVATURE_STEP_BOUND) -> None:
        super().__init__()
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.num_steps = num_steps
        self.eta = eta
        self.step_bound = step_bound

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
            step_bound=self.step_bound,
        )

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, eta={self.eta}, step_bound={self.step_bound}"
