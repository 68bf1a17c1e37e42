"""Fast train / eval / contract tests of LevelSet R-CNN on tiny CPU models."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor

from levelset_rcnn.levelset import heaviside, tsdf_to_polygons
from levelset_rcnn.modeling import (
    LevelSetRCNN,
    levelset_rcnn,
    load_maskrcnn_weights,
    mask_branch_settings,
    mask_probabilities,
    mask_rcnn,
)
from levelset_rcnn.modeling.builders import _make_backbone

from .common import TINY, synthetic_sample, tiny_kwargs

LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def tiny_model(**overrides) -> LevelSetRCNN:
    torch.manual_seed(0)
    return levelset_rcnn(**tiny_kwargs(**overrides))


def torchvision_tiny_maskrcnn() -> MaskRCNN:
    """torchvision's own Mask R-CNN with the same tiny backbone and head widths."""
    torch.manual_seed(1)
    backbone = _make_backbone("resnet18", None, trainable_layers=None, fpn_channels=32,
                              frozen_bn=False, progress=False)
    keep = {k: v for k, v in TINY.items() if k.startswith(("rpn_", "box_", "min_", "max_"))}
    keep.pop("box_representation_size")
    return MaskRCNN(
        backbone, None, box_head=TwoMLPHead(32 * 49, 64), box_predictor=FastRCNNPredictor(64, 4),
        mask_head=MaskRCNNHeads(32, [32, 32], 1), mask_predictor=MaskRCNNPredictor(32, 32, 4),
        **keep,
    )


def batch(counts, size=(96, 96)):
    samples = [synthetic_sample(n, size=size, seed=i) for i, n in enumerate(counts)]
    return [s[0] for s in samples], [s[1] for s in samples]


