"""Test-time augmentation (flip / multi-scale): exact merge-and-average logic on a flip-
equivariant stand-in detector, the output contract of real tiny models, and the CLI flag."""

from __future__ import annotations

import json
import math
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from levelset_rcnn.levelset import tsdf_to_polygons
from levelset_rcnn.modeling import MaskBranch, levelset_rcnn, mask_rcnn
from levelset_rcnn.modeling.tta import TTAView, TTAWrapper, hflip_boxes

from .common import tiny_kwargs

# ---------------------------------------------------------------------------------------------
# A detector whose every piece is exactly mirror-equivariant (up to float round-off): the
# RPN proposes the boxes of thresholded bright blobs, the box branch scores them from RoI
# means with zero box deltas, and the level set is read from the image inside the RoI.
THR = 0.37  # foreground threshold on channel 0 (far from any resampled value on the images)
H, W = 48, 64


class _Features(nn.Module):
    out_channels = 3

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict([("0", x)])


class _BlobRPN(nn.Module):
    def forward(self, images, features, targets=None):
        props = []
        for img, (h, w) in zip(images.tensors, images.image_sizes, strict=True):
            lab, _ = ndimage.label((img[0, :h, :w] > THR).numpy())
            boxes = [[sx.start, sy.start, sx.stop, sy.stop]
                     for sy, sx in ndimage.find_objects(lab)]
            props.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        return props, {}


class _RoIMean(nn.Module):
    def forward(self, features, boxes, image_shapes):
        return roi_align(features["0"], boxes, output_size=4, spatial_scale=1.0,
                         sampling_ratio=2, aligned=True).mean((2, 3))


class _RulePredictor(nn.Module):
    """(R, 3) RoI means -> logits of 4 classes (background 0) and zero box deltas."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = 20 * torch.stack([torch.zeros_like(x[:, 0]), x[:, 1] - 0.3, x[:, 2] - 0.3,
                                   x[:, 0] - x[:, 1] - x[:, 2] - 0.5], dim=1)
        return logits, torch.zeros(len(x), 16)


class _RoIGrid(nn.Module):
    def forward(self, features, boxes, image_shapes):
        return roi_align(features["0"], boxes, output_size=14, spatial_scale=1.0,
                         sampling_ratio=2, aligned=True)


class _LevelSetFromImage(MaskBranch):
    """A mask branch whose level sets are the RoI's intensities (an equivariant rule)."""

    refines_initial_tsdf = True

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        phi0 = F.interpolate(x[:, :1] - THR, size=(112, 112), mode="bilinear",
                             align_corners=False)
        return {"phi0": phi0, "phiN": phi0 + 2 * phi0 ** 3}

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"tsdf": out["phiN"], "tsdf_init": out["phi0"]}


def equivariant_model() -> nn.Module:
    model = levelset_rcnn(**tiny_kwargs(min_size=60, max_size=200,
                                        image_mean=[0.0] * 3, image_std=[1.0] * 3)).eval()
    model.backbone = _Features()
    model.rpn = _BlobRPN()
    rh = model.roi_heads
    rh.box_roi_pool, rh.box_head, rh.box_predictor = _RoIMean(), nn.Identity(), _RulePredictor()
    rh.mask_roi_pool, rh.mask_head = _RoIGrid(), nn.Identity()
    rh.mask_branch = _LevelSetFromImage()
    rh.score_thresh = 0.2
    return model


def _shapes(symmetric: bool) -> Tensor:
    """A ``(3, H, W)`` image of bright shapes; an L, a triangle and a bar (asymmetric), or
    those mirrored into the right half (symmetric)."""
    img = torch.full((3, H, W), 0.1)
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    L = ((yy >= 6) & (yy < 24) & (xx >= 5) & (xx < 10)) | ((yy >= 19) & (yy < 24)
                                                           & (xx >= 5) & (xx < 18))
    tri = (yy >= 28) & (yy < 42) & (xx >= 6) & (xx - 6 <= (yy - 28))
    bar = (yy >= 8) & (yy < 13) & (xx >= 22) & (xx < 30)
    objects = [(L, (0.9, 0.7, 0.1)), (tri, (0.8, 0.1, 0.7)), (bar, (0.95, 0.1, 0.1))]
    for m, color in objects:
        if symmetric:
            m = m | m.flip(-1)
        img[:, m] = torch.tensor(color)[:, None]
    if symmetric:
        assert torch.equal(img, img.flip(-1))
    return img


