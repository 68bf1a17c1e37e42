"""Initialisation from torchvision Mask R-CNN weights (never downloads)."""

import logging
import urllib.error

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights

from levelset_rcnn.modeling import (
    WeightsUnavailableError,
    levelset_rcnn,
    levelset_rcnn_resnet50_fpn,
    load_maskrcnn_weights,
)

from .common import tiny_kwargs
from .test_model import torchvision_tiny_maskrcnn


def test_load_local_torchvision_state_dict(tmp_path, caplog):
    ref = torchvision_tiny_maskrcnn()
    sd = ref.state_dict()
    path = tmp_path / "maskrcnn_tiny.pth"
    torch.save(sd, path)
    kw = tiny_kwargs()
    kw.pop("weights_backbone")
    with caplog.at_level(logging.INFO, logger="levelset_rcnn.modeling.weights"):
        model = levelset_rcnn(weights=path, **kw)
    report = model.load_report
    assert "loaded" in caplog.text and str(path) in caplog.text
    own = model.state_dict()
    for k in report.loaded:
        assert torch.equal(own[k], sd[k]), k
    groups = {k.split(".")[0] + "." + k.split(".")[1] for k in report.loaded}
    assert {"backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head",
            "roi_heads.box_predictor", "roi_heads.mask_head"} <= groups
    assert all(k.startswith("roi_heads.mask_branch.") for k in report.missing)
    fresh = {k.split(".")[2] for k in report.missing}
    assert {"tsdf_predictor", "hyper_head", "feature_head"} <= fresh
    assert all(k.startswith("roi_heads.mask_predictor") for k in report.unexpected)
    assert "start fresh" in report.summary()


def test_shape_mismatch_is_skipped_not_fatal(tmp_path):
    ref = torchvision_tiny_maskrcnn()
    path = tmp_path / "m.pth"
    torch.save({"model": ref.state_dict()}, path)  # a wrapped training checkpoint
    kw = tiny_kwargs(num_classes=7)
    kw.pop("weights_backbone")
    model = levelset_rcnn(weights=str(path), **kw)
    assert any("box_predictor" in k for k in model.load_report.mismatched)
    assert "roi_heads.box_predictor.cls_score.weight" in model.load_report.missing


@pytest.mark.slow
def test_resnet50_loads_torchvision_coco_layout(tmp_path):
    """The real COCO checkpoint layout (ResNet-50 FPN, 91 classes, legacy mask_fcn names)."""
    ref = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    # The released file comes from FrozenBatchNorm2d: no num_batches_tracked counters.
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    for i in range(1, 5):  # the released file uses MaskRCNNHeads v1 names
        for t in ("weight", "bias"):
            sd[f"roi_heads.mask_head.mask_fcn{i}.{t}"] = sd.pop(f"roi_heads.mask_head.{i-1}.0.{t}")
    path = tmp_path / "coco.pth"
    torch.save(sd, path)
    model = levelset_rcnn_resnet50_fpn(weights=path)
    report = model.load_report
    assert not report.mismatched
    assert "roi_heads.mask_head.0.0.weight" in report.loaded
    assert len(report.loaded) == len(sd) - len(report.unexpected)
    torch.testing.assert_close(model.backbone.body.layer4[2].conv3.weight,
                               ref.backbone.body.layer4[2].conv3.weight)


def test_offline_enum_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    kw = tiny_kwargs(backbone="resnet50")
    kw.pop("weights_backbone")
    expected = tmp_path / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        levelset_rcnn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1, **kw)
    msg = str(info.value)
    assert str(expected) in msg and 'weights="path/to/' in msg
    with pytest.raises(WeightsUnavailableError, match="checkpoints"):
        levelset_rcnn(weights="DEFAULT", **kw)


def test_enum_uses_cached_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("must not download"))
    ref = torchvision_tiny_maskrcnn()
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(),
               tmp_path / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    kw = tiny_kwargs()
    kw.pop("weights_backbone")
    model = levelset_rcnn(weights="COCO_V1", **kw)
    assert model.load_report.loaded
    # overwrite_eps as torchvision does for this checkpoint
    bns = [m for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    assert bns and all(m.eps == 0.0 for m in bns)


def test_missing_local_file():
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        levelset_rcnn(weights="/nonexistent/weights.pth", **{
            k: v for k, v in tiny_kwargs().items() if k != "weights_backbone"})


def test_files_from_before_the_mask_branch_load_their_heads():
    """A state dict with the heads at roi_heads.<head>.* (written before the mask branch)
    loads them into roi_heads.mask_branch.<head>.*."""
    torch.manual_seed(0)
    src = levelset_rcnn(**tiny_kwargs())
    old = {k.replace("roi_heads.mask_branch.", "roi_heads."): v
           for k, v in src.state_dict().items()}
    torch.manual_seed(1)
    dst = levelset_rcnn(**tiny_kwargs())
    report = load_maskrcnn_weights(dst, old)
    assert not report.missing and not report.unexpected and not report.mismatched
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