@pytest.mark.parametrize("counts", [(0,), (1,), (4, 0, 3)], ids=["zero", "one", "many"])
def test_train_forward_backward(counts):
    model = tiny_model().train()
    images, targets = batch(counts)
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS | {"loss_tsdf_init", "loss_tsdf_final"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.mask_branch.feature_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if sum(counts) == 0:
        assert losses["loss_tsdf_final"].item() == 0


@pytest.mark.parametrize("counts", [(0,), (1,), (3, 2)], ids=["zero", "one", "many"])
def test_eval_forward(counts):
    model = tiny_model().eval()
    model.roi_heads.score_thresh = 0.0
    images, _ = batch(counts, size=(96, 80))
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for r in out:
        K = r["boxes"].shape[0]
        assert r["masks"].shape == (K, 1, 96, 80)


def test_output_contract_equals_torchvision_maskrcnn():
    ref = torchvision_tiny_maskrcnn().eval()
    ours = tiny_model().eval()
    report = load_maskrcnn_weights(ours, ref.state_dict())
    assert not report.mismatched
    assert {k.split(".")[1] for k in report.unexpected} == {"mask_predictor"}
    for m in (ref, ours):
        m.roi_heads.score_thresh = 0.0
    images = [torch.rand(3, 96, 96), torch.rand(3, 72, 100)]
    with torch.no_grad():
        a, b = ref(images), ours(images)
    for ra, rb, img in zip(a, b, images, strict=True):
        assert set(ra) == set(rb) == {"boxes", "labels", "scores", "masks"}
        # Same backbone, RPN and box weights: identical detections.
        torch.testing.assert_close(ra["boxes"], rb["boxes"])
        assert torch.equal(ra["labels"], rb["labels"])
        for key in ra:
            assert ra[key].shape == rb[key].shape, key
            assert ra[key].dtype == rb[key].dtype, key
            assert ra[key].device == rb[key].device, key
        K = ra["boxes"].shape[0]
        assert K > 0
        assert rb["masks"].shape == (K, 1, *img.shape[-2:])
        assert rb["masks"].min() >= 0 and rb["masks"].max() <= 1
        assert rb["scores"].min() >= 0 and rb["scores"].max() <= 1


def test_extras_tsdf_and_contours():
    model = tiny_model().eval()
    model.roi_heads.score_thresh = 0.0
    images = [torch.rand(3, 48, 32)]  # resized 2x by the transform: results in 48x32 coords
    with torch.no_grad():
        plain = model(images)[0]
        r = model(images, return_tsdf=True)[0]
    assert set(plain) == {"boxes", "labels", "scores", "masks"}  # Mask R-CNN's dict
    for k in plain:
        torch.testing.assert_close(plain[k], r[k])
    K = r["boxes"].shape[0]
    assert K > 0 and r["masks"].shape == (K, 1, 48, 32)
    assert r["boxes"][:, 2].max() <= 32 and r["boxes"][:, 3].max() <= 48
    assert r["tsdf"].shape == r["tsdf_init"].shape == (K, 1, 112, 112)
    assert r["tsdf_init"].abs().max() <= 1
    # Masks are H(phi_N): thresholding at 0.5 is the zero level set.
    assert torch.equal(mask_probabilities(r["tsdf"]) >= 0.5, heaviside(r["tsdf"], 0.1) >= 0.5)
    contours = tsdf_to_polygons(r["tsdf"], r["boxes"])  # traced where they are used
    assert len(contours) == K
    for polys, box in zip(contours, r["boxes"], strict=True):
        for p in polys:
            assert p.dtype == np.float64 and p.shape[1] == 2
            assert np.allclose(p[0], p[-1])
            x0, y0, x1, y1 = box.tolist()
            assert p[:, 0].min() >= x0 - 1e-6 and p[:, 0].max() <= x1 + 1e-6
            assert p[:, 1].min() >= y0 - 1e-6 and p[:, 1].max() <= y1 + 1e-6


def test_gradients_reach_every_head():
    model = tiny_model().train()
    images, targets = batch((3, 2))
    sum(model(images, targets).values()).backward()
    rh, mb = model.roi_heads, model.roi_heads.mask_branch
    for name, module in [("backbone", model.backbone), ("rpn", model.rpn),
                         ("box_head", rh.box_head), ("mask_trunk", rh.mask_head),
                         ("tsdf", mb.tsdf_predictor), ("hyper", mb.hyper_head),
                         ("features", mb.feature_head)]:
        for pname, p in module.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname}"


