import importlib

import pytest
import torch

from levelset_rcnn.levelset import ChanVese, chan_vese_evolve
from levelset_rcnn.levelset.chan_vese import CURVATURE_STEP_BOUND
from levelset_rcnn.levelset.reference import ref_chan_vese

#: The layer's default (the curvature floor) and eq. 8 as printed.
BOUNDS = [CURVATURE_STEP_BOUND, None]


def _inputs(R=3, C=4, M=12, N=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi0 = torch.tanh(torch.randn(R, 1, M, M, generator=g, dtype=dtype))
    feats = torch.randn(R, C, M, M, generator=g, dtype=dtype) + 0.5
    hp = {
        "lambda1": 0.2 + torch.rand(R, generator=g, dtype=dtype),
        "lambda2": 0.2 + torch.rand(R, generator=g, dtype=dtype),
        "mu": 0.2 + torch.rand(R, generator=g, dtype=dtype),
        "eps": 0.2 + torch.rand(R, N, generator=g, dtype=dtype),
        "dt": 0.2 + torch.rand(R, N, generator=g, dtype=dtype),
    }
    return phi0, feats, hp


@pytest.mark.parametrize("step_bound", BOUNDS)
@pytest.mark.parametrize("return_all", [False, True])
def test_matches_line_by_line_reference_float64(return_all, step_bound):
    phi0, feats, hp = _inputs(R=4, C=5, M=16, N=3)
    ours = chan_vese_evolve(phi0, feats, **hp, return_all=return_all, step_bound=step_bound)
    ref = ref_chan_vese(phi0, feats, **hp, return_all=return_all, step_bound=step_bound)
    if not return_all:
        ours, ref = [ours], [ref]
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == torch.float64 and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_module_equals_functional_and_evolves():
    phi0, feats, hp = _inputs()
    out = ChanVese(num_steps=3)(phi0, feats, **hp)
    torch.testing.assert_close(out, chan_vese_evolve(phi0, feats, **hp))
    assert not torch.allclose(out, phi0)


@pytest.mark.parametrize("name", ["phi0", "features", "lambda1", "lambda2", "mu", "eps", "dt"])
def test_gradcheck_each_input(name):
    phi0, feats, hp = _inputs(R=2, C=3, M=7, N=2, seed=3)
    args = {"phi0": phi0, "features": feats, **hp}

    def fn(x):
        kw = dict(args)
        kw[name] = x
        return chan_vese_evolve(kw.pop("phi0"), kw.pop("features"), **kw, return_all=True)

    x = args[name].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_all_inputs_together():
    phi0, feats, hp = _inputs(R=2, C=2, M=6, N=2, seed=4)
    leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]

    def fn(p, f, l1, l2, mu, eps, dt):
        return chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("step_bound", BOUNDS)
def test_backward_matches_autograd_of_reference_float32(step_bound):
    phi0, feats, hp = _inputs(R=3, C=8, M=24, N=3, dtype=torch.float32, seed=5)
    feats = torch.relu(feats) * 3.0  # a large common offset, as ReLU features have

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]
        p, f, l1, l2, mu, eps, dt = leaves
        out = fn(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt, return_all=True,
                 step_bound=step_bound)
        w = torch.linspace(-1, 1, out[-1].numel()).view_as(out[-1])
        loss = (out[-1] * w).sum() + out[1].square().mean()
        return out[-1], torch.autograd.grad(loss, leaves)

    ours_out, ours = grads(chan_vese_evolve)
    ref_out, ref = grads(ref_chan_vese)
    torch.testing.assert_close(ours_out, ref_out, rtol=1e-4, atol=1e-4)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-4 * b.abs().max().item())


