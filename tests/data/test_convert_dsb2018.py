"""The DSB2018 converter on the real data: counts, per-instance masks and areas, splits."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from levelset_rcnn.data import CocoInstanceDataset, DatasetError
from levelset_rcnn.data.converters import convert_dsb2018


def _key(mask: np.ndarray) -> tuple[int, str]:
    m = np.ascontiguousarray(mask.astype(bool))
    return int(m.sum()), hashlib.sha1(np.packbits(m).tobytes()).hexdigest()


def _source_masks(dsb_root, image_id):
    out = []
    for p in sorted((dsb_root / image_id / "masks").glob("*.png")):
        out.append(np.asarray(Image.open(p)) > 0)
    return out


@pytest.fixture(scope="module")
def converted(dsb_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dsb") / "all.json"
    convert_dsb2018(dsb_root.parent, out, progress=False)  # the folder above stage1_train
    return json.loads(out.read_text())


def test_counts(converted, dsb_root):
    ids = sorted(p.name for p in dsb_root.iterdir() if p.is_dir())
    assert len(converted["images"]) == len(ids) == 250
    assert len(converted["annotations"]) == 7113
    assert converted["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]


def test_every_instance_matches_its_source_png(converted, dsb_root):
    anns: dict[int, list] = {}
    for a in converted["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for img in converted["images"]:
        image_id = img["file_name"].split("/")[0]
        source = sorted(_key(m) for m in _source_masks(dsb_root, image_id))
        decoded = []
        for a in anns.get(img["id"], []):
            m = mask_utils.decode(a["segmentation"])
            assert a["area"] == m.sum()
            decoded.append(_key(m))
        assert sorted(decoded) == source, image_id
        h, w = np.asarray(Image.open(dsb_root / img["file_name"])).shape[:2]
        assert (img["height"], img["width"]) == (h, w)


def test_dataset_round_trip(converted, dsb_root, tmp_path):
    ann = tmp_path / "all.json"
    ann.write_text(json.dumps(converted))
    ds = CocoInstanceDataset(dsb_root, ann)
    for index in (0, 123, 249):
        image, target = ds[index]
        image_id = ds.coco.imgs[target["image_id"]]["file_name"].split("/")[0]
        src = np.asarray(Image.open(dsb_root / image_id / "images" / f"{image_id}.png"))
        assert image.shape == (3, *src.shape[:2])
        np.testing.assert_allclose(image[0].numpy(), src[..., 0] / 255.0, atol=1e-6)
        got = sorted(_key(m) for m in target["masks"].numpy())
        assert got == sorted(_key(m) for m in _source_masks(dsb_root, image_id))
        assert (target["labels"] == 1).all() and ds.class_names == ["__background__", "nucleus"]


def test_splits_are_200_first_and_50_last(dsb_root, tmp_path):
    ids = sorted(p.name for p in dsb_root.iterdir() if p.is_dir())
    train = json.loads(convert_dsb2018(dsb_root, tmp_path / "t.json", split="train",
                                       progress=False).read_text())
    val = json.loads(convert_dsb2018(dsb_root, tmp_path / "v.json", split="val",
                                     progress=False).read_text())
    assert [i["file_name"].split("/")[0] for i in train["images"]] == ids[:200]
    assert [i["file_name"].split("/")[0] for i in val["images"]] == ids[200:]
    n_val = sum(len(list((dsb_root / i / "masks").glob("*.png"))) for i in ids[200:])
    assert len(val["annotations"]) == n_val
    assert len(train["annotations"]) + n_val == 7113


def _fake_dsb(root, mask_shape=(8, 8), mask_bytes=None):
    d = root / "abc"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(d / "images" / "abc.png")
    if mask_bytes is not None:
        (d / "masks" / "m1.png").write_bytes(mask_bytes)
    else:
        m = np.zeros(mask_shape, np.uint8)
        m[2:5, 2:5] = 255
        Image.fromarray(m).save(d / "masks" / "m1.png")
    return root


def test_mask_size_mismatch_names_the_file(tmp_path):
    src = _fake_dsb(tmp_path / "src", mask_shape=(8, 9))
    with pytest.raises(DatasetError, match=r"m1\.png is 9x8 but its image abc is 8x8"):
        convert_dsb2018(src, tmp_path / "o.json", progress=False)
    assert not (tmp_path / "o.json").exists()


def test_corrupt_mask_and_missing_image_are_named(tmp_path):
    src = _fake_dsb(tmp_path / "src", mask_bytes=b"not a png")
    with pytest.raises(DatasetError, match=r"cannot decode mask .*m1\.png"):
        convert_dsb2018(src, tmp_path / "o.json", progress=False)
    (src / "abc" / "images" / "abc.png").unlink()
    with pytest.raises(DatasetError, match=r"image file not found: .*abc\.png"):
        convert_dsb2018(src, tmp_path / "o.json", progress=False)


def test_empty_mask_is_skipped_with_a_warning(tmp_path, caplog):
    src = _fake_dsb(tmp_path / "src")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "abc" / "masks" / "m0.png")
    data = json.loads(convert_dsb2018(src, tmp_path / "o.json", progress=False).read_text())
    assert len(data["annotations"]) == 1 and data["annotations"][0]["area"] == 9
    assert "empty mask" in caplog.text and "skipped 1" in caplog.text


def test_never_overwrites_without_flag(tmp_path):
    src = _fake_dsb(tmp_path / "src")
    out = tmp_path / "o.json"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_dsb2018(src, out, progress=False)
    assert out.read_text() == "keep me"
    convert_dsb2018(src, out, overwrite=True, progress=False)
    assert len(json.loads(out.read_text())["annotations"]) == 1