@pytest.mark.parametrize("variant", ["levelset", "delse", "delse_hp"])
@pytest.mark.parametrize("detach", [False, True])
def test_detach_phi0_blocks_phiN_gradient_upstream_of_phi0(detach, variant):
    """Table 4: with detach_phi0 the phi_N loss gives exactly zero gradient to every
    mask-branch parameter phi_0 depends on (the TSDF head and the shared trunk), and still
    trains the heads that only the evolution uses."""
    model = tiny_model(detach_phi0=detach, mask_head_type=variant).train()
    images, targets = batch((3,))
    losses = model(images, targets)
    losses["loss_tsdf_final"].backward()
    rh, mb = model.roi_heads, model.roi_heads.mask_branch

    def grad(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    upstream = [mb.tsdf_predictor, rh.mask_head]
    evolution = [m for m in (getattr(mb, n, None) for n in ("hyper_head", "feature_head",
                                                            "velocity_head"))
                 if m is not None]
    assert evolution and all(grad(m) > 0 for m in evolution)
    for m in upstream:
        if detach:
            assert all(p.grad is None or not p.grad.any() for p in m.parameters())
        else:
            assert grad(m) > 0
    # phi_0's own loss still trains the trunk and the TSDF head
    model.zero_grad()
    model(images, targets)["loss_tsdf_init"].backward()
    assert all(grad(m) > 0 for m in upstream)


@pytest.mark.parametrize(
    "overrides, mask_keys",
    [
        (dict(mask_head_type="tsdf"), {"loss_tsdf_init"}),
        (dict(mask_head_type="binary"), {"loss_mask"}),
        (dict(mask_head_type="binary", mask_resolution=112), {"loss_mask"}),
        (dict(hyperparams="global", num_steps=2, cv_channels=8), {"loss_tsdf_init",
                                                                   "loss_tsdf_final"}),
        (dict(class_agnostic=True, num_steps=1), {"loss_tsdf_init", "loss_tsdf_final"}),
    ],
    ids=["tsdf-target", "maskrcnn-28", "maskrcnn-112", "global-hyper", "agnostic"],
)
def test_ablations_train_and_eval(overrides, mask_keys):
    model = tiny_model(**overrides).train()
    images, targets = batch((2, 1))
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS | mask_keys
    sum(losses.values()).backward()
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model(images)
    for r, img in zip(out, images, strict=True):
        assert r["masks"].shape[1:] == (1, *img.shape[-2:])
        assert r["masks"].dtype == torch.float32


def test_global_hyperparameters_are_learned():
    model = tiny_model(hyperparams="global").train()
    images, targets = batch((2,))
    model(images, targets)["loss_tsdf_final"].backward()
    assert model.mask_branch.hyper_head.logits.grad.abs().sum() > 0


def test_custom_submodules_are_used():
    from levelset_rcnn.levelset import UpsampledChanVese
    from levelset_rcnn.modeling import (
        ChanVeseFeatureHead,
        GlobalHyperParameters,
        LevelSetBranch,
        TSDFPredictor,
    )

    tsdf = TSDFPredictor(32, 4, hidden_channels=8, class_agnostic=True)
    hyper = GlobalHyperParameters(3, init={"dt": 0.3})
    feats = ChanVeseFeatureHead(32, out_channels=8, hidden_channels=8)
    branch = LevelSetBranch(tsdf, hyper, feats, UpsampledChanVese(3))
    detector_only = {k: v for k, v in TINY.items() if k not in mask_branch_settings()}
    model = levelset_rcnn(**detector_only, mask_branch=branch, mask_head_type="binary")
    assert model.mask_branch is branch  # the branch wins
    assert model.mask_branch.tsdf_predictor is tsdf and model.mask_branch.hyper_head is hyper
    images, targets = batch((2,))
    losses = model.train()(images, targets)
    assert {"loss_tsdf_init", "loss_tsdf_final"} <= set(losses)
    sum(losses.values()).backward()
    assert hyper.logits.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="num_steps"):
        levelset_rcnn(**detector_only, mask_branch=branch, num_steps=2)  # settings go to build


def test_parts_model_equals_builder():
    """LevelSetRCNN takes parts: the same parts as the builder's give the same outputs."""
    from levelset_rcnn.modeling import LevelSetBranch

    built = tiny_model().eval()
    body = _make_backbone("resnet18", None, trainable_layers=None, fpn_channels=32,
                          frozen_bn=False, progress=False)
    branch = LevelSetBranch.build(32, 4, predictor_channels=32, cv_channels=16,
                                  cv_hidden_channels=16, cv_features="learned")
    keep = {k: v for k, v in TINY.items() if k.startswith(("rpn_", "box_", "min_", "max_"))}
    keep.pop("box_representation_size")
    model = LevelSetRCNN(body, None, mask_branch=branch,
                         mask_head=MaskRCNNHeads(32, [32, 32], 1),
                         box_head=TwoMLPHead(32 * 49, 64), box_predictor=FastRCNNPredictor(64, 4),
                         **keep).eval()
    model.load_state_dict(built.state_dict())
    for m in (built, model):
        m.roi_heads.score_thresh = 0.0
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        a, b = built(images, return_tsdf=True)[0], model(images, return_tsdf=True)[0]
    assert set(a) == set(b) and len(a["boxes"]) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_unknown_builder_keyword_is_refused_by_name():
    with pytest.raises(TypeError, match="'truncaton'"):
        tiny_model(truncaton=3.0)
    model = tiny_model(truncation=3.0)
    assert model.mask_branch.truncation == 3.0


