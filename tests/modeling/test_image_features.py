"""Chan-Vese features from the image inside each box (``cv_image_channels``, beyond the paper).

References: the crops against plain slicing and ``scipy.ndimage.map_coordinates``; the
evolution with a zero image mix against the branch without image features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision.models.detection.image_list import ImageList

from levelset_rcnn.modeling import builders
from levelset_rcnn.modeling.mask_branches import LevelSetBranch

from .common import synthetic_sample, tiny_kwargs


def _model(**kw):
    torch.manual_seed(0)
    return builders.levelset_rcnn(**tiny_kwargs(cv_image_channels=1, **kw))


def _crops_seen_by_branch(model, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """What the image head receives for ``boxes`` on the (unresized) batch ``image``."""
    seen = {}
    head = model.roi_heads.mask_branch.image_head
    handle = head.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    size = tuple(image.shape[-2:])
    il = ImageList(image, [size])
    with torch.no_grad():
        features = model.head_features(model.backbone(image), il)
        model.roi_heads.mask_maps(features, [boxes], [size], [torch.ones(len(boxes),
                                                                           dtype=torch.int64)])
    handle.remove()
    return seen["x"]


def test_crops_are_the_pixels_inside_the_box():
    model = _model().eval()
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, 160, 192, generator=g)
    # a 112-pixel box on pixel edges: one bin per pixel, sampled at its centre
    crops = _crops_seen_by_branch(model, image, torch.tensor([[10.0, 20.0, 122.0, 132.0]]))
    torch.testing.assert_close(crops[0], image[0, :, 20:132, 10:122], atol=1e-5, rtol=0)


def test_crops_of_a_small_box_are_bilinear_at_pixel_centres():
    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, 96, 96, generator=g)
    x0, y0, x1, y1 = 12.3, 30.7, 49.9, 58.2
    crops = _crops_seen_by_branch(model, image, torch.tensor([[x0, y0, x1, y1]]))
    M = 112
    # sample i of the box lies at x0 + (i + 0.5) w / M in continuous coordinates, i.e. at
    # index coordinate that minus 0.5 (pixel k covers [k, k + 1))
    xs = x0 + (np.arange(M) + 0.5) * (x1 - x0) / M - 0.5
    ys = y0 + (np.arange(M) + 0.5) * (y1 - y0) / M - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    for c in range(3):
        ref = ndimage.map_coordinates(image[0, c].double().numpy(), [yy, xx], order=1,
                                      mode="nearest")
        np.testing.assert_allclose(crops[0, c].numpy(), ref, atol=1e-4)


def test_head_features_add_the_image_only_when_read():
    plain = builders.levelset_rcnn(**tiny_kwargs())
    reads = _model()
    assert not plain.roi_heads.mask_branch.reads_image and reads.roi_heads.mask_branch.reads_image
    feats = {"0": torch.zeros(1, 32, 8, 8)}
    il = ImageList(torch.ones(1, 3, 32, 32), [(32, 32)])
    assert plain.head_features(feats, il) is feats
    out = reads.head_features(feats, il)
    assert set(out) == {"0", "image"} and out["image"] is il.tensors


def test_mask_maps_without_the_image_names_the_fix():
    model = _model().eval()
    feats = model.backbone(torch.zeros(1, 3, 96, 96))
    with pytest.raises(KeyError, match="head_features"):
        model.roi_heads.mask_maps(feats, [torch.tensor([[1.0, 1.0, 20.0, 20.0]])], [(96, 96)],
                                  [torch.ones(1, dtype=torch.int64)])


def test_training_reaches_the_image_mix_and_inference_runs():
    model = _model()
    image, target = synthetic_sample(3, seed=3)
    model.train()
    losses = model([image], [target])
    sum(losses.values()).backward()
    grad = model.roi_heads.mask_branch.image_head.mix.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([image], return_tsdf=True)
    assert out["masks"].shape[-2:] == image.shape[-2:]
    assert torch.isfinite(out["tsdf"]).all()


def _branch(cv_image_channels: int) -> LevelSetBranch:
    torch.manual_seed(0)
    return LevelSetBranch.build(16, 3, predictor_channels=8, cv_channels=8,
                                cv_hidden_channels=8, cv_fine_channels=4,
                                cv_image_channels=cv_image_channels).eval()


def test_a_zero_image_mix_gives_the_paper_branch_and_the_image_moves_phi_n():
    """A constant feature channel adds nothing to the Chan-Vese energy, so with the mix at zero
    the branch evolves exactly as the branch without image features; with the mix on, the
    image changes phi_N (and not phi_0)."""
    paper, with_image = _branch(0), _branch(2)
    missing, unexpected = with_image.load_state_dict(paper.state_dict(), strict=False)
    assert not unexpected and missing == ["image_head.mix.weight"]
    x = torch.randn(4, 16, 14, 14)
    labels = torch.tensor([1, 2, 1, 2])
    g = torch.Generator().manual_seed(4)
    image = torch.randn(4, 3, 112, 112, generator=g)
    with torch.no_grad():
        ref = paper(x, labels)
        with_image.image_head.mix.weight.zero_()
        zero = with_image(x, labels, image=image)
        torch.testing.assert_close(zero["phiN"], ref["phiN"], atol=1e-5, rtol=0)
        with_image.image_head.mix.weight.fill_(1.0)
        on = with_image(x, labels, image=image)
    torch.testing.assert_close(on["phi0"], ref["phi0"])
    assert (on["phiN"] - ref["phiN"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="image"):
        with_image(x, labels)


def test_image_features_need_full_resolution_features():
    with pytest.raises(ValueError, match="explicit"):
        LevelSetBranch.build(16, 3, cv_features="interpolated", cv_image_channels=1)
    branch = LevelSetBranch.build(16, 3, cv_features="interpolated", cv_upsampling="explicit",
                                  cv_image_channels=1)
    assert branch.reads_image
    with pytest.raises(ValueError, match=">= 0"):
        LevelSetBranch.build(16, 3, cv_image_channels=-1)
