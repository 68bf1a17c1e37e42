"""The LVIS -> COCO-categories converter on a tiny fabricated LVIS file: categories, ids,
file names, federated fields, loading through CocoInstanceDataset, AP* on the output, and
bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from levelset_rcnn.data import CocoInstanceDataset, DatasetError
from levelset_rcnn.data.converters import COCO80_CAT_IDS, COCO80_NAMES
from levelset_rcnn.data.converters.lvis import convert_lvis
from levelset_rcnn.data.lvis_json import COCO_LVIS_SYNSETS, LVISFormatError
from levelset_rcnn.engine.inference import evaluate_model
from levelset_rcnn.evaluation.lvis_evaluator import LVISEvaluator
from levelset_rcnn.modeling import levelset_rcnn

from ..evaluation.test_lvis_evaluator import (
    AEROSOL,
    CAR,
    DOG,
    LABEL_TO_COCO,
    PARTIAL,
    PERSON,
    H,
    W,
    make_lvis,
    run,
)


def full_lvis() -> dict:
    """The evaluator tests' LVIS file plus a category for every other COCO synset (LVIS ids
    2000 + COCO id; a real file has all 80)."""
    data = make_lvis()
    have = {c["synset"] for c in data["categories"]}
    for coco_id, (name, synset) in COCO_LVIS_SYNSETS.items():
        if synset not in have:
            data["categories"].append({"id": 2000 + coco_id, "name": name.replace(" ", "_"),
                                       "synset": synset, "frequency": "f", "image_count": 100,
                                       "instance_count": 100, "synonyms": [name], "def": "."})
    return data


def write(tmp_path: Path, data: dict, name: str = "lvis_val.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def converted(tmp_path) -> tuple[Path, dict]:
    out = convert_lvis(write(tmp_path, full_lvis()), tmp_path / "out" / "lvis_coco.json",
                       progress=False)
    return out, json.loads(out.read_text())


def test_categories_are_cocos_with_their_lvis_fields(converted):
    _, data = converted
    cats = data["categories"]
    assert [c["id"] for c in cats] == list(COCO80_CAT_IDS)
    assert [c["name"] for c in cats] == list(COCO80_NAMES)
    by_id = {c["id"]: c for c in cats}
    assert (by_id[1]["lvis_id"], by_id[1]["synset"], by_id[1]["frequency"]) == (
        PERSON, "person.n.01", "f")
    assert (by_id[18]["lvis_id"], by_id[18]["frequency"], by_id[18]["image_count"]) == (
        DOG, "r", 5)
    assert by_id[89]["synset"] == "hand_blower.n.01"


def test_annotations_and_images(converted):
    _, data = converted
    source = make_lvis()
    lvis_cat = {a["id"]: a["category_id"] for a in source["annotations"]}
    expected_coco = {PERSON: 1, CAR: 3, DOG: 18}
    anns = {a["id"]: a for a in data["annotations"]}
    # The aerosol can (annotation 3) is not a COCO category.
    assert sorted(anns) == [a for a in sorted(lvis_cat) if lvis_cat[a] != AEROSOL]
    for src in source["annotations"]:
        if src["id"] in anns:
            ann = anns[src["id"]]
            assert ann["category_id"] == expected_coco[src["category_id"]]
            assert (ann["image_id"], ann["segmentation"], ann["bbox"], ann["area"]) == (
                src["image_id"], src["segmentation"], src["bbox"], src["area"])
            assert ann["iscrowd"] == 0
    images = {i["id"]: i for i in data["images"]}
    assert images[101]["file_name"] == "val2017/000000000101.jpg"
    assert images[103]["file_name"] == "train2017/000000000103.jpg"
    assert (images[101]["height"], images[101]["width"]) == (H, W)
    assert images[101]["neg_category_ids"] == [3]  # LVIS car 207 -> COCO car 3
    assert images[104]["not_exhaustive_category_ids"] == [1]  # LVIS person 793 -> COCO 1


def test_splits_and_train2017_warning(tmp_path, caplog):
    src = write(tmp_path, full_lvis())
    with caplog.at_level(logging.WARNING):
        convert_lvis(src, tmp_path / "all.json", progress=False)
    assert "1 of the 4 images are COCO train2017 images" in caplog.text
    data = json.loads(convert_lvis(src, tmp_path / "val.json", splits=("val2017",),
                                   progress=False).read_text())
    assert sorted(i["id"] for i in data["images"]) == [101, 102, 104]
    assert 5 not in {a["id"] for a in data["annotations"]}  # the dog on train2017 image 103


def test_coco_dataset_reads_the_output(converted, tmp_path):
    out, data = converted
    root = tmp_path / "coco"
    for img in data["images"]:
        path = root / img["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(path)
    ds = CocoInstanceDataset(root, out, train=False)
    # The same labels as a model trained on COCO's 80 categories.
    assert ds.label_to_cat_id == {i + 1: c for i, c in enumerate(COCO80_CAT_IDS)}
    assert ds.num_classes == 81 and len(ds) == 4
    image, target = ds[ds.ids.index(101)]
    assert tuple(image.shape) == (3, H, W)
    assert target["labels"].tolist() == [1, 1]
    for mask, ann_id in zip(target["masks"], (1, 2), strict=True):
        poly = next(a for a in make_lvis()["annotations"] if a["id"] == ann_id)["segmentation"]
        ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, H, W)))
        np.testing.assert_array_equal(mask.numpy(), ref)
    _, target = ds[ds.ids.index(103)]
    assert target["labels"].tolist() == [COCO80_CAT_IDS.index(18) + 1]  # dog


def test_ap_star_is_the_same_on_the_output_and_on_the_lvis_file(converted, tmp_path):
    out, _ = converted
    res_lvis = run(LVISEvaluator(write(tmp_path, make_lvis(), "orig.json"),
                                 label_to_cat_id=LABEL_TO_COCO), PARTIAL)
    res_out = run(LVISEvaluator(out, label_to_cat_id=LABEL_TO_COCO), PARTIAL)
    assert res_out == res_lvis
    assert res_out["lvis_segm/masks"]["AP"] == pytest.approx(100 * (56 / 101 + 0.5) / 3)


def test_lvis_file_lacking_coco_synsets(tmp_path):
    data = full_lvis()
    data["categories"] = [c for c in data["categories"]
                          if c["synset"] not in ("hand_blower.n.01", "beef.n.01")]
    with pytest.raises(DatasetError, match=r"lvis_val\.json: no LVIS category for 2 COCO "
                                           r"categories.*21 'cow' -> 'beef\.n\.01'.*89 'hair "
                                           r"drier'"):
        convert_lvis(write(tmp_path, data), tmp_path / "o.json", progress=False)


def test_drop_missing_keeps_the_80_categories(tmp_path):
    # LVIS v1 has no hot dog (frank.n.02).
    data = full_lvis()
    data["categories"] = [c for c in data["categories"] if c["synset"] != "frank.n.02"]
    src = write(tmp_path, data)
    with pytest.raises(DatasetError, match=r"58 'hot dog' -> 'frank\.n\.02'"):
        convert_lvis(src, tmp_path / "o.json", progress=False)
    out = convert_lvis(src, tmp_path / "o.json", drop_missing=True, progress=False)
    cats = {c["id"]: c for c in json.loads(out.read_text())["categories"]}
    assert sorted(cats) == list(COCO80_CAT_IDS)
    assert cats[58] == {"id": 58, "name": "hot dog", "supercategory": "food", "lvis_id": None}
    # The output serves as LVIS ground truth too; hot dog must be dropped there as well.
    with pytest.raises(LVISFormatError, match=r"58 'hot dog'.*have no 'synset', e\.g\. id 58"):
        LVISEvaluator(out, label_to_cat_id={**LABEL_TO_COCO, 4: 58})
    ev = LVISEvaluator(out, label_to_cat_id={**LABEL_TO_COCO, 4: 58}, drop_missing=True)
    assert run(ev, PARTIAL)["lvis_segm/masks"]["AP"] == pytest.approx(100 * (56 / 101 + 0.5) / 3)


def test_not_an_lvis_file(tmp_path):
    data = full_lvis()
    for c in data["categories"]:
        c.pop("synset")
    with pytest.raises(DatasetError, match=r"lvis_val\.json: no category has a 'synset' \(e\.g\. "
                                           r"category id 1 \(aerosol_can\)\)"):
        convert_lvis(write(tmp_path, data), tmp_path / "o.json", progress=False)
    with pytest.raises(DatasetError, match="LVIS annotation file not found"):
        convert_lvis(tmp_path / "missing.json", tmp_path / "o.json", progress=False)


def test_image_without_coco_url(tmp_path):
    data = full_lvis()
    data["images"][1].pop("coco_url")
    with pytest.raises(DatasetError, match=r"lvis_val\.json: image id 102 has no 'coco_url'"):
        convert_lvis(write(tmp_path, data), tmp_path / "o.json", progress=False)


def test_existing_output_needs_overwrite(tmp_path):
    src = write(tmp_path, full_lvis())
    out = tmp_path / "o.json"
    out.write_text("{}")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_lvis(src, out, progress=False)
    convert_lvis(src, out, overwrite=True, progress=False)
    assert len(json.loads(out.read_text())["categories"]) == 80


def test_coco_model_on_the_output_through_the_engine(converted, tmp_path):
    """Dataset targets as predictions come back as AP* 100 on the original LVIS file (labels,
    image ids and masks survive the round trip); a tiny untrained COCO-class model runs
    through the engine's evaluation loop with phi_0 and phi_N masks side by side."""
    out, data = converted
    root = tmp_path / "coco"
    for img in data["images"]:
        (root / img["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(
            root / img["file_name"])
    ds = CocoInstanceDataset(root, out, train=False)
    lvis = write(tmp_path, full_lvis(), "orig.json")
    ev = LVISEvaluator(lvis, label_to_cat_id=ds.label_to_cat_id,
                       dataset_categories=ds.coco.dataset["categories"])
    for i in range(len(ds)):
        _, t = ds[i]
        n = len(t["labels"])
        ev.process([t], [{"boxes": t["boxes"], "labels": t["labels"],
                          "scores": torch.linspace(0.9, 0.5, n),
                          "masks": t["masks"][:, None].float()}])
    res = ev.evaluate()
    assert res["lvis_segm/masks"]["AP"] == pytest.approx(100.0)
    assert res["lvis_bbox"]["AP"] == pytest.approx(100.0)

    torch.manual_seed(0)
    model = levelset_rcnn(backbone="resnet18", num_classes=ds.num_classes, fpn_channels=16,
                          box_representation_size=32, mask_layers=[16], predictor_channels=16,
                          cv_channels=8, cv_hidden_channels=8, min_size=64, max_size=64,
                          rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                          box_detections_per_img=8, box_score_thresh=0.0)
    ev = LVISEvaluator(lvis, label_to_cat_id=ds.label_to_cat_id,
                       mask_keys=("masks", "masks_phi0"))
    loader = [(tuple(img for img, _ in pair), tuple(t for _, t in pair))
              for pair in ([ds[0], ds[1]], [ds[2], ds[3]])]
    res = evaluate_model(model, loader, ev, torch.device("cpu"), progress=False)
    assert set(res) == {"lvis_bbox", "lvis_segm/masks", "lvis_segm/masks_phi0"}
    for metrics in res.values():
        assert 0.0 <= metrics["AP"] <= 100.0
