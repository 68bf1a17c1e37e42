import math

import pytest
import torch

from levelset_rcnn.levelset import curvature, dirac, heaviside, heaviside_grad, sobel
from levelset_rcnn.levelset.reference import ref_curvature, ref_dirac, ref_heaviside, ref_sobel


@pytest.mark.parametrize("eps", [1e-3, 0.1, 1.0, 30.0])
def test_heaviside_dirac_match_eq4(eps):
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    torch.testing.assert_close(heaviside(x, eps), ref_heaviside(x, eps), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dirac(x, eps), ref_dirac(x, eps), rtol=1e-12, atol=1e-14)
    assert heaviside(torch.tensor(0.0), eps) == 0.5
    assert math.isclose(dirac(torch.tensor(0.0), eps).item(), 1 / math.pi, rel_tol=1e-6)


def test_heaviside_out_is_bitwise_the_same():
    x = torch.linspace(-5, 5, 1001, dtype=torch.float32)
    out = torch.empty_like(x)
    assert heaviside(x, 0.3, out=out) is out
    assert torch.equal(out, heaviside(x, 0.3))


def test_curvature_with_floor_matches_reference():
    torch.manual_seed(2)
    phi = 0.05 * torch.randn(3, 1, 12, 12, dtype=torch.float64)
    floor = torch.tensor([1e-5, 0.02, 0.3], dtype=torch.float64).view(3, 1, 1, 1)
    torch.testing.assert_close(curvature(phi, 1e-4, floor), ref_curvature(phi, 1e-4, floor))
    assert not torch.allclose(curvature(phi, 1e-4, floor)[1:], curvature(phi, 1e-4)[1:])


def test_heaviside_grad_is_derivative():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(heaviside(x, 0.3).sum(), x)
    torch.testing.assert_close(g, heaviside_grad(x.detach(), 0.3))


def test_sobel_matches_conv2d_reference():
    torch.manual_seed(0)
    phi = torch.randn(3, 1, 17, 13, dtype=torch.float64)
    gx, gy = sobel(phi)
    rx, ry = ref_sobel(phi)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)


def test_sobel_on_ramp_gives_slope():
    y, x = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    phi = (0.3 * x - 0.7 * y).view(1, 1, 9, 11)
    gx, gy = sobel(phi)
    torch.testing.assert_close(gx[..., 1:-1, 1:-1], torch.full_like(gx[..., 1:-1, 1:-1], 0.3))
    torch.testing.assert_close(gy[..., 1:-1, 1:-1], torch.full_like(gy[..., 1:-1, 1:-1], -0.7))


def test_curvature_matches_reference_and_geometry():
    torch.manual_seed(1)
    phi = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(curvature(phi, 1e-4), ref_curvature(phi, 1e-4))
    # Signed distance to a circle of radius r (positive inside): curvature -1/dist.
    n, r = 96, 30.0
    axis = torch.arange(n, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    dist = torch.sqrt((x - 47.5) ** 2 + (y - 47.5) ** 2)
    k = curvature((r - dist).view(1, 1, n, n))[0, 0]
    ring = (dist > r - 3) & (dist < r + 3)
    torch.testing.assert_close(k[ring], -1.0 / dist[ring], rtol=0.05, atol=0.0)


def test_flat_level_set_has_finite_curvature_and_gradient():
    phi = torch.zeros(1, 1, 8, 8, dtype=torch.float32, requires_grad=True)
    k = curvature(phi)
    (g,) = torch.autograd.grad(k.square().sum() + k.sum(), phi)
    assert torch.isfinite(k).all() and torch.isfinite(g).all()


def test_sobel_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(R, 1, H, W\)"):
        sobel(torch.zeros(2, 8, 8))
