from pathlib import Path

import pytest

from .shared_data import shared_data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set LEVELSET_RCNN_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def dsb_root(shared_data: Path) -> Path:
    root = shared_data / "dsb2018_nuclei" / "stage1_train"
    if not root.is_dir():
        pytest.skip(f"DSB2018 nuclei data not found at {root}")
    return root


@pytest.fixture(scope="session")
def coco128(shared_data: Path) -> tuple[Path, Path]:
    root = shared_data / "coco128_seg"
    images, labels = root / "images" / "train2017", root / "labels" / "train2017"
    if not (images.is_dir() and labels.is_dir()):
        pytest.skip(f"coco128_seg data not found under {root}")
    return images, labels


def pytest_configure(config):
    # pycocotools' Cython masks predate NumPy 2's __array__(copy=...) protocol; harmless.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
