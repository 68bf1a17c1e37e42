import numpy as np
import pytest

from levelset_rcnn.evaluation import boundary_f_scores, mask_boundary

from .cases import square

# The inner 4-connected contour (mode="inner"): today's definition and values.


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


def _brute_f(pred, gt, tol, boundary=_brute_boundary):
    bp, bg = np.argwhere(boundary(pred)), np.argwhere(boundary(gt))
    if len(bp) == 0 or len(bg) == 0:
        return float(len(bp) == len(bg))
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))
    p, r = (d.min(1) <= tol).mean(), (d.min(0) <= tol).mean()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_square_boundary_is_its_ring():
    b = mask_boundary(square(5, 5), "inner")
    assert b.sum() == 36  # 10x10 square: 4*10 - 4 corner pixels counted once
    assert not b[6:14, 6:14].any()


def test_image_border_is_not_a_boundary():
    m = np.zeros((6, 6), dtype=np.uint8)
    m[:, :3] = 1
    assert mask_boundary(m, "inner").sum() == 6  # only column 2, next to the background


def test_one_pixel_shift_is_within_tolerance_one():
    assert boundary_f_scores(square(10, 10), square(10, 11), (1, 2), "inner") == [1.0, 1.0]


def test_two_pixel_shift_hand_computed():
    # Of the 36 ring pixels of the shifted square, 20 lie within 1 px of the original ring:
    # 16 on the shared top/bottom rows, 2 one column past its right side, and the 2 pixels
    # next to the top/bottom rows on its left side. By symmetry recall is also 20/36.
    f1, f2 = boundary_f_scores(square(10, 10), square(10, 12), (1, 2), "inner")
    assert f1 == pytest.approx(20 / 36)
    assert f2 == pytest.approx(1.0)


def test_empty_cases():
    empty = np.zeros((20, 20), dtype=np.uint8)
    assert boundary_f_scores(empty, empty, mode="inner") == [1.0, 1.0]
    assert boundary_f_scores(square(2, 2, shape=(20, 20)), empty, mode="inner") == [0.0, 0.0]


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal((30, 34)), 2) > 0
    b = ndimage.gaussian_filter(rng.standard_normal((30, 34)), 2) > 0.1
    got = boundary_f_scores(a, b, (1, 1.5, 2, 3), "inner")
    want = [_brute_f(a, b, t) for t in (1, 1.5, 2, 3)]
    assert got == pytest.approx(want)


# DAVIS's boundary map (mode="davis", the default): davis2017-evaluation's _seg2bmap.


def _brute_davis_boundary(m):
    """_seg2bmap from its definition, pixel by pixel: a pixel differing from its right,
    bottom or bottom-right neighbour; the last row compares only the right one, the last
    column only the bottom one, the bottom-right corner pixel never counts."""
    h, w = m.shape
    m = m.astype(bool)
    out = np.zeros((h, w), dtype=bool)
    for r in range(h):
        for c in range(w):
            if r == h - 1 and c == w - 1:
                continue
            if r == h - 1:
                nbrs = [(r, c + 1)]
            elif c == w - 1:
                nbrs = [(r + 1, c)]
            else:
                nbrs = [(r, c + 1), (r + 1, c), (r + 1, c + 1)]
            out[r, c] = any(m[rr, cc] != m[r, c] for rr, cc in nbrs)
    return out


def _image(shape, *pixels):
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        m[r, c] = 1
    return m


def test_davis_single_pixel_is_a_2x2_block():
    # (2, 2) differs from its right neighbour, (2, 1) from its right one, (1, 2) from its
    # bottom one and (1, 1) from its bottom-right one; nothing else touches the pixel.
    b = mask_boundary(_image((5, 5), (2, 2)))
    assert np.array_equal(b, _image((5, 5), (1, 1), (1, 2), (2, 1), (2, 2)).astype(bool))
    assert np.array_equal(mask_boundary(_image((5, 5), (2, 2)), "davis"), b)  # the default


def test_davis_square_boundary_is_the_ring_one_pixel_up_left():
    # A 10x10 square at rows/cols 5..14: the ring of the 11x11 square at rows/cols 4..14,
    # 4 * 11 - 4 = 40 pixels; the background pixels of its top row / left column belong to
    # it, the mask's own top row / left column (5, 6..13) and (6..13, 5) do not.
    b = mask_boundary(square(5, 5))
    assert b.sum() == 40
    ring = np.zeros_like(b)
    ring[4:15, 4:15] = True
    ring[5:14, 5:14] = False
    assert np.array_equal(b, ring)