class _ForgetsRoIUnflip(TTAWrapper):
    def _unflip_roi(self, grid, view):
        return grid


class _ForgetsBoxUnflip(TTAWrapper):
    def _to_original(self, boxes, view, view_size, size):
        return super()._to_original(boxes, TTAView(view.min_size, False), view_size, size)


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    if a["boxes"].shape != b["boxes"].shape:
        return False
    return (torch.allclose(a["boxes"], b["boxes"], atol=1e-4)
            and torch.equal(a["labels"], b["labels"])
            and torch.allclose(a["scores"], b["scores"], atol=1e-5)
            and torch.allclose(a["masks"], b["masks"], atol=1e-4)
            and torch.allclose(a["tsdf"], b["tsdf"], atol=1e-4))


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_flip_tta_equals_plain_inference_on_equivariant_detector(symmetric: bool) -> None:
    model = equivariant_model()
    image = _shapes(symmetric)
    with torch.no_grad():
        (plain,) = model([image], return_tsdf=True)
    # six shapes (symmetric) or three, each with a single confident class
    assert len(plain["boxes"]) == (6 if symmetric else 3)
    tta = TTAWrapper(model, flip=True)
    assert tta.views == [TTAView(60, False), TTAView(60, True)]
    seen = []
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    (out,) = tta([image], return_tsdf=True)
    assert len(seen) == 2
    # the second view is the mirrored image (the 60 / 48 resize commutes with mirroring)
    h, w = 60, 80
    assert torch.allclose(seen[1][0, :, :h, :w], seen[0][0, :, :h, :w].flip(-1), atol=1e-6)
    assert _same(out, plain), (out["boxes"], plain["boxes"])
    assert out["masks"].shape == (len(plain["boxes"]), 1, H, W)
    # the pasted masks cover the drawn shapes, to torchvision's pasting (up to one pixel out)
    fg = (image[0] > THR).numpy()
    union = (out["masks"][:, 0] > 0.5).any(0).numpy()
    assert (union >= fg).all() and (union <= ndimage.binary_dilation(fg, np.ones((3, 3)))).all()

    if not symmetric:
        # Mutations: forgetting to mirror the RoI grids back, or the boxes, must show.
        (bad_grid,) = _ForgetsRoIUnflip(model, flip=True)([image], return_tsdf=True)
        assert torch.allclose(bad_grid["boxes"], plain["boxes"], atol=1e-4)
        assert (bad_grid["masks"] - plain["masks"]).abs().max() > 0.5
        (bad_boxes,) = _ForgetsBoxUnflip(model, flip=True)([image], return_tsdf=True)
        assert not _same(bad_boxes, plain)


def test_hflip_boxes_formula() -> None:
    boxes = torch.tensor([[1.0, 2.0, 5.0, 7.0], [0.0, 0.0, 10.0, 3.0]])
    assert torch.equal(hflip_boxes(boxes, 10),
                       torch.tensor([[5.0, 2.0, 9.0, 7.0], [0.0, 0.0, 10.0, 3.0]]))


# ---------------------------------------------------------------------------------------------
# Real tiny models.
BINARY = ("binary", "lsloss")


def _tiny(kind: str) -> nn.Module:
    """A tiny model: the Mask R-CNN baseline (``"binary"``) or a ``mask_head_type``."""
    torch.manual_seed(0)
    kw = tiny_kwargs(min_size=64, max_size=128)
    model = mask_rcnn(**kw) if kind == "binary" else levelset_rcnn(**kw, mask_head_type=kind)
    model.eval()
    model.roi_heads.score_thresh = 0.0
    return model


def _images() -> list[Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 80, 100, generator=g), torch.rand(3, 64, 56, generator=g)]


