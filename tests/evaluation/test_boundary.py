import numpy as np
import pytest

from levelset_rcnn.evaluation import boundary_f_scores, mask_boundary

from .cases import square


def _brute_boundary(m):
    h, w = m.shape
    out = np.zeros_like(m, dtype=bool)
    for r in range(h):
        for c in range(w):
            if not m[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and not m[rr, cc]:
                    out[r, c] = True
    return out


def _brute_f(pred, gt, tol):
    bp, bg = np.argwhere(_brute_boundary(pred)), np.argwhere(_brute_boundary(gt))
    if len(bp) == 0 or len(bg) == 0:
        return float(len(bp) == len(bg))
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))
    p, r = (d.min(1) <= tol).mean(), (d.min(0) <= tol).mean()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_square_boundary_is_its_ring():
    b = mask_boundary(square(5, 5))
    assert b.sum() == 36  # 10x10 square: 4*10 - 4 corner pixels counted once
    assert not b[6:14, 6:14].any()


def test_image_border_is_not_a_boundary():
    m = np.zeros((6, 6), dtype=np.uint8)
    m[:, :3] = 1
    assert mask_boundary(m).sum() == 6  # only column 2, next to the background


def test_one_pixel_shift_is_within_tolerance_one():
    assert boundary_f_scores(square(10, 10), square(10, 11), (1, 2)) == [1.0, 1.0]


def test_two_pixel_shift_hand_computed():
    # Of the 36 ring pixels of the shifted square, 20 lie within 1 px of the original ring:
    # 16 on the shared top/bottom rows, 2 one column past its right side, and the 2 pixels
    # next to the top/bottom rows on its left side. By symmetry recall is also 20/36.
    f1, f2 = boundary_f_scores(square(10, 10), square(10, 12), (1, 2))
    assert f1 == pytest.approx(20 / 36)
    assert f2 == pytest.approx(1.0)


def test_empty_cases():
    empty = np.zeros((20, 20), dtype=np.uint8)
    assert boundary_f_scores(empty, empty) == [1.0, 1.0]
    assert boundary_f_scores(square(2, 2, shape=(20, 20)), empty) == [0.0, 0.0]


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal((30, 34)), 2) > 0
    b = ndimage.gaussian_filter(rng.standard_normal((30, 34)), 2) > 0.1
    got = boundary_f_scores(a, b, (1, 1.5, 2, 3))
    want = [_brute_f(a, b, t) for t in (1, 1.5, 2, 3)]
    assert got == pytest.approx(want)
