"""Backbones beyond ResNet-50: ResNet-101, wide_resnet50_2, deformable stages, PANet, and
ImageNet weights from local torchvision state-dict files (never downloads)."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import DeformConv2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from levelset_rcnn.config import ModelConfig
from levelset_rcnn.engine.build import build_model
from levelset_rcnn.modeling import BACKBONES, WeightsUnavailableError, levelset_rcnn
from levelset_rcnn.modeling.backbones import (
    DeformConv2dPack,
    PathAggregation,
    make_deformable,
)

from .common import synthetic_sample, tiny_kwargs


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so that frozen-BN loading is visible."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _deform_modules(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, DeformConv2d)]


# --------------------------------------------------------------------------- defaults


def test_default_build_is_torchvision_resnet_fpn():
    """No deform_stages / panet: the same body and FPN layout as torchvision's builder."""
    assert {"resnet101", "wide_resnet50_2"} <= set(BACKBONES)
    model = levelset_rcnn(**tiny_kwargs())
    ref = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                              norm_layer=nn.BatchNorm2d)
    assert not _deform_modules(model)
    assert type(model.backbone.fpn.extra_blocks) is LastLevelMaxPool
    ours = model.backbone.body.state_dict()
    theirs = ref.body.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert ({k for k in model.backbone.fpn.state_dict()}
            == {k for k in ref.fpn.state_dict()})


# --------------------------------------------------------------------------- deformable convs