def _all_finite(phi0, feats, hp):
    leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]
    p, f, l1, l2, mu, eps, dt = leaves
    out = chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt, return_all=True)
    loss = sum(o.sum() for o in out)
    grads = torch.autograd.grad(loss, leaves)
    assert all(torch.isfinite(o).all() for o in out)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "case", ["empty_inside", "empty_outside", "flat", "tiny_eps", "huge_eps", "zero_eps", "far"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_inputs_stay_finite(case, dtype):
    phi0, feats, hp = _inputs(R=2, C=3, M=10, N=3, dtype=dtype, seed=6)
    if case == "empty_inside":
        phi0 = -torch.ones_like(phi0)
    elif case == "empty_outside":
        phi0 = torch.ones_like(phi0)
    elif case == "flat":
        phi0 = torch.zeros_like(phi0)
        feats = torch.zeros_like(feats)
    elif case == "tiny_eps":
        hp["eps"] = torch.full_like(hp["eps"], 1e-30)
    elif case == "huge_eps":
        hp["eps"] = torch.full_like(hp["eps"], 1e30)
    elif case == "zero_eps":
        hp["eps"] = torch.zeros_like(hp["eps"])
        phi0 = torch.zeros_like(phi0)
    elif case == "far":
        phi0 = phi0 * 1e6
    _all_finite(phi0, feats, hp)


def test_autocast_keeps_state_float32():
    phi0, feats, hp = _inputs(R=2, C=4, M=16, dtype=torch.float32, seed=7)
    expected = chan_vese_evolve(phi0, feats, **hp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chan_vese_evolve(phi0.bfloat16(), feats.bfloat16(), **hp)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.05)


def test_hyperparameter_broadcasting_and_empty_batch():
    phi0, feats, hp = _inputs(R=2, C=3, M=8, N=3, dtype=torch.float32)
    a = chan_vese_evolve(phi0, feats, lambda1=1.0, lambda2=1.0, mu=0.5, eps=0.5, dt=1.0,
                         num_steps=3)
    b = chan_vese_evolve(phi0, feats, lambda1=torch.ones(2), lambda2=torch.ones(2),
                         mu=torch.full((2,), 0.5), eps=torch.full((2, 3), 0.5),
                         dt=torch.ones(3))
    torch.testing.assert_close(a, b)
    empty = chan_vese_evolve(phi0[:0], feats[:0], **{k: v[:0] for k, v in hp.items()})
    assert empty.shape == (0, 1, 8, 8)


def test_bad_shapes_raise_clear_errors():
    phi0, feats, hp = _inputs(R=2, C=3, M=8, N=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="features must be"):
        chan_vese_evolve(phi0, feats[:1], **hp)
    with pytest.raises(ValueError, match="lambda1"):
        chan_vese_evolve(phi0, feats, **{**hp, "lambda1": torch.ones(5)})
    with pytest.raises(ValueError, match="num_steps"):
        chan_vese_evolve(phi0, feats, lambda1=1.0, lambda2=1.0, mu=1.0, eps=1.0, dt=1.0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    phi0, feats, hp = _inputs(R=4, C=16, M=32, N=3, dtype=torch.float32, seed=8)

    def run(device):
        leaves = [t.to(device).requires_grad_(True) for t in (phi0, feats, *hp.values())]
        p, f, l1, l2, mu, eps, dt = leaves
        out = chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)
        grads = torch.autograd.grad(out.square().sum(), leaves)
        return [out.cpu(), *(g.cpu() for g in grads)]

    for a, b in zip(run("cuda"), run("cpu"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("chunk_pixels", [None, 2 * 49])
def test_gradcheck_chunked_and_a_second_backward_pass(monkeypatch, chunk_pixels):
    """The backward pass writes the gradient of phi_0 into the storage of the kept
    ``||F - m||^2`` chunk by chunk (and recomputes it when called again, with retain_graph)
    and makes its maps in place: gradcheck with several RoI chunks, and two backward passes
    through one graph give the same gradients as the reference's autograd."""
    cv_module = importlib.import_module("levelset_rcnn.levelset.chan_vese")
    if chunk_pixels is not None:
        monkeypatch.setattr(cv_module, "CPU_CHUNK_ELEMENTS", chunk_pixels)  # 2, 2, 1 RoIs
        assert len(cv_module.roi_chunks(5, 49, torch.device("cpu"))) == 3
    phi0, feats, hp = _inputs(R=5, C=6, M=7, N=2, seed=4)
    leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]

    def fn(*xs):
        p, f, l1, l2, mu, eps, dt = xs
        return chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt,
                                return_all=True)

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-7, rtol=1e-5)
    loss = sum((k + 1.0) * o.sin().sum() for k, o in enumerate(fn(*leaves)[1:]))
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    ref_out = ref_chan_vese(*ref_leaves[:2], *ref_leaves[2:], step_bound=CURVATURE_STEP_BOUND,
                            return_all=True)
    ref = torch.autograd.grad(sum((k + 1.0) * o.sin().sum() for k, o in
                                  enumerate(ref_out[1:])), ref_leaves)
    for a, b, r in zip(first, second, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-9)


def test_cpu_roi_chunking_gives_the_same_values_and_gradients(monkeypatch):
    cv_module = importlib.import_module("levelset_rcnn.levelset.chan_vese")

    phi0, feats, hp = _inputs(R=5, C=3, M=8, N=2, seed=9)
    leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]

    def run():
        p, f, l1, l2, mu, eps, dt = leaves
        out = chan_vese_evolve(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)
        return [out, *torch.autograd.grad(out.sin().sum(), leaves)]

    whole = run()
    monkeypatch.setattr(cv_module, "CPU_CHUNK_ELEMENTS", 2 * 64)  # chunks of 2, 2, 1 RoIs
    assert len(cv_module.roi_chunks(5, 64, torch.device("cpu"))) == 3
    chunked = run()
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ref = ref_chan_vese(phi0, feats, **hp, step_bound=CURVATURE_STEP_BOUND)
    torch.testing.assert_close(chunked[0], ref, rtol=1e-6, atol=1e-9)
