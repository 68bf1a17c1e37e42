"""Exact (float-box) pasting of RoI-grid maps against closed-form and contour references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import measure
from torchvision.models.detection.roi_heads import paste_masks_in_image

from levelset_rcnn.levelset import masks_to_tsdf, tsdf_to_polygons
from levelset_rcnn.modeling import mask_probabilities
from levelset_rcnn.modeling.paste import _paste_whole_image, paste_roi_maps
from levelset_rcnn.modeling.transform import paste_masks

BOXES = torch.tensor([[10.3, 20.7, 60.9, 75.2], [0.0, 0.0, 33.0, 17.5], [40.25, 5.5, 79.0, 44.0]],
                     dtype=torch.float64)


def test_a_linear_map_is_pasted_exactly_at_pixel_centres():
    """Bilinear sampling reproduces a linear function: the paste of the RoI grid of
    ``f(x, y) = a x + b y + c`` is ``f`` at every pixel centre well inside the box."""
    M, H, W = 28, 80, 90
    a, b, c = 0.37, -1.1, 2.0
    maps = []
    for x0, y0, x1, y1 in BOXES.tolist():
        xs = x0 + (torch.arange(M, dtype=torch.float64) + 0.5) * (x1 - x0) / M
        ys = y0 + (torch.arange(M, dtype=torch.float64) + 0.5) * (y1 - y0) / M
        maps.append(a * xs[None, :] + b * ys[:, None] + c)
    out = paste_roi_maps(torch.stack(maps)[:, None], BOXES, (H, W), fill=0.0)
    u = torch.arange(W, dtype=torch.float64) + 0.5
    v = torch.arange(H, dtype=torch.float64) + 0.5
    for k, (x0, y0, x1, y1) in enumerate(BOXES.tolist()):
        hx, hy = 0.5 * (x1 - x0) / M, 0.5 * (y1 - y0) / M  # between the outer cell centres
        cols = (u >= x0 + hx) & (u <= x1 - hx)
        rows = (v >= y0 + hy) & (v <= y1 - hy)
        want = a * u[None, cols] + b * v[rows, None] + c
        torch.testing.assert_close(out[k, 0][rows][:, cols], want, rtol=0, atol=1e-10)
        far = torch.ones(H, W, dtype=torch.bool)
        far[max(0, int(y0) - 2):int(y1) + 3, max(0, int(x0) - 2):int(x1) + 3] = False
        assert (out[k, 0][far] == 0).all()


def test_the_cropped_paste_equals_the_whole_image_paste():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 1, 112, 112, generator=g, dtype=torch.float64) * 2 - 1
    crop = paste_roi_maps(maps, BOXES, (80, 90), fill=-1.0)
    whole = _paste_whole_image(maps + 1.0, BOXES, 80, 90) - 1.0
    torch.testing.assert_close(crop, whole, rtol=0, atol=1e-12)


def test_then_is_applied_near_the_boxes_with_the_same_values():
    """``then`` (the level set's mask probabilities) on the cropped paste gives exactly the
    probabilities of the pasted level set, inside the boxes and out, including a box that
    leaves the image; float32, as the model pastes."""
    g = torch.Generator().manual_seed(1)
    maps = (torch.rand(4, 1, 112, 112, generator=g) * 2 - 1).float()
    boxes = torch.cat([BOXES, torch.tensor([[70.0, 60.0, 120.0, 95.0]], dtype=torch.float64)])
    want = mask_probabilities(paste_roi_maps(maps, boxes, (80, 90), fill=-1.0))
    got = paste_roi_maps(maps, boxes, (80, 90), fill=-1.0, then=mask_probabilities)
    assert got.dtype == want.dtype == torch.float32
    assert torch.equal(got, want)
    assert torch.equal(got[:, :, 0, -1], torch.full((4, 1), float(mask_probabilities(
        torch.tensor(-1.0)))))  # the corner far from every box: H(fill)


def _distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from each point to a closed polyline."""
    a, b = polygon[:-1], polygon[1:]
    ab = b - a
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)
    proj = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - proj, axis=-1).min(1)


@pytest.mark.parametrize("mode, limit", [("exact", 0.5), ("torchvision", None)])
def test_the_pasted_zero_level_set_is_the_polygon(mode, limit):
    """The 0.5 level of the pasted mask and tsdf_to_polygons' sub-pixel contour agree within
    half a pixel with the exact paste; torchvision's whole-pixel rounding does not."""
    M, H, W = 112, 96, 96
    yy, xx = torch.meshgrid(torch.arange(M) + 0.5, torch.arange(M) + 0.5, indexing="ij")
    disk = ((yy - 50) ** 2 + (xx - 61) ** 2).sqrt() < 38
    tsdf = masks_to_tsdf(disk[None], 12.0)[:, None].double()
    worst = []
    for box in BOXES.tolist() + [[12.6, 14.4, 89.5, 77.3]]:
        box_t = torch.tensor([box], dtype=torch.float64)
        pasted = paste_masks({"masks": mask_probabilities(tsdf), "tsdf": tsdf},
                             box_t.float() if mode == "torchvision" else box_t, (H, W), mode=mode)
        prob = pasted[0, 0].double().numpy()
        contours = measure.find_contours(prob, 0.5)
        assert contours
        ours = np.concatenate([c[:, ::-1] + 0.5 for c in contours])  # (x, y), centres at +0.5
        (poly,) = tsdf_to_polygons(tsdf.float(), box_t.float())[0]
        inside = ((ours[:, 0] > 1) & (ours[:, 0] < W - 1) & (ours[:, 1] > 1)
                  & (ours[:, 1] < H - 1))  # the image border clips both the same way
        worst.append(float(_distance(ours[inside], poly).max()))
    if limit is not None:
        assert max(worst) < limit, worst
    else:
        assert max(worst) > 0.5, worst  # the rounding is as large as AF1's tolerance


def test_exact_paste_is_the_default_for_level_sets_and_an_option_for_binary():
    from levelset_rcnn.modeling import levelset_rcnn, mask_rcnn

    from .common import tiny_kwargs

    assert levelset_rcnn(**tiny_kwargs()).transform.mask_paste == "exact"
    assert mask_rcnn(**tiny_kwargs()).transform.mask_paste == "torchvision"
    assert mask_rcnn(**tiny_kwargs(), mask_paste="exact").transform.mask_paste == "exact"
    torch.manual_seed(0)
    model = mask_rcnn(**tiny_kwargs(), mask_paste="exact").eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])[0]
    assert len(out["boxes"]) > 0 and out["masks"].shape[-2:] == (96, 96)
    # the same RoI probabilities, pasted by torchvision: close but not equal
    ref = paste_masks_in_image(out["masks"][:, :, :1, :1].expand(-1, -1, 28, 28) * 0,
                               out["boxes"], (96, 96))
    assert ref.shape == out["masks"].shape
