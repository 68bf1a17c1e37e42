"""The implicit-upsampling Chan-Vese equals the core ChanVese on explicitly upsampled features."""

import pytest
import torch
import torch.nn.functional as F

from levelset_rcnn.levelset import ChanVese, UpsampledChanVese, bilinear_matrix, upsampled_sq_norm
from levelset_rcnn.levelset.chan_vese import CURVATURE_STEP_BOUND


def up(f, M):
    return F.interpolate(f, size=(M, M), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("s, M", [(28, 112), (7, 28), (5, 5), (1, 4)])
def test_bilinear_operator_and_norm(s, M):
    f = torch.randn(2, 3, s, s, dtype=torch.float64)
    U = bilinear_matrix(s, M, dtype=torch.float64)
    torch.testing.assert_close(U @ f @ U.T, up(f, M))
    torch.testing.assert_close(upsampled_sq_norm(f, M), up(f, M).square().sum(1))


def hyper(R, N, dtype):
    g = torch.Generator().manual_seed(3)
    return dict(
        lambda1=0.5 + torch.rand(R, generator=g, dtype=dtype),
        lambda2=0.5 + torch.rand(R, generator=g, dtype=dtype),
        mu=torch.rand(R, generator=g, dtype=dtype),
        eps=0.05 + 0.2 * torch.rand(R, N, generator=g, dtype=dtype),
        dt=0.1 * torch.rand(R, N, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("step_bound", [CURVATURE_STEP_BOUND, None])
def test_equals_core_chan_vese_forward_and_backward(step_bound):
    torch.manual_seed(0)
    R, C, s, M, N = 3, 5, 7, 28, 3
    dt64 = torch.float64
    f = (torch.randn(R, C, s, s, dtype=dt64) + 3.0).requires_grad_()  # offset: like ReLUs
    phi0 = up(torch.tanh(torch.randn(R, 1, s, s, dtype=dt64)), M).requires_grad_()
    hp = {k: v.requires_grad_() for k, v in hyper(R, N, dt64).items()}
    a = ChanVese(N, step_bound=step_bound)(phi0, up(f, M), **hp)
    b = UpsampledChanVese(N, step_bound=step_bound)(phi0, f, **hp)
    assert (a - phi0).abs().max() > 1e-3  # the evolution does something
    torch.testing.assert_close(b, a)
    inputs = [phi0, f, *hp.values()]
    g = torch.randn_like(a)
    for ga, gb in zip(torch.autograd.grad(a, inputs, g), torch.autograd.grad(b, inputs, g),
                      strict=True):
        torch.testing.assert_close(gb, ga)


def test_float32_chunks_and_empty():
    R, N = 25, 2
    f = torch.randn(R, 4, 28, 28)
    phi0 = up(torch.tanh(torch.randn(R, 1, 28, 28)), 112)
    hp = hyper(R, N, torch.float32)
    a = ChanVese(N)(phi0, up(f, 112), **hp)
    b = UpsampledChanVese(N)(phi0, f, **hp)  # R > one CPU chunk
    torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
    empty = UpsampledChanVese(N)(phi0[:0], f[:0], **{k: v[:0] for k, v in hp.items()})
    assert empty.shape == (0, 1, 112, 112)


def test_return_all_equals_core_iterates():
    torch.manual_seed(1)
    R, N = 3, 3
    f = torch.randn(R, 4, 28, 28, dtype=torch.float64)
    phi0 = up(torch.tanh(torch.randn(R, 1, 28, 28, dtype=torch.float64)), 112)
    hp = hyper(R, N, torch.float64)
    core = ChanVese(N)(phi0, up(f, 112), **hp, return_all=True)
    ours = UpsampledChanVese(N)(phi0, f, **hp, return_all=True)
    assert len(ours) == len(core) == N + 1
    torch.testing.assert_close(ours[0], phi0)
    for a, b in zip(core, ours, strict=True):
        torch.testing.assert_close(b, a)
    assert not torch.equal(ours[1], ours[0])
    torch.testing.assert_close(ours[-1], UpsampledChanVese(N)(phi0, f, **hp))
    empty = UpsampledChanVese(N)(phi0[:0], f[:0], **{k: v[:0] for k, v in hp.items()},
                                 return_all=True)
    assert len(empty) == N + 1 and empty[-1].shape == (0, 1, 112, 112)
