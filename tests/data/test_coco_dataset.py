"""CocoInstanceDataset on small hand-written COCO files: formats, labels, crowd, bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Subset

from levelset_rcnn.data import CocoInstanceDataset, DatasetError, collate_fn, get_aspect_ratios

H, W = 12, 16


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _uncompressed_rle(mask):
    flat = mask.astype(np.uint8).ravel(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


MASK_A = np.zeros((H, W), np.uint8)
MASK_A[2:6, 3:9] = 1
MASK_A[3:5, 5:7] = 0  # a hole
MASK_B = np.zeros((H, W), np.uint8)
MASK_B[7:11, 10:15] = 1
# Triangle (1,1)-(6,1)-(1,6) in x, y; pycocotools decides which pixels it covers.
TRIANGLE = [1.0, 1.0, 6.0, 1.0, 1.0, 6.0]


def _write(tmp_path, annotations=None, images=None, categories=None, pixels=None):
    images = images if images is not None else [
        {"id": 10, "file_name": "a.png", "height": H, "width": W},
        {"id": 20, "file_name": "b.png", "height": H, "width": W},
    ]
    for img in images:
        arr = pixels if pixels is not None else np.full((img["height"], img["width"], 3), 128,
                                                        np.uint8)
        path = tmp_path / img["file_name"]
        if not path.exists():
            Image.fromarray(arr).save(path)
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 17, "segmentation": _rle(MASK_A),
             "bbox": [3, 2, 6, 4], "area": float(MASK_A.sum()), "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 5, "segmentation": _uncompressed_rle(MASK_B),
             "bbox": [10, 7, 5, 4], "area": float(MASK_B.sum()), "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 5, "segmentation": [TRIANGLE],
             "bbox": [1, 1, 5, 5], "area": 12.5, "iscrowd": 0},
        ]
    categories = categories if categories is not None else [
        {"id": 17, "name": "dog"}, {"id": 5, "name": "cat"}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


def test_target_format_and_label_maps(tmp_path):
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path))
    assert len(ds) == 2
    assert ds.label_to_cat_id == {1: 5, 2: 17} and ds.cat_id_to_label == {5: 1, 17: 2}
    assert ds.class_names == ["__background__", "cat", "dog"]
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert float(image.max()) == pytest.approx(128 / 255)
    assert target["image_id"] == 10
    assert target["labels"].tolist() == [2, 1]  # crowd annotation 2 left out in training
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[3, 2, 9, 6], [1, 1, 6, 6]]
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, H, W)
    np.testing.assert_array_equal(target["masks"][0].numpy(), MASK_A)
    triangle = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([TRIANGLE], H, W)))
    np.testing.assert_array_equal(target["masks"][1].numpy(), triangle)
    assert target["area"].tolist() == [float(MASK_A.sum()), 12.5]
    assert target["iscrowd"].tolist() == [0, 0]


def test_eval_mode_keeps_crowd_and_uncompressed_rle(tmp_path):
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path), train=False)
    _, target = ds[0]
    assert target["iscrowd"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(target["masks"][1].numpy(), MASK_B)


def test_image_without_annotations_is_a_negative(tmp_path):
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path))
    image, target = ds[1]
    assert target["image_id"] == 20
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, H, W)
    images, targets = collate_fn([ds[0], ds[1]])
    assert len(images) == 2 and targets[1]["image_id"] == 20


def test_aspect_ratios(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 10, "width": 20},
              {"id": 2, "file_name": "b.png", "height": 30, "width": 15}]
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path, annotations=[], images=images))
    assert ds.get_aspect_ratios() == [2.0, 0.5]
    assert get_aspect_ratios(Subset(Subset(ds, [1, 0]), [0])) == [0.5]
    with pytest.raises(TypeError, match="group_ids"):
        get_aspect_ratios([1, 2])


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_image_modes_load_as_rgb(tmp_path, mode):
    arr = {"L": np.full((H, W), 51, np.uint8), "RGBA": np.full((H, W, 4), 51, np.uint8),
           "I;16": np.full((H, W), 13107, np.uint16)}[mode]
    Image.fromarray(arr).save(tmp_path / "a.png")
    image, _ = CocoInstanceDataset(tmp_path, _write(tmp_path))[0]
    assert image.shape == (3, H, W)
    np.testing.assert_allclose(image.numpy(), 0.2, atol=1e-6)


def test_missing_image_names_file_and_record(tmp_path):
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path))
    (tmp_path / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"image file not found: .*b\.png \(image id 20"):
        ds[1]


def test_corrupt_image_is_named(tmp_path):
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path))
    (tmp_path / "a.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*a\.png \(image id 10"):
        ds[0]


def test_image_size_must_match_the_json(tmp_path):
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(tmp_path / "a.png")
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path))
    with pytest.raises(DatasetError, match=r"a\.png: image is 16x13 but .* image id 10 is 16x12"):
        ds[0]


def test_malformed_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"broken\.json: not valid JSON"):
        CocoInstanceDataset(tmp_path, path)
    path.write_text('{"images": []}')
    with pytest.raises(DatasetError, match=r"broken\.json: missing the 'categories' section"):
        CocoInstanceDataset(tmp_path, path)
    with pytest.raises(DatasetError, match=r"annotation file not found: .*nothere\.json"):
        CocoInstanceDataset(tmp_path, tmp_path / "nothere.json")


def test_unknown_category_id_is_an_error(tmp_path):
    anns = [{"id": 7, "image_id": 10, "category_id": 99, "segmentation": [TRIANGLE],
             "bbox": [1, 1, 5, 5], "area": 12.5, "iscrowd": 0}]
    with pytest.raises(DatasetError, match=r"ann\.json: annotation id 7 has unknown category "
                                           r"id 99"):
        CocoInstanceDataset(tmp_path, _write(tmp_path, annotations=anns))


def test_unknown_image_id_is_an_error(tmp_path):
    anns = [{"id": 7, "image_id": 11, "category_id": 5, "segmentation": [TRIANGLE],
             "bbox": [1, 1, 5, 5], "area": 12.5, "iscrowd": 0}]
    with pytest.raises(DatasetError, match=r"annotation id 7 refers to unknown image id 11"):
        CocoInstanceDataset(tmp_path, _write(tmp_path, annotations=anns))


def test_rle_size_must_match_its_image(tmp_path):
    big = np.zeros((H + 4, W), np.uint8)
    big[1:3, 1:3] = 1
    anns = [{"id": 4, "image_id": 10, "category_id": 5, "segmentation": _rle(big),
             "bbox": [1, 1, 2, 2], "area": 4.0, "iscrowd": 0}]
    with pytest.raises(DatasetError, match=r"annotation id 4: mask size \[16, 16\] .* differs "
                                           r"from its image id 10 \(a\.png, 12x16\)"):
        CocoInstanceDataset(tmp_path, _write(tmp_path, annotations=anns))


BAD_RECORDS = [
    ({"segmentation": [[1.0, 1.0, 5.0, 5.0]], "bbox": [1, 1, 4, 4]}, "degenerate polygon"),
    ({"segmentation": [[1.0, 1.0, 5.0, 5.0, 9.0, 9.0]], "bbox": [1, 1, 8, 8]},
     "degenerate polygon"),
    ({"segmentation": [TRIANGLE], "bbox": [1, 1, 0, 5]}, "zero-area box"),
    ({"segmentation": [TRIANGLE], "bbox": [40, 40, 5, 5]}, "zero-area box"),
]


@pytest.mark.parametrize("fields, reason", BAD_RECORDS)
def test_single_bad_record_is_skipped_warned_and_counted(tmp_path, caplog, fields, reason):
    good = {"id": 1, "image_id": 10, "category_id": 5, "segmentation": [TRIANGLE],
            "bbox": [1, 1, 5, 5], "area": 12.5, "iscrowd": 0}
    bad = {"id": 2, "image_id": 10, "category_id": 5, "area": 1.0, "iscrowd": 0, **fields}
    path = _write(tmp_path, annotations=[good, bad])
    with caplog.at_level(logging.WARNING):
        ds = CocoInstanceDataset(tmp_path, path)
    assert ds.num_skipped == 1
    assert f"annotation id 2: {reason}" in caplog.text and "skipped 1 of 2" in caplog.text
    assert len(ds[0][1]["labels"]) == 1
    with pytest.raises(DatasetError, match=f"annotation id 2: {reason}"):
        CocoInstanceDataset(tmp_path, path, strict=True)


def test_missing_bbox_and_area_come_from_the_mask(tmp_path):
    anns = [{"id": 1, "image_id": 10, "category_id": 5, "segmentation": _rle(MASK_B),
             "iscrowd": 0}]
    ds = CocoInstanceDataset(tmp_path, _write(tmp_path, annotations=anns))
    _, target = ds[0]
    assert target["boxes"].tolist() == [[10, 7, 15, 11]]
    assert target["area"].tolist() == [float(MASK_B.sum())]
