"""The Cityscapes converter on a fabricated tree in the official layout: every instance and
group region against an independent reading of the instanceIds PNGs, and bad input."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from levelset_rcnn.cli import main
from levelset_rcnn.data import CocoInstanceDataset, DatasetError
from levelset_rcnn.data.converters import convert_cityscapes

from ..cityscapes_fixture import SCENES, base_name, make_cityscapes_tree, read_ids

# The 8 classes of the official instance-level benchmark (Cityscapes labels.py ids).
EXPECTED_CLASSES = {24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train",
                    32: "motorcycle", 33: "bicycle"}


def _key(mask: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(np.ascontiguousarray(mask.astype(bool))).tobytes()
                        ).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_cityscapes_tree(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("cs_json") / "val.json"
    convert_cityscapes(tree, out, split="val", progress=False)
    return json.loads(out.read_text())


def test_categories_are_the_eight_label_ids(converted):
    assert {c["id"]: c["name"] for c in converted["categories"]} == EXPECTED_CLASSES


def test_every_instance_and_group_matches_the_png(converted, tree):
    anns: dict[int, list] = {}
    for a in converted["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    assert len(converted["images"]) == len(SCENES) == 3
    for (city, frame) in SCENES:
        img = next(i for i in converted["images"]
                   if i["file_name"] == f"{city}/{base_name(city, frame)}_leftImg8bit.png")
        ids = read_ids(tree, "val", city, frame)
        assert (img["height"], img["width"]) == ids.shape == (64, 128)
        expected = set()
        for v in np.unique(ids):
            label = v // 1000 if v >= 1000 else v
            if label in EXPECTED_CLASSES:
                expected.add((int(label), int(v < 1000), _key(ids == v), int((ids == v).sum())))
        got = set()
        for a in anns.get(img["id"], []):
            m = mask_utils.decode(a["segmentation"])
            assert a["area"] == m.sum()
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                 ys.max() - ys.min() + 1]
            got.add((a["category_id"], a["iscrowd"], _key(m), int(a["area"])))
        assert got == expected, (city, frame)


def test_hand_counted_scene(converted):
    """aachen_000000: 2 cars (320 px each), 1 person (280), a car group (crowd, 200); the
    caravan (ignored in evaluation) and stuff classes are left out."""
    first = next(i["id"] for i in converted["images"] if i["file_name"].startswith(
        "aachen/aachen_000000_000019"))
    anns = sorted((a["category_id"], a["iscrowd"], a["area"]) for a in converted["annotations"]
                  if a["image_id"] == first)
    assert anns == [(24, 0, 280), (26, 0, 320), (26, 0, 320), (26, 1, 200)]


def test_dataset_round_trip(converted, tree, tmp_path):
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(converted))
    ds = CocoInstanceDataset(tree / "leftImg8bit" / "val", ann, train=True)
    assert ds.num_classes == 9 and ds.class_names[1:] == list(EXPECTED_CLASSES.values())
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 64, 128)
        assert not target["iscrowd"].any()  # crowd regions are not training targets
    ds_eval = CocoInstanceDataset(tree / "leftImg8bit" / "val", ann, train=False)
    assert sum(int(ds_eval.load_target(i)["iscrowd"].sum()) for i in range(len(ds))) == 1


def test_cli_and_overwrite(tree, tmp_path, capsys):
    out = tmp_path / "val.json"
    assert main(["convert", "cityscapes", str(tree), str(out), "--quiet"]) == 0
    assert "3 images, 8 instances, 8 categories" in capsys.readouterr().out
    assert main(["convert", "cityscapes", str(tree), str(out), "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_missing_gt_file_is_named(tmp_path):
    root = make_cityscapes_tree(tmp_path / "cs")
    gt = root / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_instanceIds.png"
    gt.unlink()
    with pytest.raises(DatasetError, match=r"missing gtFine file .*bonn_000000_000019_gtFine_"
                                           r"instanceIds\.png"):
        convert_cityscapes(root, tmp_path / "o.json", progress=False)
    assert not (tmp_path / "o.json").exists()


def test_missing_gt_split_folder(tmp_path):
    root = make_cityscapes_tree(tmp_path / "cs", split="train")
    (root / "leftImg8bit" / "val").mkdir()
    with pytest.raises(DatasetError, match="no <city>/"):
        convert_cityscapes(root, tmp_path / "o.json", split="val", progress=False)
    shutil.rmtree(root / "gtFine" / "train")
    with pytest.raises(DatasetError, match=r"annotation folder not found: .*gtFine.train"):
        convert_cityscapes(root, tmp_path / "o.json", split="train", progress=False)


@pytest.mark.parametrize("bad", [50, 50001])
def test_unknown_label_id_is_named(tmp_path, bad):
    root = make_cityscapes_tree(tmp_path / "cs")
    gt = root / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_instanceIds.png"
    ids = np.asarray(Image.open(gt)).copy()
    ids[0:3, 0:3] = bad
    Image.fromarray(ids.astype(np.uint16)).save(gt)
    with pytest.raises(DatasetError, match=rf"aachen_000001_000019_gtFine_instanceIds\.png: "
                                           rf"unknown Cityscapes label id\(s\) \[50\] "
                                           rf"\(pixel values \[{bad}\]\)"):
        convert_cityscapes(root, tmp_path / "o.json", progress=False)


def test_size_mismatch_is_named(tmp_path):
    root = make_cityscapes_tree(tmp_path / "cs")
    gt = root / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_instanceIds.png"
    Image.fromarray(np.zeros((32, 128), np.uint16)).save(gt)
    with pytest.raises(DatasetError, match=r"bonn_000000_000019_gtFine_instanceIds\.png is "
                                           r"128x32 but its image .* is 128x64"):
        convert_cityscapes(root, tmp_path / "o.json", progress=False)
