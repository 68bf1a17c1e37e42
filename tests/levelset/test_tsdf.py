import numpy as np
import pytest
import torch
from scipy import ndimage

from levelset_rcnn.levelset import masks_to_tsdf, truncated_edt, tsdf_to_masks


def _random_shapes(n, size, seed):
    """Blobs with holes, thin parts and several components: smoothed noise, thresholded."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=rng.uniform(1, 6))
        out.append(noise > rng.uniform(-0.02, 0.05))
    return np.stack(out)


def _scipy_tsdf(mask, truncation):
    def edt(x):  # distance of each True pixel to the nearest False one; inf if there is none
        return ndimage.distance_transform_edt(x) if (~x).any() else np.full(x.shape, np.inf)

    signed = np.where(mask, edt(mask) - 0.5, 0.5 - edt(~mask))
    return np.clip(signed, -truncation, truncation) / truncation


@pytest.mark.parametrize("truncation", [1.0, 3.0, 7.5, 20.0])
def test_masks_to_tsdf_matches_scipy_edt(truncation):
    masks = _random_shapes(12, 48, seed=int(truncation * 10))
    masks[0] = True  # all inside
    masks[1] = False  # all outside
    masks[2] = False
    masks[2, 20, 5:40] = True  # a one-pixel-thin line
    ours = masks_to_tsdf(torch.from_numpy(masks), truncation).numpy()
    expected = np.stack([_scipy_tsdf(m, truncation) for m in masks])
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_tsdf_range_sign_and_round_trip():
    masks = torch.from_numpy(_random_shapes(6, 40, seed=1))
    tsdf = masks_to_tsdf(masks.float(), 5.0)
    assert tsdf.min() >= -1 and tsdf.max() <= 1
    assert torch.equal(tsdf_to_masks(tsdf), masks)


def test_truncated_edt_matches_scipy_below_truncation():
    masks = _random_shapes(4, 37, seed=2)
    ours = truncated_edt(torch.from_numpy(masks), 6.0).numpy()
    ref = np.stack([ndimage.distance_transform_edt(m) for m in masks])
    below = ref <= 6.0
    np.testing.assert_allclose(ours[below], ref[below], atol=1e-5)
    assert (ours[~below] >= 6.0).all()


def test_rectangular_and_empty_batches():
    masks = torch.zeros(2, 10, 30, dtype=torch.bool)
    masks[:, 3:7, 5:25] = True
    t = masks_to_tsdf(masks, 2.0)
    assert t.shape == (2, 10, 30)
    assert masks_to_tsdf(torch.zeros(0, 8, 8, dtype=torch.bool), 2.0).shape == (0, 8, 8)
    with pytest.raises(ValueError):
        masks_to_tsdf(masks, 0.0)


@pytest.mark.cuda
def test_tsdf_on_cuda_equals_cpu():
    masks = torch.from_numpy(_random_shapes(50, 112, seed=3))
    torch.testing.assert_close(masks_to_tsdf(masks.cuda(), 14.0).cpu(), masks_to_tsdf(masks, 14.0))
