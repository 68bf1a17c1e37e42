"""A tiny Cityscapes tree in the official layout, made on the fly (64x128 images).

The ground truth is written the way Cityscapes made it: a polygons JSON per image
(``*_gtFine_polygons.json``), rasterised into ``*_gtFine_instanceIds.png`` by
cityscapesscripts' own ``createInstanceImage`` (later polygons paint over earlier ones) and
stored as a 16-bit grayscale PNG, as the released files are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from PIL import Image

H, W = 64, 128


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """Polygon of the pixel rectangle [x0, x1] x [y0, y1] (PIL fills the outline too)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# (city, "<seq>_<frame>") -> objects in drawing order: (label, polygon)
SCENES: dict[tuple[str, str], list[tuple[str, list[list[int]]]]] = {
    ("aachen", "000000_000019"): [
        ("road", _rect(0, 40, 127, 63)),
        ("sky", _rect(0, 0, 127, 9)),
        ("car", _rect(4, 20, 23, 35)),         # 26000: 20x16 = 320 px
        ("car", _rect(30, 22, 49, 37)),        # 26001: 320 px
        ("person", _rect(60, 12, 69, 39)),     # 24000: 10x28 = 280 px
        ("cargroup", _rect(80, 44, 99, 53)),   # 26: a crowd region (200 px)
        ("caravan", _rect(104, 14, 123, 29)),  # 29000: ignored by the evaluation
    ],
    ("aachen", "000001_000019"): [
        ("road", _rect(0, 40, 127, 63)),
        ("bicycle", _rect(10, 20, 39, 39)),    # 33000: painted over by the rider
        ("rider", _rect(20, 10, 31, 30)),      # 25000: 12x21 = 252 px
        ("person", _rect(70, 15, 81, 39)),     # 24000: 12x25 = 300 px
    ],
    ("bonn", "000000_000019"): [
        ("truck", _rect(40, 10, 79, 39)),      # 27000: 40x30 = 1200 px
    ],
}


def base_name(city: str, frame: str) -> str:
    return f"{city}_{frame}"


def make_cityscapes_tree(root: Path, split: str = "val", seed: int = 0) -> Path:
    """Write ``root/leftImg8bit/<split>`` and ``root/gtFine/<split>``; return ``root``."""
    rng = np.random.default_rng(seed)
    for (city, frame), objects in SCENES.items():
        base = base_name(city, frame)
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            img_dir / f"{base}_leftImg8bit.png")
        poly = {"imgHeight": H, "imgWidth": W,
                "objects": [{"label": lab, "polygon": p} for lab, p in objects]}
        json_path = gt_dir / f"{base}_gtFine_polygons.json"
        json_path.write_text(json.dumps(poly))
        annotation = Annotation()
        annotation.fromJsonFile(str(json_path))
        ids = np.asarray(createInstanceImage(annotation, "ids"))  # mode "I" (int32)
        # Pillow cannot store mode "I" as PNG; the released files are 16-bit grayscale.
        Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{base}_gtFine_instanceIds.png")
    return root


def read_ids(root: Path, split: str, city: str, frame: str) -> np.ndarray:
    """The instanceIds image of one scene, read independently of the code under test."""
    path = root / "gtFine" / split / city / f"{base_name(city, frame)}_gtFine_instanceIds.png"
    return np.asarray(Image.open(path)).astype(np.int64)
