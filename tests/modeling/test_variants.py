"""Table 3 competitors: the level-set loss baseline (``lsloss``) and DELSE (``delse``,
``delse_hp``), each against an independent reference or a behaviour it must show."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from levelset_rcnn.engine.inference import has_phi0
from levelset_rcnn.levelset import delse_evolve, masks_to_tsdf
from levelset_rcnn.modeling import LevelSetRCNN, levelset_rcnn
from levelset_rcnn.modeling.mask_branches.delse import (
    angular_loss,
    class_balanced_bce,
    velocity_targets,
)
from levelset_rcnn.modeling.mask_branches.lsloss import chan_vese_energy_loss

from .common import shape_mask, synthetic_sample, tiny_kwargs

VARIANTS = ("lsloss", "delse", "delse_hp")
MASK_LOSSES = {
    "lsloss": {"loss_mask", "loss_levelset"},
    "delse": {"loss_tsdf_init", "loss_tsdf_final", "loss_velocity"},
    "delse_hp": {"loss_tsdf_init", "loss_tsdf_final", "loss_velocity"},
}
RPN_BOX = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def tiny(mask_head_type: str, **kw) -> LevelSetRCNN:
    torch.manual_seed(0)
    return levelset_rcnn(**tiny_kwargs(mask_head_type=mask_head_type, **kw))


# ------------------------------------------------------------------------------------------
# Training and the output contract
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_with_finite_decreasing_loss(variant):
    model = tiny(variant).train()
    samples = [synthetic_sample(n, seed=i) for i, n in enumerate((3, 2))]
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9)
    totals, mask_totals = [], []
    for _ in range(10):
        torch.manual_seed(1)  # the same RPN / RoI sampling at every step
        losses = model(images, targets)
        assert set(losses) == RPN_BOX | MASK_LOSSES[variant]
        total = sum(losses.values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, name
                assert torch.isfinite(p.grad).all(), name
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # as the CPU recipes do
        opt.step()
        totals.append(total.item())
        mask_totals.append(sum(losses[k].item() for k in MASK_LOSSES[variant]))
    # Measured (tiny model, this batch): last two / first = 0.36 (lsloss), 0.63 (delse),
    # 0.62 (delse_hp) for the total; the mask-branch losses fall by as much.
    assert sum(totals[-2:]) / 2 < 0.8 * totals[0], totals
    assert sum(mask_totals[-2:]) / 2 < 0.85 * mask_totals[0], mask_totals


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_zero_rois_keeps_every_head_in_the_graph(variant):
    model = tiny(variant).train()
    image, target = synthetic_sample(0)
    losses = model([image], [target])
    for k in MASK_LOSSES[variant]:
        assert losses[k].item() == 0.0
    sum(losses.values()).backward()
    heads = model.mask_branch
    for name in ("mask_predictor", "tsdf_predictor", "velocity_head", "modulation_head",
                 "hyper_head"):
        module = getattr(heads, name, None)
        if module is None:
            continue
        for p in module.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_output_contract(variant):
    model = tiny(variant).eval()
    model.roi_heads.score_thresh = 0.0
    images = [torch.rand(3, 96, 80), synthetic_sample(2)[0]]
    refines = variant != "lsloss"
    assert model.refines_initial_tsdf is refines
    assert has_phi0(model) is refines
    if not refines:
        with pytest.raises(ValueError, match="LSLossBranch predicts binary masks"):
            model(images, return_tsdf=True)
    with torch.no_grad():
        out = model(images, return_tsdf=refines)
    assert len(out) == 2
    for r, img in zip(out, images, strict=True):
        K = r["boxes"].shape[0]
        assert K > 0
        assert r["labels"].shape == (K,) and r["scores"].shape == (K,)
        assert r["masks"].shape == (K, 1, *img.shape[-2:])
        assert r["masks"].dtype == torch.float32
        assert 0.0 <= r["masks"].min() and r["masks"].max() <= 1.0
        if refines:
            assert set(r) == {"boxes", "labels", "scores", "masks", "tsdf", "tsdf_init"}
            assert r["tsdf"].shape == r["tsdf_init"].shape == (K, 1, 112, 112)
            assert torch.isfinite(r["tsdf"]).all()
            assert not torch.equal(r["tsdf"], r["tsdf_init"])  # the evolution moved phi
        else:
            assert set(r) == {"boxes", "labels", "scores", "masks"}


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="mask_head_type"):
        tiny("delse_plus")


def test_delse_hp_starts_at_the_hand_set_values():
    """With the hyperparameter head at its initial output (multipliers 1), delse_hp evolves
    exactly as delse with the same heads."""
    hp = tiny("delse_hp").eval()
    plain = tiny("delse").eval()
    plain.load_state_dict({k: v for k, v in hp.state_dict().items()
                           if "hyper_head" not in k})
    torch.nn.init.zeros_(hp.mask_branch.hyper_head.fc2.weight)
    x = torch.randn(3, 32, 14, 14)
    labels = torch.tensor([1, 2, 3])
    with torch.no_grad():
        a = hp.mask_branch(x, labels)
        b = plain.mask_branch(x, labels)
    torch.testing.assert_close(a["hyper"][:, [0, 2, 6, 7, 8]], torch.ones(3, 5))
    torch.testing.assert_close(a["phiN"], b["phiN"])


# ------------------------------------------------------------------------------------------
# DELSE pieces
# ------------------------------------------------------------------------------------------
def _reference_directions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit direction towards the boundary from scipy's exact distance transform: minus the
    normalised central-difference gradient of the distance to the other label; and |D|."""
    d_in = ndimage.distance_transform_edt(mask)
    d_out = ndimage.distance_transform_edt(~mask)
    dist = np.where(mask, d_in, d_out) - 0.5  # |D|, the boundary half-way between pixels
    gy, gx = np.gradient(dist)
    norm = np.hypot(gx, gy)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = -np.stack([gx, gy]) / norm
    return v, dist, norm


