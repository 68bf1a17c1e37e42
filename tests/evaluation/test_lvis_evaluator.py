"""LVIS AP* through the official lvis-api on tiny fabricated LVIS files: perfect and
hand-computed partial predictions (federated rules included), and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from levelset_rcnn.data.lvis_json import LVISFormatError
from levelset_rcnn.evaluation.lvis_evaluator import LVISEvaluator

H, W = 48, 64
# LVIS ids are unrelated to COCO ids (person 793, car 207, dog 378 here); an LVIS
# category outside COCO (aerosol can) must not take part in AP*.
PERSON, CAR, DOG, AEROSOL = 793, 207, 378, 1
LABEL_TO_COCO = {1: 1, 2: 3, 3: 18}  # model labels: person, car, dog (COCO ids)
BOXES = {  # annotation id -> (image id, LVIS category, x, y, w, h)
    1: (101, PERSON, 2, 2, 10, 10),   # A
    2: (101, PERSON, 20, 2, 10, 10),  # B
    3: (101, AEROSOL, 40, 20, 8, 8),
    4: (102, CAR, 5, 5, 20, 15),      # C
    5: (103, DOG, 30, 10, 12, 12),    # F
    6: (104, PERSON, 4, 20, 10, 10),  # E
}


def rect(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def make_lvis(*, n_extra_images: int = 0) -> dict:
    """A tiny LVIS-format dict (the fields of lvis_v1_val.json).

    Image 101: persons A, B (and an aerosol can); car is in its negative set.
    Image 102: car C. Image 103: dog F; nothing known about person or car there.
    Image 104: person E; person is not exhaustively annotated there.
    """
    cats = [
        {"id": AEROSOL, "name": "aerosol_can", "synset": "aerosol.n.02", "frequency": "c",
         "image_count": 64, "instance_count": 109, "synonyms": ["aerosol_can"], "def": "."},
        {"id": CAR, "name": "car_(automobile)", "synset": "car.n.01", "frequency": "c",
         "image_count": 50, "instance_count": 90, "synonyms": ["car"], "def": "."},
        {"id": DOG, "name": "dog", "synset": "dog.n.01", "frequency": "r",
         "image_count": 5, "instance_count": 6, "synonyms": ["dog"], "def": "."},
        {"id": PERSON, "name": "person", "synset": "person.n.01", "frequency": "f",
         "image_count": 900, "instance_count": 5000, "synonyms": ["person"], "def": "."},
    ]
    neg = {101: [CAR], 102: [], 103: [], 104: []}
    not_exhaustive = {101: [], 102: [], 103: [], 104: [PERSON]}
    split = {101: "val2017", 102: "val2017", 103: "train2017", 104: "val2017"}
    images = [{"id": i, "height": H, "width": W, "neg_category_ids": neg[i],
               "not_exhaustive_category_ids": not_exhaustive[i], "license": 1,
               "coco_url": f"http://images.cocodataset.org/{split[i]}/{i:012d}.jpg",
               "flickr_url": "", "date_captured": ""} for i in (101, 102, 103, 104)]
    for k in range(n_extra_images):
        images.append({**images[1], "id": 200 + k,
                       "coco_url": f"http://images.cocodataset.org/val2017/{200 + k:012d}.jpg"})
    anns = [{"id": aid, "image_id": img, "category_id": cat, "segmentation": [rect(x, y, w, h)],
             "area": float(w * h), "bbox": [x, y, w, h]}
            for aid, (img, cat, x, y, w, h) in BOXES.items()]
    return {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": cats}


def raster(box: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) uint8: the rectangle polygon rasterised by pycocotools as LVIS rasterises GT."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([rect(*box)], H, W)))


def output(dets: list[tuple[int, tuple, float]], *, empty_masks: bool = False) -> dict:
    """A torchvision-style prediction from ``(label, (x, y, w, h), score)`` triples."""
    boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in dets],
                         dtype=torch.float32).reshape(-1, 4)
    masks = np.stack([raster(b) for _, b, _ in dets]) if dets else np.zeros((0, H, W))
    masks = torch.from_numpy(masks.astype(np.float32))[:, None]
    return {"boxes": boxes, "labels": torch.tensor([d[0] for d in dets], dtype=torch.int64),
            "scores": torch.tensor([d[2] for d in dets]), "masks": masks,
            "masks_phi0": torch.zeros_like(masks) if empty_masks else masks}


def gt_box(ann_id: int) -> tuple:
    return BOXES[ann_id][2:]


@pytest.fixture
def lvis_file(tmp_path: Path) -> Path:
    path = tmp_path / "lvis_val.json"
    path.write_text(json.dumps(make_lvis()))
    return path


def run(evaluator: LVISEvaluator, per_image: dict[int, list], **kw) -> dict:
    evaluator.reset()
    ids = sorted(per_image)
    evaluator.process([{"image_id": i} for i in ids], [output(per_image[i], **kw) for i in ids])
    return evaluator.evaluate()


def test_perfect_predictions_score_100(lvis_file):
    ev = LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO,
                       mask_keys=("masks", "masks_phi0"))
    per_image = {101: [(1, gt_box(1), 0.9), (1, gt_box(2), 0.8)],
                 102: [(2, gt_box(4), 0.7)], 103: [(3, gt_box(5), 0.6)],
                 104: [(1, gt_box(6), 0.5)]}
    res = run(ev, per_image, empty_masks=True)
    for key in ("lvis_bbox", "lvis_segm/masks"):
        for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "APs"):
            assert res[key][name] == pytest.approx(100.0), (key, name)
        assert math.isnan(res[key]["APl"])  # no object larger than 96^2 pixels
    # The phi_0 masks are empty: every detection misses at mask IoU, side by side.
    assert res["lvis_segm/masks_phi0"]["AP"] == pytest.approx(0.0)


# Hand computation of the partial case (LVIS AP: per category the mean over 10 IoU thresholds
# of precision at 101 recall points, precision made monotone from the right; every detection
# below has IoU 1 with its target or 0 with everything, so all thresholds agree).
#
# person (3 GT: A, B, E): d1 0.9 = A (TP); d2 0.8 on image 101, misses (FP); d3 0.7 on image
# 103, where person is neither annotated nor negative (dropped); d4 0.6 on image 104 misses,
# but person is not exhaustive there (ignored); d5 0.5 = B (TP). Cumulative (tp, fp) after
# d1, d2, d4, d5: (1,0) (1,1) (1,1) (2,1): recall 1/3, 1/3, 1/3, 2/3; precision 1, 1/2, 1/2,
# 2/3 -> monotone 1, 2/3, 2/3, 2/3. Recall points 0.00..0.33 (34) read 1, 0.34..0.66 (33)
# read 2/3, 0.67..1 (34) read 0: AP = (34 + 33 * 2/3) / 101 = 56/101.
# car (1 GT: C): c0 0.99 on image 103 (dropped, not in its positive/negative sets); c1 0.95
# on image 101, where car is negative (FP); c2 0.4 = C (TP): recall 0, 1; precision 0, 1/2
# -> 1/2, 1/2: AP = 1/2 (it would be 1 without the negative-set rule).
# dog (1 GT: F, rare): no detection: AP = 0.
# The aerosol can is not a COCO category and does not take part.
PERSON_AP, CAR_AP, DOG_AP = 56 / 101, 0.5, 0.0
PARTIAL = {
    101: [(1, gt_box(1), 0.9), (1, (2, 30, 8, 8), 0.8), (1, gt_box(2), 0.5),
          (2, (50, 2, 8, 8), 0.95)],
    102: [(2, gt_box(4), 0.4)],
    103: [(1, (2, 2, 8, 8), 0.7), (2, (2, 30, 8, 8), 0.99)],
    104: [(1, (40, 2, 8, 8), 0.6)],
}


def test_partial_predictions_match_the_hand_computed_federated_ap(lvis_file):
    ev = LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO)
    res = run(ev, PARTIAL)
    for key in ("lvis_bbox", "lvis_segm/masks"):
        r = res[key]
        assert r["AP"] == pytest.approx(100 * (PERSON_AP + CAR_AP + DOG_AP) / 3), key
        assert r["AP50"] == pytest.approx(r["AP"]) and r["AP75"] == pytest.approx(r["AP"])
        assert r["APf"] == pytest.approx(100 * PERSON_AP)
        assert r["APc"] == pytest.approx(100 * CAR_AP)
        assert r["APr"] == pytest.approx(100 * DOG_AP)


def test_max_dets_keeps_the_best_scores_per_image(lvis_file):
    # Image 101 keeps c1 (0.95) and d1 (0.9) only. person: d1 TP, d4 ignored -> recall 1/3 at
    # precision 1: AP = 34/101; car unchanged (1/2).
    ev = LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO, iou_types=("segm",),
                       max_dets=2)
    res = run(ev, PARTIAL)
    assert set(res) == {"lvis_segm/masks"}
    assert res["lvis_segm/masks"]["APf"] == pytest.approx(100 * 34 / 101)
    assert res["lvis_segm/masks"]["AP"] == pytest.approx(100 * (34 / 101 + 0.5 + 0) / 3)


def test_only_processed_images_count_and_no_detections_score_zero(lvis_file):
    ev = LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO, iou_types=("segm",))
    # Only image 102 (car C): car is the only category with ground truth there.
    res = run(ev, {102: [(2, gt_box(4), 0.4)]})["lvis_segm/masks"]
    assert res["AP"] == pytest.approx(100.0) and res["APc"] == pytest.approx(100.0)
    assert math.isnan(res["APf"]) and math.isnan(res["APr"])
    res = run(ev, {101: [], 102: []})["lvis_segm/masks"]
    assert res["AP"] == pytest.approx(0.0)


def test_accepts_a_parsed_dict_and_an_image_processed_twice_counts_once():
    ev = LVISEvaluator(make_lvis(), label_to_cat_id=LABEL_TO_COCO, iou_types=("segm",))
    ev.process([102], [output([(2, gt_box(4), 0.4)])])
    ev.process([102], [output([(2, (40, 30, 8, 8), 0.9)])])  # DDP padding repeat: ignored
    assert ev.evaluate()["lvis_segm/masks"]["AP"] == pytest.approx(100.0)


def test_missing_lvis_category_for_a_predicted_coco_class(lvis_file):
    # The model also predicts "hair drier" (COCO 89), which this LVIS file lacks.
    with pytest.raises(LVISFormatError, match=r"lvis_val\.json.*89 'hair drier' -> "
                                              r"'hand_blower\.n\.01'.*--drop-missing"):
        LVISEvaluator(lvis_file, label_to_cat_id={**LABEL_TO_COCO, 4: 89})


def test_drop_missing_discards_the_class_without_lvis_category(lvis_file):
    # As LVIS v1 lacks "hot dog" (COCO 58): its detections, even on a ground-truth person,
    # are discarded and the hand-computed AP* is unchanged.
    ev = LVISEvaluator(lvis_file, label_to_cat_id={**LABEL_TO_COCO, 4: 58}, drop_missing=True)
    assert 58 not in ev.coco_to_lvis
    per_image = {k: list(v) for k, v in PARTIAL.items()}
    per_image[101] += [(4, gt_box(1), 0.99), (4, (2, 30, 8, 8), 0.98)]
    res = run(ev, per_image)["lvis_segm/masks"]
    assert res["AP"] == pytest.approx(100 * (PERSON_AP + CAR_AP + DOG_AP) / 3)


def test_label_mapped_to_a_non_coco_id_is_refused(lvis_file):
    with pytest.raises(LVISFormatError, match=r"\[12, 91\] are not COCO categories"):
        LVISEvaluator(lvis_file, label_to_cat_id={1: 1, 2: 12, 3: 91})


def test_model_of_other_classes_is_refused(lvis_file):
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "circle"}, {"id": 18, "name": "dog"}]
    with pytest.raises(LVISFormatError, match=r"3: 'circle' \(COCO: 'car'\)"):
        LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO, dataset_categories=cats)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d["categories"][3].pop("synset"), r"no LVIS category for 1 COCO categories .*1 "
                                                 r"'person' -> 'person\.n\.01'; 1 categories "
                                                 r"of the file have no 'synset', e\.g\. id 793 "
                                                 r"\(person\)"),
    (lambda d: [c.pop("synset") for c in d["categories"]], r"no category has a 'synset' "
                                                            r"\(e\.g\. category id 1 "
                                                            r"\(aerosol_can\)\): not an LVIS"),
    (lambda d: d.pop("categories"), r"missing the 'categories' list"),
    (lambda d: d["categories"][0].update(frequency="x"), r"category id 1 .* no 'frequency'"),
    (lambda d: d["images"][2].pop("neg_category_ids"), r"image id 103 has no "
                                                       r"'neg_category_ids'"),
    (lambda d: d["annotations"][0].update(category_id=5), r"annotation id 1 has unknown "
                                                          r"category id 5"),
])
def test_malformed_lvis_file(tmp_path, breakage, message):
    data = make_lvis()
    breakage(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LVISFormatError, match=r"broken\.json: " + message):
        LVISEvaluator(path, label_to_cat_id=LABEL_TO_COCO)


def test_missing_file_and_unknown_image(tmp_path, lvis_file):
    with pytest.raises(LVISFormatError, match="LVIS annotation file not found"):
        LVISEvaluator(tmp_path / "nope.json", label_to_cat_id=LABEL_TO_COCO)
    ev = LVISEvaluator(lvis_file, label_to_cat_id=LABEL_TO_COCO)
    with pytest.raises(KeyError, match="image id 7 is not in the LVIS ground truth"):
        ev.process([7], [output([])])
    bad = output([(1, gt_box(1), 0.9)])
    bad["masks"] = bad["masks"][..., :32]
    with pytest.raises(ValueError,
                       match="'masks' is 32x48 but the LVIS ground truth .* image as 64x48"):
        ev.process([101], [bad])
