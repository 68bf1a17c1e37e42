"""Classic Chan-Vese (eq. 1-5) on image intensities: the same algorithm as
:func:`skimage.segmentation.chan_vese` (Getreuer's semi-implicit step, hard averages, its
stopping rule), batched. Compared with scikit-image on its own sample images: in float64 the
level sets agree to rounding, in float32 the segmentations to a few pixels in 10^5 with the
same iteration counts (measured at 128 x 128 and 256 x 256)."""

import numpy as np
import pytest
import torch
from skimage import color, data
from skimage.segmentation import chan_vese as sk_chan_vese
from skimage.transform import resize

from levelset_rcnn.levelset import chan_vese, checkerboard_level_set

SAMPLES = ("camera", "coins", "moon", "page", "text", "astronaut", "coffee", "brick")


def _sample(name, size):
    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    return resize(img.astype(np.float64), (size, size), anti_aliasing=True)


def _skimage(img, **kw):
    seg, phi, energies = sk_chan_vese(img, extended_output=True, **kw)
    return seg, phi, len(energies)


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


def test_float64_level_sets_equal_skimage():
    """Same definition: in float64 the level set after 40 iterations is scikit-image's to
    rounding (ours divides the update through by delta, one rounding more or less)."""
    imgs = [_sample(n, 64) for n in ("camera", "coins")]
    phi, _, iters = chan_vese(torch.from_numpy(np.stack(imgs)), tol=0.0, num_iters=40,
                              return_num_iters=True)
    assert phi.dtype == torch.float64 and iters.tolist() == [40, 40]
    for ours, img in zip(phi[:, 0].numpy(), imgs, strict=True):
        _, ref, _ = _skimage(img, tol=0.0, max_num_iter=40)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_float32_batch_same_segmentation_and_iterations_as_skimage():
    """scikit-image's defaults (tol 1e-3, at most 500 iterations) on its sample images, one
    float32 batch against scikit-image's float64 run image by image: at most 1% of pixels
    differ (measured: at most 2e-4) and every image stops at the same iteration (measured:
    all equal; 500 for camera and astronaut, 48-98 for the others)."""
    imgs = np.stack([_sample(n, 128) for n in SAMPLES])
    phi, mask, iters = chan_vese(torch.from_numpy(imgs).float(), return_num_iters=True)
    assert phi.dtype == torch.float32 and mask.shape == (len(SAMPLES), 1, 128, 128)
    for name, m, it, img in zip(SAMPLES, mask[:, 0].numpy(), iters.tolist(), imgs, strict=True):
        seg, _, ref_iters = _skimage(img)
        assert (m != seg).mean() <= 0.01, name
        assert abs(it - ref_iters) <= 1, (name, it, ref_iters)


def test_batch_equals_one_image_at_a_time():
    """Images that stop leave the batch; that must not change anyone's result."""
    imgs = torch.from_numpy(np.stack([_sample(n, 48) for n in SAMPLES[:5]])).float()
    phi, mask, iters = chan_vese(imgs, num_iters=200, return_num_iters=True)
    assert len(set(iters.tolist())) > 1  # they do stop at different iterations
    for k in range(len(imgs)):
        p, m, it = chan_vese(imgs[k:k + 1], num_iters=200, return_num_iters=True)
        assert it.item() == iters[k].item()
        torch.testing.assert_close(p[0], phi[k], rtol=0, atol=1e-5)
        assert torch.equal(m[0], mask[k])


def test_noisy_two_region_images_converge_to_truth():
    """Noise sigma 0.2 against a contrast of 0.25-0.6, run to tol 1e-4: IoU 0.964-0.994
    (scikit-image: the same values). At the default tol 1e-3 both stop earlier on some of
    these (IoU down to 0.83)."""
    images, truths = _two_region_images(8, 64, noise=0.2, seed=0)
    _, masks = chan_vese(torch.from_numpy(images), mu=0.1, tol=1e-4, num_iters=2000)
    for m, t in zip(masks[:, 0].numpy(), truths, strict=True):
        assert _iou_either_polarity(m, t) >= 0.95


def test_agrees_with_skimage_run_to_convergence_on_two_region_images():
    images, _ = _two_region_images(4, 64, noise=0.1, seed=1)
    kw = {"mu": 0.1, "lambda1": 1.0, "lambda2": 1.5, "dt": 0.5}
    _, masks, iters = chan_vese(torch.from_numpy(images), tol=1e-4, num_iters=1000,
                                return_num_iters=True, **kw)
    for m, it, img in zip(masks[:, 0].numpy(), iters.tolist(), images, strict=True):
        seg, _, ref_iters = _skimage(img.astype(np.float64), tol=1e-4, max_num_iter=1000, **kw)
        assert (m != seg).mean() <= 0.001
        assert abs(it - ref_iters) <= 1


