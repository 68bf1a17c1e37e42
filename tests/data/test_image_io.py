import numpy as np
import pytest
from PIL import Image

from levelset_rcnn.data import DatasetError, read_image


def _save(tmp_path, arr, mode=None, name="x.png"):
    path = tmp_path / name
    (Image.fromarray(arr, mode=mode) if mode else Image.fromarray(arr)).save(path)
    return path


def test_grayscale_is_replicated(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    img = read_image(_save(tmp_path, arr))
    assert img.shape == (3, 3, 4) and img.dtype.is_floating_point
    for c in range(3):
        np.testing.assert_allclose(img[c].numpy(), arr / 255.0, atol=1e-7)


def test_rgba_drops_alpha(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3] = 255, 51, 0, 0
    img = read_image(_save(tmp_path, arr))
    np.testing.assert_allclose(img[:, 0, 0].numpy(), [1.0, 0.2, 0.0], atol=1e-7)


def test_sixteen_bit_is_scaled_to_unit_range(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    np.testing.assert_allclose(img[1].numpy(), arr / 65535.0, atol=1e-6)


def test_palette_image(tmp_path):
    img = Image.new("P", (3, 2))
    img.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_allclose(out[:, 1, 1].numpy(), [1.0, 128 / 255, 0.0], atol=1e-7)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match=r"image file not found: .*nope\.png \(image id 3\)"):
        read_image(tmp_path / "nope.png", record="image id 3")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot decode image .*bad\.jpg"):
        read_image(bad)


def test_32_bit_integer_mode_uses_the_16_bit_range(tmp_path):
    # Older Pillow opens 16-bit PNGs as mode "I": one fixed scale keeps images comparable.
    arr = np.array([[0, 65535], [13107, 255]], dtype=np.int32)
    img = Image.fromarray(arr)
    assert img.mode == "I"
    img.save(tmp_path / "i.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i.tif")[0].numpy(), arr / 65535.0,
                               atol=1e-6)