@pytest.mark.parametrize("arch,stage,in_ch,expected", [
    ("resnet18", 2, 64, ["layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2"]),
    ("resnet50", 3, 512, [f"layer3.{i}.conv2" for i in range(6)]),
])
def test_zero_offset_stage_equals_torchvision_stage(arch, stage, in_ch, expected):
    """Double precision, so that 1e-5 is far above rounding through six 512-channel blocks."""
    torch.manual_seed(0)
    plain = torchvision.models.get_model(arch, weights=None).eval().double()
    _randomise_bn(plain)
    deform = copy.deepcopy(plain)
    assert make_deformable(deform, [stage]) == expected
    for name in expected:
        m = deform.get_submodule(name)
        assert isinstance(m, DeformConv2dPack)
        ref = plain.get_submodule(name)
        assert torch.equal(m.weight, ref.weight)
        assert (m.stride, m.padding, m.dilation, m.groups) == (
            ref.stride, ref.padding, ref.dilation, ref.groups)
        assert not m.conv_offset.weight.any() and not m.conv_offset.bias.any()
    x = torch.randn(2, in_ch, 14, 18, dtype=torch.float64)
    with torch.no_grad():
        want = getattr(plain, f"layer{stage}")(x)
        got = getattr(deform, f"layer{stage}")(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the state-dict keys of the replaced convs are unchanged, only conv_offset is new
    new = set(deform.state_dict()) - set(plain.state_dict())
    assert new == {f"{n}.conv_offset.{p}" for n in expected for p in ("weight", "bias")}


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 2, 2, 4)])
def test_deform_conv_zero_and_integer_offsets(stride, padding, dilation, groups):
    """Zero offsets: the plain conv. A constant offset dx=+1: the plain conv of the
    zero-padded input shifted one pixel to the left, an independent reference."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=True)
    dcn = DeformConv2dPack.from_conv(conv)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(dcn(x), conv(x), atol=1e-5, rtol=1e-5)
        dcn.conv_offset.bias[1::2] = 1.0  # (dy, dx) per tap: dx = +1
        padded = F.pad(x, (padding,) * 4)
        shifted = F.pad(padded[..., 1:], (0, 1))
        want = F.conv2d(shifted, conv.weight, conv.bias, stride=stride, dilation=dilation,
                        groups=groups)
        torch.testing.assert_close(dcn(x), want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(want, conv(x), atol=1e-3)


def test_deform_offsets_get_gradients_and_bad_stages_fail():
    model = levelset_rcnn(**tiny_kwargs(deform_stages=(3, 4)))
    names = _deform_modules(model)
    assert names and all(n.startswith(("backbone.body.layer3", "backbone.body.layer4"))
                         for n in names)
    img, target = synthetic_sample(2, seed=3)
    model.train()
    sum(model([img], [target]).values()).backward()
    off = model.backbone.body.layer4[0].conv2.conv_offset
    assert off.weight.grad is not None and off.weight.grad.abs().sum() > 0
    for bad in [(0,), (5,), (3, 3)]:
        with pytest.raises(ValueError, match="deform_stages"):
            levelset_rcnn(**tiny_kwargs(deform_stages=bad))
    with pytest.raises(ValueError, match="ResNet"):
        levelset_rcnn(**tiny_kwargs(backbone="mobilenet_v3_large", deform_stages=(3,)))


# --------------------------------------------------------------------------- PANet


def test_panet_matches_formula_shapes_and_passes_gradients():
    torch.manual_seed(2)
    model = levelset_rcnn(**tiny_kwargs(panet=True))
    backbone = model.backbone
    pan = backbone.fpn.extra_blocks
    assert isinstance(pan, PathAggregation)
    x = torch.randn(1, 3, 64, 96)
    feats = backbone(x)
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    for (name, f), stride in zip(feats.items(), (4, 8, 16, 32, 64), strict=True):
        assert f.shape == (1, 32, math.ceil(64 / stride), math.ceil(96 / stride)), name

    # reference: torchvision's own FPN outputs P_i (LastLevelMaxPool), then the formula by hand
    plain = copy.deepcopy(backbone)
    plain.fpn.extra_blocks = LastLevelMaxPool()
    with torch.no_grad():
        p = list(plain(x).values())[:4]
        n = [p[0]]
        for i in range(3):
            d = F.relu(F.conv2d(n[-1], pan.down[i].weight, pan.down[i].bias, stride=2, padding=1))
            n.append(F.relu(F.conv2d(d + p[i + 1], pan.fuse[i].weight, pan.fuse[i].bias,
                                     padding=1)))
        n.append(n[-1][..., ::2, ::2])
    for got, want in zip(feats.values(), n, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    # N_5 alone depends on every bottom-up conv and on the FPN's finest level
    feats["3"].sum().backward()
    for conv in [*pan.down, *pan.fuse]:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0


def test_panet_full_model_step_and_mobilenet_refused():
    model = levelset_rcnn(**tiny_kwargs(panet=True))
    img, target = synthetic_sample(2, seed=4)
    model.train()
    losses = model([img], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.fpn.extra_blocks.down[0].weight.grad.abs().sum() > 0
    # torchvision's MobileNetV3 FPN has two levels of the same stride (32): no bottom-up path
    with pytest.raises(ValueError, match="panet"):
        levelset_rcnn(**tiny_kwargs(backbone="mobilenet_v3_large", panet=True))


# --------------------------------------------------------------------------- local weights files


@pytest.mark.parametrize("arch,options", [
    ("resnet34", {}),
    ("resnet50", {}),
    ("resnet101", {}),
    ("wide_resnet50_2", {}),
    ("wide_resnet50_2", {"deform_stages": (3, 4), "panet": True}),
])
def test_backbone_loads_torchvision_file_and_trains(tmp_path, arch, options):
    torch.manual_seed(5)
    ref = torchvision.models.get_model(arch, weights=None)
    _randomise_bn(ref)
    sd = ref.state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(sd, path)
    model = levelset_rcnn(**tiny_kwargs(backbone=arch, weights_backbone=str(path), **options))

    body = model.backbone.body
    own = body.state_dict()
    checked = 0
    for k, v in sd.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[k], v), k
        checked += 1
    assert checked == len([k for k in own if ".conv_offset." not in k])
    assert all(not isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    # pretrained: torchvision's default of 3 trainable stages
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    if options.get("deform_stages"):
        assert len(_deform_modules(body)) == 6 + 3  # one 3x3 conv per bottleneck block
        assert not body.layer3[0].conv2.conv_offset.weight.any()

    img, target = synthetic_sample(2, seed=6, size=(64, 64))
    model.train()
    losses = model([img], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    last = body.layer4[-1]
    g = (last.conv3 if hasattr(last, "conv3") else last.conv2).weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    assert out["masks"].shape[1:] == (1, 64, 64)


def test_mismatching_weights_file_names_file_and_keys(tmp_path):
    sd = torchvision.models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"r18\.pth.*missing: layer1\.2\."):
        levelset_rcnn(**tiny_kwargs(backbone="resnet34", weights_backbone=str(path)))
    extra = dict(sd, **{"layer5.0.conv1.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected: layer5\.0\.conv1\.weight"):
        levelset_rcnn(**tiny_kwargs(weights_backbone=tmp_path / "extra.pth"))
    bad = dict(sd, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")  # wrapped checkpoints are unwrapped
    with pytest.raises(ValueError, match=r"bad\.pth.*shape mismatch: conv1\.weight "
                                         r"\(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)"):
        levelset_rcnn(**tiny_kwargs(weights_backbone=str(tmp_path / "bad.pth")))
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        levelset_rcnn(**tiny_kwargs(weights_backbone=str(tmp_path / "nope.pth")))


def test_coco_style_weights_load_into_deform_panet_model(tmp_path, caplog):
    """A plain detector's file initialises a deformable + PANet one: same keys load, the
    offset convs and the bottom-up path start fresh. A file of another backbone warns."""
    torch.manual_seed(7)
    plain = levelset_rcnn(**tiny_kwargs())
    path = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), path)
    kw = tiny_kwargs(deform_stages=(4,), panet=True)
    kw.pop("weights_backbone")
    with caplog.at_level(logging.WARNING, logger="levelset_rcnn.modeling.builders"):
        model = levelset_rcnn(weights=path, **kw)
    assert "only partly" not in caplog.text
    missing = set(model.load_report.missing)
    assert missing == {k for k in model.state_dict()
                       if ".conv_offset." in k or ".extra_blocks." in k}
    assert torch.equal(model.backbone.body.layer4[0].conv2.weight,
                       plain.backbone.body.layer4[0].conv2.weight)
    kw["backbone"] = "resnet34"  # resnet18 file: layer1.2, layer2.2, ... start fresh
    with caplog.at_level(logging.WARNING, logger="levelset_rcnn.modeling.builders"):
        levelset_rcnn(weights=path, **kw)
    assert "resnet34 body only partly" in caplog.text and "layer1.2." in caplog.text


def test_engine_config_passes_backbone_options():
    cfg = ModelConfig(backbone="resnet18", num_classes=3, fpn_channels=32,
                      box_representation_size=64, mask_layers=[16], predictor_channels=16,
                      cv_channels=8, cv_hidden_channels=8, min_size=[64], max_size=64,
                      deform_stages=[3], panet=True)
    model = build_model(cfg)
    names = _deform_modules(model)
    assert names and all(n.startswith("backbone.body.layer3.") for n in names)
    assert isinstance(model.backbone.fpn.extra_blocks, PathAggregation)
