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
