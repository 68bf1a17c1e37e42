"""float64 gradchecks of the paths the model runs, beyond test_chan_vese's small cases.

The model evolves C = 16 or 64 channels (the ``bmm`` branch of ``_project`` / ``_contract``;
test_chan_vese's gradchecks have C <= 4, the elementwise branch), many RoIs (CPU chunks of
``CPU_CHUNK_ELEMENTS`` pixels, forced here on small inputs by monkeypatching it), the implicit
upsampled path (:class:`UpsampledChanVese`), head outputs anywhere in (0, 2) (eps down to
0.02, dt up to 3) and level sets with exactly flat regions (a bilinearly upsampled truncated
TSDF, tanh plateaus).
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from levelset_rcnn.levelset import UpsampledChanVese, chan_vese_evolve, sobel
from levelset_rcnn.levelset.chan_vese import _FEW_CHANNELS, CURVATURE_STEP_BOUND

cv_module = importlib.import_module("levelset_rcnn.levelset.chan_vese")
D64 = torch.float64
BOUNDS = [CURVATURE_STEP_BOUND, None]


def _hyper(R, N, *, seed, eps=(0.2, 1.2), dt=(0.2, 1.2), mu=(0.2, 1.2)):
    g = torch.Generator().manual_seed(seed)

    def uniform(lo_hi, *shape):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=D64)

    return {"lambda1": uniform((0.2, 2.0), R), "lambda2": uniform((0.2, 2.0), R),
            "mu": uniform(mu, R), "eps": uniform(eps, R, N), "dt": uniform(dt, R, N)}


def _random(R, C, M, *, seed):
    g = torch.Generator().manual_seed(seed)
    phi0 = torch.tanh(torch.randn(R, 1, M, M, generator=g, dtype=D64))
    feats = torch.relu(torch.randn(R, C, M, M, generator=g, dtype=D64) + 0.5)
    return phi0, feats


def _core(step_bound=CURVATURE_STEP_BOUND, return_all=False):
    def fn(p, f, l1, l2, mu, eps, dt):
        return chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt,
                                return_all=return_all, step_bound=step_bound)
    return fn


def _leaves(phi0, feats, hp):
    return tuple(t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values()))


def _check(fn, leaves, *, slow, **tol):
    """gradcheck, twice: element by element (slow mode) for the inputs named by ``slow``
    (indices into ``leaves``; the others held fixed) against three random combinations of
    the outputs (one backward pass each instead of one per output pixel), and along random
    directions (fast mode) for all inputs and outputs together, which covers the
    many-element features at a few evaluations' cost."""
    fixed = list(leaves)
    outs = fn(*leaves)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    g = torch.Generator().manual_seed(0)
    # unit rows: a combination has the size (and finite-difference error) of one output
    proj = [F.normalize(torch.randn(3, o.numel(), generator=g, dtype=D64), dim=1)
            for o in outs]

    def partial(*xs):
        args = list(fixed)
        for i, x in zip(slow, xs, strict=True):
            args[i] = x
        res = fn(*args)
        res = res if isinstance(res, list | tuple) else [res]
        return sum(p @ r.reshape(-1) for p, r in zip(proj, res, strict=True))

    assert gradcheck(partial, tuple(leaves[i] for i in slow), **tol)
    assert gradcheck(fn, tuple(leaves), fast_mode=True, **tol)


ALL_BUT_FEATURES = (0, 2, 3, 4, 5, 6)


@pytest.mark.parametrize("step_bound", BOUNDS)
def test_bmm_branch_c64(step_bound):
    """C = 64 (> _FEW_CHANNELS: the bmm products and the low-rank gradient of F), every
    input at once."""
    C = 64
    assert C > _FEW_CHANNELS
    phi0, feats = _random(2, C, 4, seed=1)
    hp = _hyper(2, 2, seed=1)
    _check(_core(step_bound), _leaves(phi0, feats, hp), slow=ALL_BUT_FEATURES, eps=1e-6,
           atol=1e-7, rtol=1e-5)
    # and the features element by element, on one RoI of 2 x 2 pixels
    phi0, feats = _random(1, C, 2, seed=1)
    hp = _hyper(1, 2, seed=1)
    _check(_core(step_bound), _leaves(phi0, feats, hp), slow=(1,), eps=1e-6, atol=1e-7,
           rtol=1e-5)