@pytest.mark.parametrize("kind", ["levelset", "binary", "tsdf", "lsloss", "delse"])
def test_identity_view_equals_plain_inference(kind: str) -> None:
    model = _tiny(kind)
    level = kind not in BINARY
    images = _images()
    with torch.no_grad():
        plain = model(images, return_tsdf=level)
    tta = TTAWrapper(model, flip=False)
    assert tta.views == [TTAView(64, False)]
    outs = tta(images, return_tsdf=level)
    for a, b in zip(outs, plain, strict=True):
        assert set(a) == set(b)
        assert len(b["boxes"]) > 10
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4)
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["scores"], b["scores"], atol=1e-6)
        assert torch.allclose(a["masks"], b["masks"], atol=1e-4)
        if kind not in BINARY:
            assert torch.allclose(a["tsdf"], b["tsdf"], atol=1e-4)
            assert torch.allclose(a["tsdf_init"], b["tsdf_init"], atol=1e-4)


@pytest.mark.parametrize("kind", ["levelset", "binary"])
def test_multiscale_flip_output_contract(kind: str) -> None:
    model = _tiny(kind)
    model.roi_heads.detections_per_img = 30
    images = _images()
    sizes_seen: list[list[tuple[int, int]]] = []
    model.rpn.register_forward_pre_hook(lambda mod, args: sizes_seen.append(
        list(args[0].image_sizes)))
    tta = TTAWrapper(model, min_sizes=(64, 96, 200), flip=True)
    assert [(v.min_size, v.flip) for v in tta.views] == [
        (64, False), (64, True), (96, False), (96, True), (200, False), (200, True)]
    outs = tta(images, return_tsdf=kind == "levelset")
    # every view resized as torchvision does: shorter edge to the size, longer one <= 128
    expected = []
    for v in tta.views:
        row = []
        for img in images:
            h, w = img.shape[-2:]
            s = min(v.min_size / min(h, w), 128 / max(h, w))
            row.append((math.floor(h * s), math.floor(w * s)))
        expected.append(row)
    assert sizes_seen == expected
    assert max(max(s) for row in sizes_seen for s in row) == 128
    n_cls = model.roi_heads.box_predictor.cls_score.out_features
    for out, img in zip(outs, images, strict=True):
        h, w = img.shape[-2:]
        keys = {"boxes", "labels", "scores", "masks"}
        if kind == "levelset":
            keys |= {"tsdf", "tsdf_init"}
        assert set(out) == keys
        K = len(out["boxes"])
        assert 0 < K <= model.roi_heads.detections_per_img
        assert out["boxes"].shape == (K, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (K,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (K,) and out["scores"].dtype == torch.float32
        assert out["masks"].shape == (K, 1, h, w) and out["masks"].dtype == torch.float32
        assert bool((out["labels"] >= 1).all() and (out["labels"] < n_cls).all())
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
        assert bool((out["masks"] >= 0).all() and (out["masks"] <= 1).all())
        b = out["boxes"]
        assert bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all())
        assert bool((b[:, 2] <= w + 1e-4).all() and (b[:, 3] <= h + 1e-4).all())
        assert bool((b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all())
        # merged by class-wise NMS: no two kept boxes of one class overlap above the threshold
        iou = box_iou(b, b)
        same = out["labels"][:, None] == out["labels"][None]
        off = ~torch.eye(K, dtype=torch.bool)
        assert float(torch.cat([iou[same & off], torch.zeros(1)]).max()) <= (
            model.roi_heads.nms_thresh + 1e-6)
        if kind == "levelset":
            assert out["tsdf"].shape == out["tsdf_init"].shape == (K, 1, 112, 112)
            assert len(tsdf_to_polygons(out["tsdf"], out["boxes"])) == K


def test_empty_detections_and_refusals() -> None:
    model = _tiny("levelset")
    model.roi_heads.score_thresh = 1.0
    (out,) = TTAWrapper(model, flip=True)([torch.rand(3, 64, 72)], return_tsdf=True)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, 64, 72)
    assert out["tsdf"].shape == (0, 1, 112, 112)
    with pytest.raises(RuntimeError, match="eval"):
        TTAWrapper(model.train())([torch.rand(3, 64, 64)])
    binary = _tiny("binary")
    with pytest.raises(ValueError, match="BinaryMaskBranch predicts binary masks"):
        TTAWrapper(binary)([torch.rand(3, 64, 64)], return_tsdf=True)
    with pytest.raises(ValueError, match="min_sizes"):
        TTAWrapper(binary, min_sizes=(0, 64))


def test_predict_batch_tta_keeps_phi0_masks() -> None:
    from levelset_rcnn.engine.inference import add_phi0_masks, predict_batch

    model = _tiny("levelset")
    images = _images()[:1]
    (out,) = predict_batch(model, images, torch.device("cpu"), phi0=True, tta=True,
                           tta_min_sizes=[64, 80])
    assert {"masks", "masks_phi0", "tsdf_init"} <= set(out)
    # masks_phi0 is H(mean phi_0) pasted as masks is: recompute it from tsdf_init
    ref = add_phi0_masks({k: out[k] for k in ("masks", "boxes", "tsdf_init")})
    assert torch.equal(ref["masks_phi0"], out["masks_phi0"])
    with torch.no_grad():  # nothing was left switched on: the model's own dict
        assert set(model(images)[0]) == {"boxes", "labels", "scores", "masks"}
    # the wrapper itself drives like a model (return_tsdf, refines_initial_tsdf delegated)
    (again,) = predict_batch(TTAWrapper(model, [64, 80]), images, torch.device("cpu"),
                             phi0=True)
    assert set(again) == set(out) and not model.training
    for key in ("boxes", "masks", "masks_phi0", "tsdf_init"):
        assert torch.equal(again[key], out[key])


# ---------------------------------------------------------------------------------------------
# The command line reaches the engine.
def test_cli_tta_flags_reach_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from levelset_rcnn.cli import main
    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import build_model, save_checkpoint
    from levelset_rcnn.engine import inference as inference_mod
    from levelset_rcnn.modeling import tta as tta_mod

    cfg = load_config(None, ["model.backbone=resnet18", "model.fpn_channels=16",
                             "model.box_representation_size=32", "model.mask_layers=[16]",
                             "model.predictor_channels=16", "model.cv_channels=8",
                             "model.cv_hidden_channels=8", "model.min_size=48",
                             "model.max_size=96", "model.box_detections_per_img=5",
                             "model.box_score_thresh=0.0", "train.device=cpu"])
    model = build_model(cfg.model, num_classes=3)
    weights = tmp_path / "model_final.pth"
    classes = {"class_names": ["__background__", "a", "b"], "label_to_cat_id": {1: 1, 2: 2}}
    save_checkpoint(weights, {"model": model.state_dict(), "config": cfg.to_dict(),
                              "meta": dict(classes)})
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
                    ).save(folder / "x.png")

    views_run: list[list[TTAView]] = []
    forward = tta_mod.TTAWrapper.forward
    monkeypatch.setattr(tta_mod.TTAWrapper, "forward",
                        lambda self, images, **kw: views_run.append(list(self.views))
                        or forward(self, images, **kw))
    assert main(["predict", str(folder), "--weights", str(weights), "--output",
                 str(tmp_path / "pred"), "--tta-sizes", "48", "64", "--score-thresh", "0",
                 "--no-progress"]) == 0
    assert views_run == [[TTAView(48, False), TTAView(48, True), TTAView(64, False),
                          TTAView(64, True)]]
    assert json.loads((tmp_path / "pred" / "results.json").read_text())

    views_run.clear()
    assert main(["predict", str(folder), "--weights", str(weights), "--output",
                 str(tmp_path / "pred2"), "--no-progress"]) == 0
    assert views_run == []  # no flag, no TTA

    captured: dict = {}

    def fake_evaluate(model, loader, evaluator, device, **kw):
        captured.update(kw)
        return {}

    monkeypatch.setattr(inference_mod, "evaluate_model", fake_evaluate)
    monkeypatch.setattr(inference_mod, "make_evaluator", lambda *a, **k: None)
    monkeypatch.setattr("levelset_rcnn.engine.data.build_datasets",
                        lambda cfg, splits: {"val": types.SimpleNamespace(**classes)})
    monkeypatch.setattr("levelset_rcnn.engine.data.build_val_loader", lambda *a, **k: [])
    assert main(["eval", "--weights", str(weights), "--output", str(tmp_path / "ev"),
                 "--tta", "--no-progress", "eval.tta_flip=false"]) == 0
    assert captured == {"progress": False, "tta": True, "tta_flip": False, "tta_min_sizes": []}
    capsys.readouterr()
