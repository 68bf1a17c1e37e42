"""Classic Chan-Vese (eq. 1-5) on image intensities.

Discretisation differences from :func:`skimage.segmentation.chan_vese`, which limit how close
the two can be: scikit-image takes Getreuer's semi-implicit step with one-sided differences,
hard region averages and ``delta = 1/(1 + x^2)``; ours is the paper's explicit step (eq. 5)
with Sobel derivatives, soft averages (eq. 9) and ``delta`` of peak ``1/pi``. Both descend
the same energy, so on clean two-region images they find the same partition; on natural
images, thin structures and low-contrast texture can settle differently.
"""

import numpy as np
import pytest
import torch
from skimage import data
from skimage.segmentation import chan_vese as sk_chan_vese
from skimage.transform import rescale

from levelset_rcnn.levelset import chan_vese


def _iou_either_polarity(a, b):
    def iou(x, y):
        return (x & y).sum() / max((x | y).sum(), 1)

    return max(iou(a, b), iou(~a, b))


def _two_region_images(n, size, noise, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, truths = [], []
    for k in range(n):
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        if k % 2:
            truth = np.hypot(xx - cx, yy - cy) < rng.uniform(0.18, 0.3) * size
        else:
            h, w = rng.uniform(0.2, 0.35, 2) * size
            truth = (np.abs(xx - cx) < w) & (np.abs(yy - cy) < h)
        fg, bg = rng.uniform(0.6, 0.8), rng.uniform(0.2, 0.35)  # contrast >= 0.25
        img = np.where(truth, fg, bg) + noise * rng.standard_normal((size, size))
        images.append(img)
        truths.append(truth)
    return np.stack(images).astype(np.float32), np.stack(truths)


def test_noisy_two_region_images_converge_to_truth():
    """Noise sigma 0.1 against a contrast of 0.25-0.6. At sigma 0.2 our explicit step already
    fails on some of these images (IoU 0.63-0.98, measured) where scikit-image's
    semi-implicit step still converges: see the module docstring."""
    images, truths = _two_region_images(8, 64, noise=0.1, seed=0)
    _, masks = chan_vese(torch.from_numpy(images), num_iters=400, mu=0.1)
    for m, t in zip(masks[:, 0].numpy(), truths, strict=True):
        assert _iou_either_polarity(m, t) >= 0.95


def test_agrees_with_skimage_run_to_convergence_on_two_region_images():
    images, _ = _two_region_images(4, 64, noise=0.1, seed=1)
    _, masks = chan_vese(torch.from_numpy(images), num_iters=400, mu=0.1)
    for m, img in zip(masks[:, 0].numpy(), images, strict=True):
        ref = sk_chan_vese(img.astype(np.float64), mu=0.1, lambda1=1.0, lambda2=1.0,
                           tol=1e-5, max_num_iter=2000, dt=0.5)
        assert _iou_either_polarity(m, ref) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize(("name", "floor"), [("camera", 0.95), ("coins", 0.93)])
def test_agreement_with_skimage_on_bundled_photographs(name, floor):
    """At half resolution (to keep scikit-image's run short), 300 of our steps with the
    defaults against scikit-image to tol 1e-4, both with mu = 0.25; measured IoU: camera
    0.966, coins 0.950. The floors leave about 1.5 points; the remaining gap is the
    discretisation difference of the module docstring (on coins, the low-contrast coin rims
    and the shading at the top settle differently)."""
    img = rescale(getattr(data, name)().astype(np.float64), 0.5, anti_aliasing=True)
    ref = sk_chan_vese(img, mu=0.25, lambda1=1.0, lambda2=1.0, tol=1e-4,
                       max_num_iter=1000, dt=0.5)
    _, mask = chan_vese(torch.from_numpy(img)[None], num_iters=300, mu=0.25)
    agreement = _iou_either_polarity(mask[0, 0].numpy(), ref)
    print(f"{name}: IoU with scikit-image = {agreement:.4f}")
    assert agreement >= floor


def test_init_options_and_errors():
    images, _ = _two_region_images(2, 32, noise=0.05, seed=2)
    x = torch.from_numpy(images)
    phis, mask = chan_vese(x, num_iters=3, init="disk", return_all=True)
    assert len(phis) == 4 and mask.shape == (2, 1, 32, 32) and mask.dtype == torch.bool
    custom = torch.zeros(32, 32)
    custom[8:24, 8:24] = 1.0
    phi, _ = chan_vese(x, num_iters=0, init=custom - 0.5)
    torch.testing.assert_close(phi[0, 0], custom - 0.5)
    with pytest.raises(ValueError, match="unknown init"):
        chan_vese(x, init="spiral")
    with pytest.raises(ValueError, match="images must be"):
        chan_vese(torch.zeros(32))