@pytest.mark.parametrize("init", ["checkerboard", "disk", "small disk"])
def test_initial_level_sets_are_skimages(init):
    img = _sample("coins", 40)[:, 3:]  # not square: the disks' centre and radius
    phis, _ = chan_vese(torch.from_numpy(img)[None], init=init, tol=0.0, num_iters=5,
                        return_all=True)
    _, ref0, _ = _skimage(img, init_level_set=init, tol=0.0, max_num_iter=0)
    _, ref5, _ = _skimage(img, init_level_set=init, tol=0.0, max_num_iter=5)
    np.testing.assert_allclose(phis[0][0, 0].numpy(), ref0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(phis[5][0, 0].numpy(), ref5, rtol=0, atol=1e-9)


def test_checkerboard_is_evaluated_in_float64():
    """Its zero lines carry +-1e-16 in float64 and -1e-7 in float32; those signs pick which
    of two mirror partitions the evolution ends in, so float32 keeps the float64 values."""
    cb = checkerboard_level_set(16, 16, dtype=torch.float32)
    ref = checkerboard_level_set(16, 16, dtype=torch.float64)
    assert torch.equal(cb, ref.float())
    assert (cb[5, 1:] > 0).tolist() == (ref[5, 1:] > 0).tolist()


def test_colour_images_use_the_channel_average():
    gray = torch.from_numpy(np.stack([_sample("coffee", 48), _sample("moon", 48)]))
    rgb = gray[:, None].expand(-1, 3, -1, -1)
    phi_g, mask_g = chan_vese(gray, num_iters=100)
    phi_c, mask_c = chan_vese(rgb, num_iters=100)
    torch.testing.assert_close(phi_c, phi_g, rtol=0, atol=1e-8)
    assert torch.equal(mask_c, mask_g)


def test_init_options_and_errors():
    images, _ = _two_region_images(2, 32, noise=0.05, seed=2)
    x = torch.from_numpy(images)
    phis, mask = chan_vese(x, num_iters=3, init="disk", tol=0.0, return_all=True)
    assert len(phis) == 4 and mask.shape == (2, 1, 32, 32) and mask.dtype == torch.bool
    # after every image has stopped, the list still has num_iters + 1 entries
    phis, _, iters = chan_vese(x, num_iters=300, tol=1e-2, return_all=True,
                               return_num_iters=True)
    assert len(phis) == 301 and iters.max() < 300
    assert torch.equal(phis[-1], phis[int(iters.max())])
    custom = torch.zeros(32, 32)
    custom[8:24, 8:24] = 1.0
    phi, _ = chan_vese(x, num_iters=0, init=custom - 0.5)
    torch.testing.assert_close(phi[0, 0], custom - 0.5)
    phi, _ = chan_vese(x, num_iters=0, init=(custom - 0.5).expand(2, 1, 32, 32))
    torch.testing.assert_close(phi[1, 0], custom - 0.5)
    const, _ = chan_vese(torch.ones(1, 8, 8), num_iters=5)  # scikit-image: image becomes 0
    assert torch.isfinite(const).all()
    with pytest.raises(ValueError, match="unknown init"):
        chan_vese(x, init="spiral")
    with pytest.raises(ValueError, match="does not match"):
        chan_vese(x, init=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="images must be"):
        chan_vese(torch.zeros(32))


@pytest.mark.slow
def test_compiled_step_matches_skimage_and_eager():
    """The fused, compiled step (what large batches use) on the benchmark's kind of batch:
    scikit-image's sample images at 256 x 256 and their mirror images."""
    names = ("camera", "coins", "coffee", "brick", "chelsea", "page")
    base = np.stack([_sample(n, 256) for n in names])
    imgs = np.concatenate([base, base[:, :, ::-1]])
    x = torch.from_numpy(imgs.copy()).float()
    phi, mask, iters = chan_vese(x, compile=True, return_num_iters=True)
    phi_e, mask_e, iters_e = chan_vese(x, compile=False, return_num_iters=True)
    assert (mask != mask_e).float().mean() <= 1e-3
    assert (iters - iters_e).abs().max() <= 1
    for m, it, img in zip(mask[:, 0].numpy(), iters.tolist(), imgs, strict=True):
        seg, _, ref_iters = _skimage(img)
        assert (m != seg).mean() <= 0.01
        assert abs(it - ref_iters) <= 1