def test_davis_mask_touching_the_image_border():
    shape = (6, 6)
    left = np.zeros(shape, dtype=np.uint8)
    left[:, :3] = 1  # mask column 2, next to the background, incl. the last row
    right = 1 - left  # background column 2, next to the mask
    top = left.T.copy()  # mask row 2, incl. the last column (compared with the pixel below)
    bottom = right.T.copy()  # background row 2
    for m, line in ((left, (slice(None), 2)), (right, (slice(None), 2)),
                    (top, (2, slice(None))), (bottom, (2, slice(None)))):
        want = np.zeros(shape, dtype=bool)
        want[line] = True
        assert np.array_equal(mask_boundary(m), want)
    # Bottom-right quadrant rows/cols 3..5: row 2 cols 2..5 and column 2 rows 3..5, 7 pixels;
    # none along the image frame.
    corner = np.zeros(shape, dtype=np.uint8)
    corner[3:, 3:] = 1
    want = np.zeros(shape, dtype=bool)
    want[2, 2:] = True
    want[3:, 2] = True
    assert np.array_equal(mask_boundary(corner), want)
    # A pixel in the bottom-right corner: its left, upper and upper-left neighbours only.
    assert np.array_equal(mask_boundary(_image(shape, (5, 5))),
                          _image(shape, (4, 4), (4, 5), (5, 4)).astype(bool))
    full = np.ones(shape, dtype=np.uint8)
    assert not mask_boundary(full).any()


@pytest.mark.parametrize("tol", [1, 2, 3])
def test_davis_shift_just_inside_and_just_past_the_tolerance(tol):
    # Left half-images cut at column c: straight vertical boundaries, 20 pixels each, d apart.
    def half(c):
        m = np.zeros((20, 30), dtype=np.uint8)
        m[:, :c] = 1
        return m

    assert boundary_f_scores(half(12 + tol), half(12), (tol,)) == [1.0]
    assert boundary_f_scores(half(12 + tol + 1), half(12), (tol,)) == [0.0]
    assert boundary_f_scores(half(12 - tol - 1), half(12), (tol,)) == [0.0]


def test_davis_square_shifts_hand_computed():
    # 1 px right: every ring pixel of either square is within 1 px of the other ring.
    assert boundary_f_scores(square(10, 10), square(10, 11), (1, 2)) == [1.0, 1.0]
    # 2 px right (rings at cols 9..19 and 11..21, rows 9..19): of the 40 shifted ring pixels,
    # 10 on each of the top/bottom rows (cols 11..20) and 2 on its left side (rows 10, 18,
    # next to the original top/bottom rows) lie within 1 px: 22 / 40; recall by symmetry.
    f1, f2 = boundary_f_scores(square(10, 10), square(10, 12), (1, 2))
    assert f1 == pytest.approx(22 / 40)
    assert f2 == pytest.approx(1.0)
    # 1 px right and down: only the far corner (20, 20) of the shifted ring is sqrt(2) from
    # the original one (and (9, 9) of the original from the shifted): 39 / 40 at 1 px.
    assert boundary_f_scores(square(10, 10), square(11, 11), (1, 1.5)) == pytest.approx(
        [39 / 40, 1.0])


def test_davis_tolerance_below_one_is_a_fraction_of_the_diagonal():
    # 30x40 image: diagonal 50, 0.05 -> ceil(2.5) = 3 px, as DAVIS's bound_th.
    def half(c):
        m = np.zeros((30, 40), dtype=np.uint8)
        m[:, :c] = 1
        return m

    assert boundary_f_scores(half(23), half(20), (0.05,)) == [1.0]
    assert boundary_f_scores(half(24), half(20), (0.05,)) == [0.0]
    # "inner" reads every tolerance as pixels.
    assert boundary_f_scores(half(21), half(20), (0.05,), "inner") == [0.0]


def test_davis_empty_cases():
    empty = np.zeros((20, 20), dtype=np.uint8)
    assert boundary_f_scores(empty, empty) == [1.0, 1.0]
    assert boundary_f_scores(square(2, 2, shape=(20, 20)), empty) == [0.0, 0.0]
    assert boundary_f_scores(empty, square(2, 2, shape=(20, 20))) == [0.0, 0.0]
    # As in DAVIS, a mask filling the image has no boundary, so it agrees with an empty one.
    assert boundary_f_scores(np.ones((20, 20), dtype=np.uint8), empty) == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(6))
def test_davis_matches_brute_force(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (30, 34) if seed < 3 else (9, 41)  # blobs cut by every side of the frame
    a = ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0
    b = ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0.1
    assert np.array_equal(mask_boundary(a), _brute_davis_boundary(a))
    got = boundary_f_scores(a, b, (1, 2, 3))
    want = [_brute_f(a, b, t, _brute_davis_boundary) for t in (1, 2, 3)]
    assert got == pytest.approx(want)


def test_small_object_in_a_large_image_is_cropped_exactly():
    # The bounding-box crop gives the whole image's value, also against the frame.
    for r0, c0 in ((3, 4), (52, 66), (0, 0)):
        a, b = np.zeros((60, 80), dtype=np.uint8), np.zeros((60, 80), dtype=np.uint8)
        a[r0:r0 + 8, c0:c0 + 14] = 1
        b[r0:r0 + 7, c0 + 1:c0 + 14] = 1
        for mode, brute in (("davis", _brute_davis_boundary), ("inner", _brute_boundary)):
            want = [_brute_f(a, b, t, brute) for t in (1, 2)]
            assert boundary_f_scores(a, b, (1, 2), mode) == pytest.approx(want)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="boundary mode"):
        mask_boundary(square(2, 2), "outer")
    with pytest.raises(ValueError, match="boundary mode"):
        boundary_f_scores(square(2, 2), square(2, 2), mode="outer")