@pytest.mark.parametrize("C", [3, 16])
@pytest.mark.parametrize("step_bound", BOUNDS)
def test_small_eps_and_large_dt(C, step_bound):
    """The head's range (0, 2) and beyond: eps in [0.02, 0.05] (a sharp Heaviside), dt and mu
    in [1.5, 3]; the curvature floor binds almost everywhere at these dt * mu."""
    phi0, feats = _random(2, C, 6, seed=2)
    hp = _hyper(2, 3, seed=2, eps=(0.02, 0.05), dt=(1.5, 3.0), mu=(1.5, 2.0))
    _check(_core(step_bound), _leaves(phi0, feats, hp), slow=ALL_BUT_FEATURES, eps=1e-7,
           atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("return_all", [False, True])
@pytest.mark.parametrize("C", [3, 16])
def test_chunked_cpu_path(monkeypatch, C, return_all):
    """Five RoIs in chunks of 2, 2 and 1 (the forward's whole-batch state is filled chunk by
    chunk, the backward reads it chunk by chunk)."""
    R, M = 5, 4
    monkeypatch.setattr(cv_module, "CPU_CHUNK_ELEMENTS", 2 * M * M)
    assert len(cv_module.roi_chunks(R, M * M, torch.device("cpu"))) == 3
    phi0, feats = _random(R, C, M, seed=3)
    hp = _hyper(R, 2, seed=3)
    _check(_core(return_all=return_all), _leaves(phi0, feats, hp), slow=ALL_BUT_FEATURES,
           eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("step_bound", BOUNDS)
def test_upsampled_path_chunked(monkeypatch, step_bound):
    """UpsampledChanVese (the model's implicit path) with three CPU chunks."""
    R, C, s, M = 5, 6, 2, 4
    monkeypatch.setattr(cv_module, "CPU_CHUNK_ELEMENTS", 2 * M * M)
    assert len(cv_module.roi_chunks(R, M * M, torch.device("cpu"))) == 3
    g = torch.Generator().manual_seed(4)
    f = torch.randn(R, C, s, s, generator=g, dtype=D64) + 1.0
    phi0 = F.interpolate(torch.tanh(torch.randn(R, 1, s, s, generator=g, dtype=D64)), (M, M),
                         mode="bilinear", align_corners=False)
    hp = _hyper(R, 2, seed=4)
    layer = UpsampledChanVese(2, step_bound=step_bound)

    def fn(p, f_, l1, l2, mu, eps, dt):
        return layer(p, f_, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)

    _check(fn, _leaves(phi0, f, hp), slow=ALL_BUT_FEATURES, eps=1e-6, atol=1e-7, rtol=1e-5)


def _flat_level_sets():
    """Two 16 x 16 level sets with exactly flat regions: a truncated TSDF of a disc at 8 x 8
    upsampled bilinearly (x2: dyadic weights, so its outer plateau is exactly -1), and a
    tanh of a disc's signed distance that saturates to exactly +-1.0 in float64."""
    s, M = 8, 16
    ax = torch.arange(s, dtype=D64)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    tsdf = ((2.3 - torch.sqrt((x - 3.5) ** 2 + (y - 3.4) ** 2)) / 0.9).clamp(-1.0, 1.0)
    up = F.interpolate(tsdf.view(1, 1, s, s), (M, M), mode="bilinear", align_corners=False)
    ax = torch.arange(M, dtype=D64)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    plateau = torch.tanh(12.0 * (3.6 - torch.sqrt((x - 5.6) ** 2 + (y - 5.3) ** 2)))
    phi0 = torch.cat([up, plateau.view(1, 1, M, M)])
    gx, gy = sobel(phi0)
    flat = ((gx == 0) & (gy == 0)).sum((1, 2, 3))
    assert flat.tolist() == [16, 132]  # pixels where grad phi vanishes exactly
    return phi0


@pytest.mark.parametrize(("hyper", "step_bound"), [
    ("initial", None), ("initial", CURVATURE_STEP_BOUND), ("large", None),
    ("large", CURVATURE_STEP_BOUND),
])
@pytest.mark.parametrize("level_set", [0, 1], ids=["upsampled_tsdf", "tanh"])
def test_flat_level_sets(level_set, hyper, step_bound):
    """Where grad phi vanishes, the curvature's normal g / sqrt(|g|^2 + eta^2) (eta = 1e-4)
    has a Jacobian of order 1 / eta and curves away from its linearisation within
    |delta g| ~ eta: a finite-difference step of 1e-6 moves |g| by ~1e-6 and leaves the
    region where the function is smooth on the scale of the step (the central difference's
    error ~ h^2 / eta^3 is of the order of the derivative itself), so the numerical Jacobian
    needs a step of 1e-9 (measured at the initial hyperparameters without the floor: error
    1.5e-6 at a step of 1e-6, 2e-7 at 1e-9, against entries of ~1). Its float64 rounding
    error, ~1e-16 / 1e-9 times the Jacobian's size, is what atol allows: at the large
    hyperparameters without the floor the entries reach ~6e2 and the error at 1e-9 is
    ~5e-5. (With the floor the scale is max(eta, tau): entries stay ~5 and a step of 1e-6
    is accurate to 3e-9.)"""
    phi0 = _flat_level_sets()[level_set : level_set + 1]
    R, M = phi0.shape[0], phi0.shape[-1]
    g = torch.Generator().manual_seed(5)
    feats = torch.relu(torch.randn(R, 16, M, M, generator=g, dtype=D64) + 0.5)
    if hyper == "initial":  # DEFAULT_INIT of the hyperparameter head
        hp = {"lambda1": torch.ones(R, dtype=D64), "lambda2": torch.ones(R, dtype=D64),
              "mu": torch.full((R,), 0.2, dtype=D64), "eps": torch.full((R, 2), 0.1, dtype=D64),
              "dt": torch.full((R, 2), 0.05, dtype=D64)}
    else:
        hp = _hyper(R, 2, seed=5, eps=(0.5, 2.0), dt=(1.0, 2.0), mu=(1.0, 2.0))
    _check(_core(step_bound), _leaves(phi0, feats, hp), slow=(0,), eps=1e-9,
           atol=1e-6 if hyper == "initial" else 1e-4, rtol=1e-4)
