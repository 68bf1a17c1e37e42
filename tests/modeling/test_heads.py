import pytest
import torch

from levelset_rcnn.modeling import (
    DEFAULT_INIT,
    ChanVeseFeatureHead,
    GlobalHyperParameters,
    HighResMaskPredictor,
    HyperParameterHead,
    HyperParameters,
    TSDFPredictor,
)
from levelset_rcnn.modeling.heads import hyperparameter_bias


def test_tsdf_predictor_shapes_and_range():
    x = torch.randn(5, 16, 14, 14) * 10
    head = TSDFPredictor(16, 4, hidden_channels=8)
    y = head(x)
    assert y.shape == (5, 4, 28, 28)
    assert y.abs().max() <= 1
    assert TSDFPredictor(16, 4, hidden_channels=8, class_agnostic=True)(x).shape == (5, 1, 28, 28)


def test_hyperparameter_head_starts_at_init_and_is_positive():
    N = 3
    head = HyperParameterHead(16, N, hidden_channels=8, fc_channels=8)
    raw = head(torch.randn(6, 16, 14, 14))
    assert raw.shape == (6, 2 * N + 3)
    assert (raw > 0).all() and (raw < 2).all()
    hp = HyperParameters.from_raw(raw, N)
    torch.testing.assert_close(hp.lambda1, torch.full((6,), DEFAULT_INIT["lambda1"]), atol=0.02,
                               rtol=0)
    torch.testing.assert_close(hp.eps, torch.full((6, N), DEFAULT_INIT["eps"]), atol=0.02, rtol=0)
    torch.testing.assert_close(hp.dt, torch.full((6, N), DEFAULT_INIT["dt"]), atol=0.02, rtol=0)
    assert hp.mu.shape == (6,)


def test_hyperparameter_bias_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        hyperparameter_bias(3, {"dt": 2.5})


def test_global_hyperparameters_expand():
    g = GlobalHyperParameters(2, init={"mu": 0.5})
    raw = g(torch.zeros(4, 3, 14, 14))
    assert raw.shape == (4, 7)
    torch.testing.assert_close(raw[:, 2], torch.full((4,), 0.5))
    assert g(torch.zeros(0, 3, 14, 14)).shape == (0, 7)


def test_feature_head_resolution():
    head = ChanVeseFeatureHead(16, out_channels=8, hidden_channels=4, out_size=112)
    assert head(torch.randn(3, 16, 14, 14)).shape == (3, 8, 112, 112)
    assert head(torch.randn(0, 16, 14, 14)).shape == (0, 8, 112, 112)


def test_high_res_mask_predictor():
    head = HighResMaskPredictor(16, 3, hidden_channels=8, fine_channels=4)
    assert head(torch.randn(2, 16, 14, 14)).shape == (2, 3, 112, 112)


def test_learned_feature_head_compact_map_gives_the_same_evolution():
    """The Chan-Vese layer on the compact map (R G, k channels) equals it on the full
    C-channel embedding F = W G + b: same phi_N, same gradients for every head parameter."""
    from levelset_rcnn.levelset import ChanVese
    from levelset_rcnn.modeling import LearnedFeatureHead

    torch.manual_seed(0)
    head = LearnedFeatureHead(8, out_channels=24, channels_28=8, channels_56=8,
                              channels_112=6).double()
    x = torch.randn(3, 8, 14, 14, dtype=torch.float64)
    full = head(x)
    assert full.shape == (3, 24, 112, 112)
    compact = head.compact(x)
    assert compact.shape == (3, 6, 112, 112)
    g = torch.Generator().manual_seed(1)
    phi0 = torch.tanh(torch.randn(3, 1, 112, 112, generator=g, dtype=torch.float64))
    hp = dict(lambda1=torch.full((3,), 1.2, dtype=torch.float64),
              lambda2=torch.full((3,), 0.8, dtype=torch.float64),
              mu=torch.full((3,), 0.2, dtype=torch.float64),
              eps=torch.full((3, 3), 0.1, dtype=torch.float64),
              dt=torch.full((3, 3), 0.3, dtype=torch.float64))
    a = ChanVese(3)(phi0, full, **hp)
    b = ChanVese(3)(phi0, compact, **hp)
    assert (a - phi0).abs().max() > 1e-3
    # Equal in exact arithmetic; float64 round-off grows through the steps (the curvature of a
    # random phi is stiff), hence 1e-8 rather than 1e-15.
    torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-8)
    names, params = zip(*head.named_parameters(), strict=True)
    ga = torch.autograd.grad(a.square().sum(), params)
    gb = torch.autograd.grad(b.square().sum(), params)
    for n, u, v in zip(names, ga, gb, strict=True):
        torch.testing.assert_close(v, u, rtol=1e-6, atol=1e-8, msg=n)


def test_learned_features_are_the_default_and_interpolated_stays_an_option():
    from levelset_rcnn.levelset import ChanVese, UpsampledChanVese
    from levelset_rcnn.modeling import ChanVeseFeatureHead, LearnedFeatureHead, levelset_rcnn

    from .common import tiny_kwargs

    learned = levelset_rcnn(**tiny_kwargs()).mask_branch
    assert isinstance(learned.feature_head, LearnedFeatureHead)
    assert type(learned.chan_vese) is ChanVese
    interp = levelset_rcnn(**tiny_kwargs(cv_features="interpolated")).mask_branch
    assert isinstance(interp.feature_head, ChanVeseFeatureHead)
    assert isinstance(interp.chan_vese, UpsampledChanVese)


def test_learned_head_compact_in_chunks_equals_one_pass(monkeypatch):
    """On the CPU compact() runs the RoIs in cache-sized chunks; the values and the gradients
    equal those of one pass over all RoIs (a chunk size that does not divide R included)."""
    from levelset_rcnn.modeling import heads

    torch.manual_seed(0)
    head = heads.LearnedFeatureHead(8, out_channels=6, channels_28=8, channels_56=4,
                                    channels_112=4)
    x = torch.randn(7, 8, 14, 14, requires_grad=True)
    monkeypatch.setattr(heads, "CPU_HEAD_CHUNK_ELEMENTS", 1 << 40)  # one pass
    whole = head.compact(x)
    (g_whole,) = torch.autograd.grad((whole ** 2).sum(), x)
    per_roi = 4 * 112 * 112
    monkeypatch.setattr(heads, "CPU_HEAD_CHUNK_ELEMENTS", 3 * per_roi)  # chunks of 3, 3, 1
    chunked = head.compact(x)
    (g_chunked,) = torch.autograd.grad((chunked ** 2).sum(), x)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_chunked, g_whole, atol=1e-4, rtol=1e-4)
    assert head.compact(x[:0]).shape == (0, 4, 112, 112)
