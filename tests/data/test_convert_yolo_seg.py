"""The YOLO segmentation converter on the real coco128-seg data and on bad label files."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from levelset_rcnn.data import CocoInstanceDataset, DatasetError
from levelset_rcnn.data.converters import convert_yolo_seg

# A few entries of COCO's category table, typed in from the COCO 2017 annotations:
# (YOLO class index, COCO category id, name).
KNOWN = [(0, 1, "person"), (11, 13, "stop sign"), (24, 27, "backpack"), (45, 51, "bowl"),
         (56, 62, "chair"), (79, 90, "toothbrush")]


@pytest.fixture(scope="module")
def converted(coco128, tmp_path_factory):
    images, labels = coco128
    out = tmp_path_factory.mktemp("c128") / "coco128.json"
    return json.loads(convert_yolo_seg(images, labels, out, progress=False).read_text())


def test_counts_and_negatives(converted, coco128):
    images, labels = coco128
    assert len(converted["images"]) == len(list(images.glob("*.jpg"))) == 128
    assert len(converted["annotations"]) == 929
    with_anns = {a["image_id"] for a in converted["annotations"]}
    negatives = sorted(i["file_name"] for i in converted["images"] if i["id"] not in with_anns)
    assert negatives == ["000000000250.jpg", "000000000508.jpg"]
    assert len({a["category_id"] for a in converted["annotations"]}) == 71


def test_category_table(converted):
    cats = {c["id"]: c["name"] for c in converted["categories"]}
    assert len(cats) == 80
    for _, cat_id, name in KNOWN:
        assert cats[cat_id] == name
    assert 12 not in cats and 91 not in cats


def test_every_polygon_and_area_against_the_label_files(converted, coco128):
    images, labels = coco128
    by_image: dict[int, list] = {}
    for a in converted["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    known_ids = {idx: cat for idx, cat, _ in KNOWN}
    checked, total_area, total_raster = 0, 0.0, 0.0
    for img in converted["images"]:
        w, h = Image.open(images / img["file_name"]).size
        assert (img["width"], img["height"]) == (w, h)
        assert img["id"] == int(img["file_name"].split(".")[0])
        label = labels / img["file_name"].replace(".jpg", ".txt")
        lines = label.read_text().split("\n") if label.exists() else []
        rows = [line.split() for line in lines if line.strip()]
        anns = by_image.get(img["id"], [])
        assert len(anns) == len(rows)
        for row, ann in zip(rows, anns, strict=True):
            cls = int(row[0])
            if cls in known_ids:
                assert ann["category_id"] == known_ids[cls]
            xy = np.array(row[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
            np.testing.assert_allclose(np.array(ann["segmentation"][0]).reshape(-1, 2), xy,
                                       atol=1e-6)
            rle = mask_utils.frPyObjects([xy.ravel().tolist()], h, w)
            assert ann["area"] == pytest.approx(float(mask_utils.area(rle)[0]))
            # An independent rasteriser (PIL; Ultralytics joins multi-part objects into one
            # self-touching polygon, so the shoelace formula would not do).
            canvas = Image.new("L", (w, h), 0)
            ImageDraw.Draw(canvas).polygon([tuple(p) for p in xy], fill=1)
            raster = float(np.asarray(canvas).sum())
            perimeter = np.linalg.norm(xy - np.roll(xy, -1, axis=0), axis=1).sum()
            # Rasterisers differ only along the outline: about one pixel per unit of perimeter.
            assert abs(ann["area"] - raster) <= perimeter + 2
            total_area += ann["area"]
            total_raster += raster
            x0, y0 = xy.min(0)
            np.testing.assert_allclose(ann["bbox"][:2], [x0, y0], atol=1e-6)
            checked += 1
    assert checked == 929
    assert total_area == pytest.approx(total_raster, rel=0.02)


def test_dataset_reads_converted_json(converted, coco128, tmp_path):
    images, _ = coco128
    ann = tmp_path / "c.json"
    ann.write_text(json.dumps(converted))
    ds = CocoInstanceDataset(images, ann)
    assert len(ds) == 128 and ds.num_classes == 81
    assert ds.label_to_cat_id[1] == 1 and ds.label_to_cat_id[80] == 90
    assert ds.class_names[ds.cat_id_to_label[13]] == "stop sign"
    index = ds.ids.index(9)
    image, target = ds[index]
    gt = [a for a in converted["annotations"] if a["image_id"] == 9]
    assert image.shape == (3, 480, 640) and len(target["labels"]) == len(gt)
    assert [ds.label_to_cat_id[int(lab)] for lab in target["labels"]] == [
        a["category_id"] for a in gt]
    for m, a in zip(target["masks"], gt, strict=True):
        assert int(m.sum()) == a["area"]


def _fake(tmp_path, text):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(images / "a.png")
    (labels / "a.txt").write_text(text)
    return images, labels


@pytest.mark.parametrize("text, match", [
    ("80 0.1 0.1 0.5 0.1 0.5 0.5\n", r"a\.txt:1: class index 80 outside 0\.\.79"),
    ("0 0.1 0.1 0.5 0.1 0.5\n", r"a\.txt:1: odd number of coordinates"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.5\nx 1 2\n", r"a\.txt:2: not a YOLO segmentation line"),
    ("0 0.1 0.1 1.5 0.1 0.5 0.5\n", r"a\.txt:1: coordinates must be normalised"),
])
def test_bad_label_lines_are_named(tmp_path, text, match):
    images, labels = _fake(tmp_path, text)
    with pytest.raises(DatasetError, match=match):
        convert_yolo_seg(images, labels, tmp_path / "o.json", progress=False)


def test_degenerate_polygon_is_skipped_and_counted(tmp_path, caplog):
    text = "0 0.1 0.1 0.5 0.1\n1 0.1 0.1 0.5 0.1 0.9 0.1\n2 0.1 0.1 0.5 0.1 0.5 0.5\n"
    images, labels = _fake(tmp_path, text)
    data = json.loads(convert_yolo_seg(images, labels, tmp_path / "o.json",
                                       progress=False).read_text())
    assert [a["category_id"] for a in data["annotations"]] == [3]
    assert data["images"][0]["id"] == 1  # non-numeric stem: sequential ids
    assert "a.txt:1: degenerate polygon" in caplog.text and "skipped 2" in caplog.text


def test_custom_names_and_overwrite(tmp_path):
    images, labels = _fake(tmp_path, "1 0.1 0.1 0.5 0.1 0.5 0.5\n")
    out = tmp_path / "o.json"
    convert_yolo_seg(images, labels, out, names=["cell", "spore"], progress=False)
    data = json.loads(out.read_text())
    assert data["categories"][1] == {"id": 2, "name": "spore", "supercategory": "spore"}
    assert data["annotations"][0]["category_id"] == 2
    with pytest.raises(FileExistsError):
        convert_yolo_seg(images, labels, out, progress=False)
    assert json.loads(out.read_text()) == data
