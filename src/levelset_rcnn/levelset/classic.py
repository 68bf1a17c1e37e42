"""Classic (intensity-based) Chan-Vese segmentation, batched: scikit-image's algorithm, fast.

This is eq. 1-5 of the paper as :func:`skimage.segmentation.chan_vese` computes it (Getreuer's
semi-implicit scheme, IPOL 2012, eq. 22), for a whole batch of images at once. Per iteration,
with ``phi`` padded by edge replication, one-sided differences ``phi_x+ = phi(x+1) - phi(x)``,
``phi_x- = phi(x) - phi(x-1)``, central ones ``phi_x0 = (phi(x+1) - phi(x-1)) / 2`` (and the
same in ``y``), and ``eta = 1e-16``::

    C1 = 1 / sqrt(eta + phi_x+^2 + phi_y0^2)     C2 = 1 / sqrt(eta + phi_x-^2 + phi_y0^2)
    C3 = 1 / sqrt(eta + phi_x0^2 + phi_y+^2)     C4 = 1 / sqrt(eta + phi_x0^2 + phi_y-^2)
    K  = phi(x+1) C1 + phi(x-1) C2 + phi(y+1) C3 + phi(y-1) C4
    c1, c2 = mean of the image where phi > 0, where phi <= 0       (hard averages, eq. 2)
    delta  = eps / (eps^2 + phi^2)                                  (scikit-image: eps = 1)
    phi   <- (phi + dt delta (mu K - lambda1 (I - c1)^2 + lambda2 (I - c2)^2))
             / (1 + mu dt delta (C1 + C2 + C3 + C4))

and an image stops after the first iteration whose change ``sqrt(mean((phi_new - phi)^2))``
is at most ``tol`` (or after ``num_iters``); the segmentation is ``phi > 0``. The image is first
rescaled to [0, 1] (minus its minimum, divided by its maximum if that is not 0), and the
initial level sets are scikit-image's (``checkerboard``, ``disk``, ``small disk``).

How it is made fast (the scikit-image function is a loop of whole-array NumPy expressions,
one image at a time, plus an energy evaluation per iteration that only its extended output
uses):

* the whole iteration is one fused loop over the pixels of the batch (``torch.compile``: one
  C++/OpenMP kernel on the CPU, parallel over images, vectorised along rows); it reads the
  padded level set and the image once and writes the new level set into a second padded
  buffer (double buffering, no temporaries), and in the same pass reduces the change and the
  sums ``sum H``, ``sum I H`` that the next iteration's ``c1``, ``c2`` need;
* the update is divided through by ``delta`` (``phi (eps^2 + phi^2) + dt eps (...)`` over
  ``eps^2 + phi^2 + mu dt eps sum C``): the same quantity with one division instead of two;
  the data term is ``(alpha I + beta) I + gamma`` with per-image coefficients computed once
  per iteration from the region sums, not the averages' divisions inside the pixel loop;
* float32 unless the images are float64 (see below); images that have stopped leave the
  batch, so the others do not wait for them and they are not computed further.

Without a working ``torch.compile`` (no C++ compiler, say) the same step runs eagerly, on
chunks of a few images so that its temporaries stay in the cache: about 6x slower than the
compiled step, about 3x faster than scikit-image (``benchmarks/bench_chan_vese.py``). It runs
hundreds of small parallel operations per iteration, so on a loaded machine it needs
``OMP_WAIT_POLICY=PASSIVE`` (:mod:`levelset_rcnn.threads`; measured: 25x slower without).
Small problems run eagerly anyway, because compiling costs seconds (see ``compile`` below).

Precision: float32 gives the same segmentation as scikit-image's float64 computation (within
a few pixels in 10^5 on scikit-image's sample images, same iteration counts; the tests and the
benchmark measure it) provided the checkerboard is evaluated in float64 before rounding:
``sin(k pi)`` is about ``+1e-16 k`` in float64 but ``-1e-7 k`` when evaluated in float32, and
those signs on the checkerboard's zero lines decide which of two mirror partitions the
evolution settles in. scikit-image evaluates it in the image's precision, so its own float32
mode can return the complement of its float64 segmentation (seen on ``data.coffee`` and
``data.brick`` at 256 x 256); this module always evaluates the initial level sets in float64.

Multi-channel images ``(B, C, H, W)`` use the vector-valued model (Chan, Sandberg & Vese
2000): per-channel averages, data term averaged over the channels; with one channel it is
exactly scikit-image's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["chan_vese", "checkerboard_level_set", "disk_level_set"]

#: scikit-image's regulariser of the gradient magnitudes in ``C1 .. C4``.
ETA = 1e-16
#: With ``compile=None``, problems of at least this many pixel-iterations (``B H W num_iters``)
#: use the compiled step; smaller ones run eagerly. Compiling costs about 5 s on a 2-core
#: machine (tens of seconds the first time, with an empty inductor cache); the eager step
#: does about 1e8 pixel-iterations in 1.5 s there.
COMPILE_MIN_WORK = 1 << 28
#: The eager step runs on chunks of images of about this many pixels, so that its
#: temporaries stay in the cache (5-8x faster than whole-batch temporaries at 64 x 256^2).
EAGER_CHUNK_PIXELS = 1 << 18


def checkerboard_level_set(
    height: int, width: int, *, square_size: float = 5.0, device=None, dtype=torch.float32
) -> Tensor:
    """``sin(pi y / s) sin(pi x / s)``, scikit-image's default initialisation: ``(H, W)``.

    Evaluated in float64 and then rounded to ``dtype`` (see the module docstring: the signs
    of the near-zero values on ``y, x = 0, s, 2s, ...`` matter)."""
    sf = math.pi / square_size
    y = torch.arange(height, device=device, dtype=torch.float64) * sf
    x = torch.arange(width, device=device, dtype=torch.float64) * sf
    return (torch.sin(y)[:, None] * torch.sin(x)[None, :]).to(dtype)


def disk_level_set(height: int, width: int, *, radius: float | None = None,
                   scale: float | None = None, device=None, dtype=torch.float32) -> Tensor:
    """``(radius - d) / scale`` with ``d`` the distance to the centre pixel
    ``(int((H - 1) / 2), int((W - 1) / 2))``: ``(H, W)``, positive inside.

    The defaults are scikit-image's ``'disk'`` (``radius`` = the smaller of the centre's two
    coordinates, ``scale = radius``); its ``'small disk'`` is half that radius with
    ``scale = 3 * radius``. Evaluated in float64, then rounded to ``dtype``."""
    cy, cx = int((height - 1) / 2), int((width - 1) / 2)
    r = float(min(cx, cy)) if radius is None else float(radius)
    s = r if scale is None else float(scale)
    y = torch.arange(height, device=device, dtype=torch.float64) - cy
    x = torch.arange(width, device=device, dtype=torch.float64) - cx
    dist = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    return ((r - dist) / s).to(dtype)


def _initial_level_set(init, height: int, width: int, device, dtype) -> Tensor:
    if init is None or isinstance(init, str):
        kind = init or "checkerboard"
        if kind == "checkerboard":
            return checkerboard_level_set(height, width, device=device, dtype=dtype)
        if kind == "disk":
            return disk_level_set(height, width, device=device, dtype=dtype)
        if kind == "small disk":
            r = min(int((height - 1) / 2), int((width - 1) / 2)) / 2.0
            return disk_level_set(height, width, radius=r, scale=3.0 * r, device=device,
                                  dtype=dtype)
        raise ValueError(f"unknown init {kind!r}; use 'checkerboard', 'disk', 'small disk' "
                         "or a tensor")
    return torch.as_tensor(init).to(device=device, dtype=dtype)


def _normalise(images: Tensor) -> Tensor:
    """scikit-image's rescaling, per image: minus the minimum, then divided by the maximum
    unless that is 0 (a constant image becomes 0)."""
    flat = images.flatten(1)
    x = images - flat.amin(dim=1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return torch.where(hi != 0, x / torch.where(hi != 0, hi, torch.ones_like(hi)), x)


def _data_coefficients(n1: Tensor, s1: Tensor, s_tot: Tensor, n_pix: int, lambda1: float,
                       lambda2: float) -> Tensor:
    """The data term ``-lambda1 (I - c1)^2 + lambda2 (I - c2)^2`` as ``(alpha I + beta) I +
    gamma`` per image and channel, from the region sums: ``(B, C, 3)``.

    ``c1``, ``c2`` are the hard averages; scikit-image gives an empty region the average 0."""
    n1 = n1[:, None]
    n2 = n_pix - n1
    s2 = s_tot - s1
    c1 = torch.where(n1 > 0, s1 / n1, s1)
    c2 = torch.where(n2 > 0, s2 / n2, s2)
    alpha = torch.full_like(c1, lambda2 - lambda1)
    beta = 2.0 * (lambda1 * c1 - lambda2 * c2)
    gamma = lambda2 * c2 * c2 - lambda1 * c1 * c1
    return torch.stack([alpha, beta, gamma], dim=2)


def _cv_step(P: Tensor, Q: Tensor, img: Tensor, abc: Tensor, coef: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
    """One iteration for a batch. Reads ``P`` and writes the interior of ``Q``.

    Args:
        P, Q: ``(B, H + 2, W + 2)`` level sets padded by edge replication (``Q``'s border is
            left to :func:`_replicate_border`).
        img: ``(B, C, H, W)`` normalised images.
        abc: ``(B, C, 3)`` data-term coefficients (:func:`_data_coefficients`).
        coef: ``(4,)`` ``mu, dt eps, eps^2, mu dt eps``.

    Returns:
        ``sum((phi_new - phi)^2)`` ``(B,)``, and for the next iteration's averages the pixels
        with ``phi_new > 0`` ``(B,)`` and the image's sums over them ``(B, C)``.
    """
    mu, a, e2, b = (coef[i] for i in range(4))
    c = P[:, 1:-1, 1:-1]
    r, left = P[:, 1:-1, 2:], P[:, 1:-1, :-2]
    d, u = P[:, 2:, 1:-1], P[:, :-2, 1:-1]
    x0 = (r - left) * 0.5
    y0 = (d - u) * 0.5
    x0s = x0 * x0 + ETA
    y0s = y0 * y0 + ETA
    C1 = torch.rsqrt((r - c) ** 2 + y0s)
    C2 = torch.rsqrt((c - left) ** 2 + y0s)
    C3 = torch.rsqrt((d - c) ** 2 + x0s)
    C4 = torch.rsqrt((c - u) ** 2 + x0s)
    K = r * C1 + left * C2 + d * C3 + u * C4
    alpha, beta, gamma = (abc[:, :, k, None, None] for k in range(3))
    gray = img.shape[1] == 1  # static under torch.compile
    if gray:
        im = img[:, 0]
        data = (alpha[:, 0] * im + beta[:, 0]) * im + gamma[:, 0]
    else:
        data = ((alpha * img + beta) * img + gamma).mean(1)
    q = e2 + c * c  # eps / delta
    new = (c * q + a * (mu * K + data)) / (q + b * (C1 + C2 + C3 + C4))
    Q[:, 1:-1, 1:-1] = new
    # Read the new level set back through Q: the reductions then run in the stencil's loop
    # (compiled) instead of a second pass over a separate buffer.
    new = Q[:, 1:-1, 1:-1]
    change = ((new - c) ** 2).sum((1, 2))
    inside = (new > 0).to(new.dtype)
    s1 = ((img[:, 0] * inside).sum((1, 2))[:, None] if gray
          else (img * inside[:, None]).sum((2, 3)))
    return change, inside.sum((1, 2)), s1


def _replicate_border(Q: Tensor) -> None:
    Q[:, 0, 1:-1] = Q[:, 1, 1:-1]
    Q[:, -1, 1:-1] = Q[:, -2, 1:-1]
    Q[:, :, 0] = Q[:, :, 1]
    Q[:, :, -1] = Q[:, :, -2]


def _eager_step(P: Tensor, Q: Tensor, *rest: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_cv_step` without compiling, on chunks of :data:`EAGER_CHUNK_PIXELS`."""
    *per_image, coef = rest
    k = max(1, EAGER_CHUNK_PIXELS // (P.shape[1] * P.shape[2]))
    if P.shape[0] <= k or P.device.type != "cpu":
        return _cv_step(P, Q, *rest)
    parts = [_cv_step(P[i:i + k], Q[i:i + k], *(t[i:i + k] for t in per_image), coef)
             for i in range(0, P.shape[0], k)]
    return tuple(torch.cat(z) for z in zip(*parts, strict=True))


_compiled_step: Callable | None = None
_compile_failed = False


def _run_step(use_compile: bool, *args: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    global _compiled_step, _compile_failed
    if not use_compile or _compile_failed:
        return _eager_step(*args)
    if _compiled_step is None:
        _compiled_step = torch.compile(_cv_step, dynamic=True)
    try:
        return _compiled_step(*args)
    except Exception as exc:  # no C++ compiler, unsupported platform, ...
        _compile_failed = True
        warnings.warn(f"chan_vese: torch.compile failed ({type(exc).__name__}: {exc}); "
                      "running the eager step from now on (several times slower)",
                      RuntimeWarning, stacklevel=3)
        return _eager_step(*args)


@torch.no_grad()
def chan_vese(
    images: Tensor,
    *,
    mu: float = 0.25,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    tol: float = 1e-3,
    num_iters: int = 500,
    dt: float = 0.5,
    eps: float = 1.0,
    init: Tensor | str | None = "checkerboard",
    normalize: bool = True,
    dtype: torch.dtype | None = None,
    compile: bool | None = None,
    return_all: bool = False,
    return_num_iters: bool = False,
):
    """Segment a batch of images into two regions by classic Chan-Vese, as
    :func:`skimage.segmentation.chan_vese` does for one image (module docstring).

    Args:
        images: ``(B, H, W)`` grayscale or ``(B, C, H, W)``, any real dtype.
        mu, lambda1, lambda2, tol, dt: scikit-image's parameters, names and defaults
            (``tol`` and ``dt`` as there: the stopping tolerance on the RMS change of ``phi``
            per iteration, and the semi-implicit step).
        num_iters: the most iterations per image (scikit-image's ``max_num_iter``).
        eps: width of the Dirac ``eps / (eps^2 + phi^2)`` (scikit-image fixes it to 1).
        init: initial level set ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``, or
            ``"checkerboard"`` (default, as scikit-image), ``"disk"``, ``"small disk"``.
        normalize: rescale each image to [0, 1] first, as scikit-image does.
        dtype: compute in this floating dtype; default float64 for float64 images, float32
            otherwise (which gives scikit-image's float64 segmentation, module docstring).
        compile: run the fused, compiled step (``True``), the eager one (``False``), or
            (``None``) the compiled one for CPU problems of at least
            :data:`COMPILE_MIN_WORK` pixel-iterations (on a GPU the eager step runs unless
            ``compile=True``). A failing compile falls back to eager with a warning.
        return_all: return the list of the level sets after 0, 1, ..., ``num_iters``
            iterations instead of the final one (an image that has stopped keeps its final
            level set; memory: ``num_iters + 1`` batches).
        return_num_iters: also return the iterations each image ran, ``(B,)`` int64
            (scikit-image's ``len(energies)`` of its extended output).

    Returns:
        ``(phi, mask)``: the final level sets ``(B, 1, H, W)`` (or their list, with
        ``return_all``) and the segmentation ``phi > 0``, bool ``(B, 1, H, W)``; with
        ``return_num_iters``, ``(phi, mask, num_iters)``.
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, H, W) or (B, C, H, W), got {tuple(images.shape)}")
    if dtype is None:
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    B, _, height, width = images.shape
    device = images.device
    feats = images.to(dtype)
    if normalize:
        feats = _normalise(feats)
    feats = feats.contiguous()

    phi0 = _initial_level_set(init, height, width, device, dtype)
    if phi0.dim() == 4:
        phi0 = phi0.squeeze(1)
    if phi0.dim() == 2:
        phi0 = phi0.expand(B, height, width)
    if tuple(phi0.shape) != (B, height, width):
        raise ValueError(f"init of shape {tuple(phi0.shape)} does not match the images "
                         f"{(B, height, width)}")
    use_compile = (device.type == "cpu" and B * height * width * num_iters >= COMPILE_MIN_WORK
                   if compile is None else bool(compile))

    out = phi0.clone()  # final level sets, filled in as images stop
    iters = torch.full((B,), num_iters, dtype=torch.int64)
    history = [out[:, None].clone()] if return_all else None
    # The compiled step's inputs are plain tensors, not views: torch.compile guards on a
    # view's base, and a view in the first call would cost a recompile in the second.
    P = torch.empty((B, height + 2, width + 2), dtype=dtype, device=device)
    P[:, 1:-1, 1:-1] = phi0
    _replicate_border(P)
    Q = torch.empty_like(P)
    inside = (phi0 > 0).to(dtype)
    n1 = inside.sum((1, 2))
    s1 = (feats * inside[:, None]).sum((2, 3))
    s_tot = feats.sum((2, 3))
    coef = torch.tensor([mu, dt * eps, eps * eps, mu * dt * eps], dtype=dtype, device=device)
    active = torch.arange(B)  # original indices of the images still running
    n_pix = height * width
    for i in range(num_iters):
        abc = _data_coefficients(n1, s1, s_tot, n_pix, lambda1, lambda2)
        change, n1, s1 = _run_step(use_compile, P, Q, feats, abc, coef)
        _replicate_border(Q)
        P, Q = Q, P
        rms = [math.sqrt(max(v, 0.0) / n_pix) for v in change.tolist()]
        done = [k for k, v in enumerate(rms) if not v > tol]  # scikit-image: while phivar > tol
        if history is not None:
            snap = out.clone()
            snap[active.to(device)] = P[:, 1:-1, 1:-1]
            history.append(snap[:, None])
        if not done:
            continue
        done_t = torch.tensor(done, dtype=torch.int64)
        out[active[done_t].to(device)] = P[done_t.to(device), 1:-1, 1:-1]
        iters[active[done_t]] = i + 1
        keep = torch.ones(len(active), dtype=torch.bool)
        keep[done_t] = False
        if not keep.any():
            active = active[keep]
            break
        kd = keep.to(device)
        active = active[keep]
        P, feats, n1, s1, s_tot = (t[kd].contiguous() for t in (P, feats, n1, s1, s_tot))
        Q = torch.empty_like(P)
    if len(active):
        out[active.to(device)] = P[:, 1:-1, 1:-1]
    final = out[:, None]
    if history is not None:
        history.extend([history[-1]] * (num_iters + 1 - len(history)))
        result = (history, final > 0)
    else:
        result = (final, final > 0)
    return (*result, iters) if return_num_iters else result