def test_settings_of_another_variant_are_ignored_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="levelset_rcnn.modeling.builders"):
        model = tiny_model(delse_dt=3.0, mask_resolution=28)  # 28: the default, no warning
    assert "delse_dt=3.0" in caplog.text and "mask_resolution" not in caplog.text
    assert not hasattr(model.mask_branch, "dt")


def test_legacy_checkpoint_keys_load():
    """Checkpoints written when the heads sat on the RoI heads (``roi_heads.tsdf_predictor.*``)
    load into the branch."""
    model = tiny_model()
    state = {k.replace("roi_heads.mask_branch.", "roi_heads."): v
             for k, v in model.state_dict().items()}
    assert any(k.startswith("roi_heads.feature_head.") for k in state)
    torch.manual_seed(5)
    other = levelset_rcnn(**tiny_kwargs())
    assert not torch.equal(other.mask_branch.feature_head.project.weight,
                           model.mask_branch.feature_head.project.weight)
    other.load_state_dict(state)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_mask_rcnn_baseline_builder():
    from levelset_rcnn.modeling import BinaryMaskBranch

    model = mask_rcnn(**tiny_kwargs())
    assert isinstance(model.mask_branch, BinaryMaskBranch)
    assert not model.refines_initial_tsdf
    with pytest.raises(ValueError, match="return_tsdf needs .* BinaryMaskBranch"):
        model.eval()(torch.rand(1, 3, 64, 64).unbind(0), return_tsdf=True)


def test_state_dict_round_trip(tmp_path):
    model = tiny_model().eval()
    model.roi_heads.score_thresh = 0.0
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    other = levelset_rcnn(**tiny_kwargs()).eval()
    other.roi_heads.score_thresh = 0.0
    other.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        a, b = model(images)[0], other(images)[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def _targets():
    images, targets = batch((2,))
    return images, targets


def test_error_targets_length_mismatch():
    model = tiny_model().train()
    images, targets = _targets()
    with pytest.raises(ValueError, match="1 images but 2 targets"):
        model(images, targets * 2)
    targets[0]["labels"] = targets[0]["labels"][:1]
    with pytest.raises(ValueError, match="mismatched lengths"):
        model(images, targets)


def test_error_zero_area_box():
    model = tiny_model().train()
    images, targets = _targets()
    targets[0]["boxes"][1, 2] = targets[0]["boxes"][1, 0]
    with pytest.raises(ValueError, match="box 1 .* zero or negative area"):
        model(images, targets)


def test_error_masks_wrong_size():
    model = tiny_model().train()
    images, targets = _targets()
    targets[0]["masks"] = targets[0]["masks"][:, :80]
    with pytest.raises(ValueError, match=r"masks are \(80, 96\) but the image is \(96, 96\)"):
        model(images, targets)


def test_error_missing_targets_and_bad_types():
    model = tiny_model().train()
    images, targets = _targets()
    with pytest.raises(ValueError, match="targets are needed"):
        model(images)
    targets[0]["labels"] = targets[0]["labels"].int()
    with pytest.raises(TypeError, match="int64"):
        model(images, targets)


def test_model_implicit_equals_explicit():
    implicit = tiny_model(cv_features="interpolated").eval()
    explicit = tiny_model(cv_features="interpolated", cv_upsampling="explicit").eval()
    explicit.load_state_dict(implicit.state_dict())
    for m in (implicit, explicit):
        m.roi_heads.score_thresh = 0.0
    images, targets = batch((2,))
    with torch.no_grad():
        a, b = implicit(images, return_tsdf=True)[0], explicit(images, return_tsdf=True)[0]
    torch.testing.assert_close(a["tsdf"], b["tsdf"], atol=1e-4, rtol=1e-4)
    implicit.train()
    explicit.train()
    torch.manual_seed(0)
    la = implicit(images, targets)
    torch.manual_seed(0)
    lb = explicit(images, targets)
    torch.testing.assert_close(la["loss_tsdf_final"], lb["loss_tsdf_final"], atol=1e-4,
                               rtol=1e-4)