@pytest.mark.parametrize("kind", ["disk", "rect", "ring"])
def test_velocity_target_matches_distance_transform_gradient(kind):
    M, T = 112, 12.0
    mask = shape_mask(kind, M, M, 55.0, 57.0, 38.0)
    v, valid = velocity_targets(masks_to_tsdf(mask[None], T), T)
    v, valid = v[0].numpy(), valid[0].numpy()
    ref, dist, norm = _reference_directions(mask.numpy())
    # Where the reference is a clean unit gradient inside the band (off the medial axis).
    band = (dist < T - 2.5) & (norm > 0.9)
    assert valid[band].mean() > 0.9  # the target covers the band
    both = band & valid
    cos = (v[:, both] * ref[:, both]).sum(0)
    assert np.abs(np.hypot(v[0, both], v[1, both]) - 1).max() < 1e-5
    assert cos.mean() > 0.98
    assert (cos > 0.9).mean() > 0.97
    # Nothing is asked of the far field, and invalid pixels carry no direction.
    assert not valid[dist > T].any()
    assert (v[:, ~valid] == 0).all()


def test_delse_advection_moves_the_contour_to_the_target():
    """A disk of radius 18 with the velocity pointing outwards (to a boundary outside it) and
    no curvature term grows by a * sum(dt) pixels: 3 steps of 2 px -> radius 24."""
    M, T = 112, 12.0
    mask = shape_mask("disk", M, M, 56.0, 56.0, 18.0)
    phi = masks_to_tsdf(mask[None], T)[:, None]
    yy, xx = torch.meshgrid(torch.arange(M) + 0.5, torch.arange(M) + 0.5, indexing="ij")
    r = torch.hypot(yy - 56.0, xx - 56.0)
    v = torch.stack([(xx - 56.0) / r, (yy - 56.0) / r])[None]
    g = torch.zeros(1, 1, M, M)
    out = delse_evolve(phi, v, g, torch.full((1, 3), 2.0), advection=1.0)
    radius = math.sqrt(float((out > 0).sum()) / math.pi)
    assert abs(radius - 24.0) < 0.6, radius
    # Pointing inwards shrinks it by as much; half the advection moves half as far.
    out = delse_evolve(phi, -v, g, torch.full((1, 3), 2.0))
    assert abs(math.sqrt(float((out > 0).sum()) / math.pi) - 12.0) < 0.6
    out = delse_evolve(phi, v, g, torch.full((1, 3), 2.0), advection=torch.tensor([0.5]))
    assert abs(math.sqrt(float((out > 0).sum()) / math.pi) - 21.0) < 0.6


def test_delse_curvature_term_smooths_a_corner_and_not_a_line():
    """Curvature motion only (v = 0): a straight edge stays, a square's corners recede."""
    M, T = 64, 12.0
    yy, xx = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    half = masks_to_tsdf((xx < 32)[None], T)[:, None]
    inside = ((xx - 32).abs() < 12) & ((yy - 32).abs() < 12)  # rows / columns 21..43
    square = masks_to_tsdf(inside[None], T)[:, None]
    zero_v = torch.zeros(1, 2, M, M)
    ones = torch.ones(1, 1, M, M)
    dt = torch.full((1, 3), 1.0)
    moved = delse_evolve(half, zero_v, ones, dt, curvature_gain=1.0)
    assert torch.equal(moved > 0, half > 0)
    moved = delse_evolve(square, zero_v, ones, dt, curvature_gain=1.0)
    assert not moved[0, 0, 21, 21] > 0  # the corner pixel left the shape
    assert moved[0, 0, 32, 21] > 0  # the middle of an edge did not
    assert int((moved > 0).sum()) < int(inside.sum())


def test_delse_evolve_is_safe_on_flat_phi():
    phi = torch.zeros(2, 1, 16, 16, requires_grad=True)
    v = torch.zeros(2, 2, 16, 16, requires_grad=True)
    g = torch.full((2, 1, 16, 16), 0.5, requires_grad=True)
    dt = torch.full((2, 3), 2.0, requires_grad=True)
    out = delse_evolve(phi, v, g, dt)
    out.square().sum().backward()
    for t in (phi, v, g, dt):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(out, torch.zeros_like(out))


