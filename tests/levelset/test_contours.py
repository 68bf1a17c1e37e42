import numpy as np
import pytest
import torch
from skimage.draw import polygon as draw_polygon

from levelset_rcnn.levelset import level_set_polygons, masks_to_tsdf, tsdf_to_polygons


def _circle_sdf(n, cx, cy, r):
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    return r - np.hypot(x - cx, y - cy)


def test_circle_contour_is_subpixel_accurate_in_image_coordinates():
    n, cx, cy, r = 28, 13.3, 14.1, 8.6
    phi = torch.from_numpy(_circle_sdf(n, cx, cy, r))[None]
    box = torch.tensor([[100.0, 50.0, 100.0 + 4 * n, 50.0 + 2 * n]])  # x scale 4, y scale 2
    (polys,) = tsdf_to_polygons(phi, box)
    assert len(polys) == 1
    xy = polys[0]
    assert np.allclose(xy[0], xy[-1])  # closed
    # Back to RoI pixel coordinates and compare with the analytic circle.
    col = (xy[:, 0] - 100.0) / 4 - 0.5
    row = (xy[:, 1] - 50.0) / 2 - 0.5
    radius = np.hypot(col - cx, row - cy)
    assert np.abs(radius - r).max() < 0.05


def test_contours_close_at_roi_border_and_match_mask_area():
    mask = np.zeros((40, 40), dtype=bool)
    mask[:, 25:] = True  # touches three borders
    mask[10:20, 5:12] = True  # a second component
    tsdf = masks_to_tsdf(torch.from_numpy(mask)[None], 6.0)
    polys = level_set_polygons(tsdf[0].numpy())
    assert len(polys) == 2
    raster = np.zeros_like(mask)
    for p in polys:
        assert np.allclose(p[0], p[-1])
        rr, cc = draw_polygon(p[:, 0], p[:, 1], shape=mask.shape)
        raster[rr, cc] = True
    assert (raster == mask).mean() > 0.97


def test_tsdf_to_polygons_validates_shapes():
    with pytest.raises(ValueError):
        tsdf_to_polygons(torch.zeros(2, 8, 8), torch.zeros(3, 4))
    assert tsdf_to_polygons(-torch.ones(1, 1, 8, 8), torch.tensor([[0.0, 0, 8, 8]])) == [[]]