def test_angular_loss_against_direct_formula():
    target = torch.zeros(1, 2, 1, 4)
    target[0, 0] = 1.0  # +x everywhere
    angles = torch.tensor([0.0, 0.5, math.pi / 2, 2.5])
    pred = torch.stack([torch.cos(angles), torch.sin(angles)])[None, :, None] * 3.0
    valid = torch.tensor([[[True, True, True, False]]])
    got = angular_loss(pred, target, valid)
    want = (angles[:3] ** 2).mean()
    assert abs(got.item() - want.item()) < 2e-3  # DELSE's (1 - 1e-4) cosine scaling
    pred.requires_grad_(True)
    angular_loss(pred, target, valid).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[..., 3].abs().max() == 0
    empty = torch.zeros(1, 4, dtype=torch.bool)[None]
    assert angular_loss(pred, target, empty).item() == 0.0


def test_class_balanced_bce_against_direct_formula():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(2, 5, 5, generator=g) * 0.3
    mask = (torch.rand(2, 5, 5, generator=g) > 0.7).float()
    p = 0.5 + torch.atan(phi.double() / 0.1) / math.pi
    m = mask.double()
    n = m.numel()
    n_pos = float(m.sum())
    loss_pos = -(m * torch.log(p)).sum()
    loss_neg = -((1 - m) * torch.log(1 - p)).sum()
    want = ((n - n_pos) / n * loss_pos + n_pos / n * loss_neg) / n
    got = class_balanced_bce(phi, mask, eps=0.1)
    assert abs(got.item() - want.item()) < 1e-5


# ------------------------------------------------------------------------------------------
# Level-set loss
# ------------------------------------------------------------------------------------------
def _sobel_replicate(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel derivatives / 8 with replicate padding, written out pixel by pixel."""
    H, W = a.shape
    p = np.pad(a, 1, mode="edge")
    gx, gy = np.zeros_like(a), np.zeros_like(a)
    wts = (1.0, 2.0, 1.0)
    for i in range(H):
        for j in range(W):
            gx[i, j] = sum(w * (p[i + k, j + 2] - p[i + k, j]) for k, w in enumerate(wts)) / 8
            gy[i, j] = sum(w * (p[i + 2, j + k] - p[i, j + k]) for k, w in enumerate(wts)) / 8
    return gx, gy


def test_levelset_loss_against_direct_formula():
    """Hu et al.'s energy on a hand-made case: 2 RoIs of 6x6, written as sums over pixels."""
    logits = np.array([np.linspace(-4, 4, 36).reshape(6, 6),
                       np.where(np.arange(36).reshape(6, 6) % 7 == 0, 3.0, -2.0)])
    u0 = np.zeros((2, 6, 6))
    u0[0, :, 3:] = 1.0
    u0[1, 1:4, 1:4] = 1.0
    u0[1, 0, 0] = 0.5  # a soft projected value
    eps, lam1, lam2, mu, kappa = 0.1, 1.0, 2.0, 0.05, 1e-4
    want = 0.0
    for r in range(2):
        phi = 1.0 / (1.0 + np.exp(-logits[r])) - 0.5
        h = 0.5 + np.arctan(phi / eps) / np.pi
        c1 = (u0[r] * h).sum() / (h.sum() + kappa)
        c2 = (u0[r] * (1 - h)).sum() / ((1 - h).sum() + kappa)
        region = lam1 * ((u0[r] - c1) ** 2 * h).sum() + lam2 * ((u0[r] - c2) ** 2 * (1 - h)).sum()
        gx, gy = _sobel_replicate(h)
        length = np.sqrt(gx**2 + gy**2).sum()
        want += (region + mu * length) / 36.0 / 2
    got = chan_vese_energy_loss(torch.tensor(logits, dtype=torch.float32),
                                torch.tensor(u0, dtype=torch.float32), eps=eps, lambda1=lam1,
                                lambda2=lam2, mu=mu)
    assert abs(got.item() - want) < 1e-5 * max(1.0, want)
    # The region terms vanish when the output is the mask itself (u0 binary, sharp output).
    sharp = torch.tensor(np.where(u0[:1] > 0.5, 30.0, -30.0), dtype=torch.float32)
    region_only = chan_vese_energy_loss(sharp, torch.tensor(u0[:1], dtype=torch.float32),
                                        eps=1e-3, mu=0.0)
    assert region_only.item() < 1e-3  # H = 0.9994 / 0.0006 at eps = 1e-3
    undecided = chan_vese_energy_loss(torch.zeros(1, 6, 6),
                                      torch.tensor(u0[:1], dtype=torch.float32), mu=0.0)
    assert undecided.item() > 0.2  # H = 1/2 everywhere: c1 = c2 = 1/2


def test_levelset_loss_is_finite_for_empty_regions():
    logits = torch.full((1, 8, 8), -20.0, requires_grad=True)  # H ~ 0 everywhere
    loss = chan_vese_energy_loss(logits, torch.zeros(1, 8, 8))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    none = chan_vese_energy_loss(torch.zeros(0, 28, 28, requires_grad=True),
                                 torch.zeros(0, 28, 28))
    assert none.item() == 0.0 and none.requires_grad
