import json
import math

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from levelset_rcnn.evaluation import COCOEvaluator, DatasetEvaluators, write_coco_results
from levelset_rcnn.evaluation import evaluator as evaluator_module

from .cases import LABEL_TO_CAT, gt_coco, prediction, square


def _evaluate(coco, outputs, **kwargs):
    ev = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT, **kwargs)
    ev.process(list(range(1, len(outputs) + 1)), outputs)
    return ev.evaluate()


def test_perfect_predictions_score_100():
    gts = [[(3, square(2, 2)), (7, square(20, 25, 12))], [(7, square(5, 30, 8))]]
    coco = gt_coco(gts)
    outs = [prediction([(1, square(2, 2), 0.9), (2, square(20, 25, 12), 0.8)]),
            prediction([(2, square(5, 30, 8), 0.7)])]
    res = _evaluate(coco, outs)
    assert res["bbox"]["AP"] == pytest.approx(100)
    seg = res["segm/masks"]
    for key in ("AP", "AP50", "AP75", "AF1", "AF2"):
        assert seg[key] == pytest.approx(100), key


@pytest.mark.parametrize("shift, ap, af1, af1_davis",
                         [(1, 70.0, 100.0, 100.0), (2, 40.0, 100 * 20 / 36, 100 * 22 / 40)])
def test_shifted_square_hand_computed(shift, ap, af1, af1_davis):
    # 10x10 square shifted by s px: IoU = (10 - s) / (10 + s), 0.818 for s=1 (a true positive
    # at thresholds 0.50..0.80, 7 of 10) and 0.667 for s=2 (0.50..0.65, 4 of 10). A single
    # detection is either a perfect hit (AP 1) or a miss (0) at each threshold. AF1 of the
    # inner contour (36-pixel rings) and of DAVIS's boundary (40-pixel rings), counted in
    # test_boundary.py.
    coco = gt_coco([[(3, square(10, 10))]])
    outs = [prediction([(1, square(10, 10 + shift), 0.9)])]
    res = _evaluate(coco, outs, boundary_mode="inner")
    assert res["bbox"]["AP"] == pytest.approx(ap)
    assert res["segm/masks"]["AP"] == pytest.approx(ap)
    assert res["segm/masks"]["AF1"] == pytest.approx(af1)
    assert res["segm/masks"]["AF2"] == pytest.approx(100.0)
    davis = _evaluate(coco, outs)["segm/masks"]  # the default
    assert davis["AP"] == pytest.approx(ap)
    assert davis["AF1"] == pytest.approx(af1_davis)
    assert davis["AF2"] == pytest.approx(100.0)


def test_missing_instance_halves_recall():
    # Recall reaches 0.5 with precision 1: 51 of COCO's 101 recall points have precision 1.
    coco = gt_coco([[(3, square(2, 2)), (3, square(20, 30))]])
    res = _evaluate(coco, [prediction([(1, square(2, 2), 0.9)])])
    assert res["segm/masks"]["AP"] == pytest.approx(100 * 51 / 101)
    assert res["bbox"]["AP"] == pytest.approx(100 * 51 / 101)
    assert res["segm/masks"]["AF1"] == pytest.approx(100)


def test_higher_scored_false_positive_halves_precision():
    coco = gt_coco([[(3, square(2, 2))]])
    res = _evaluate(coco, [prediction([(1, square(25, 35), 0.9), (1, square(2, 2), 0.5)])])
    assert res["segm/masks"]["AP"] == pytest.approx(50)


def test_wrong_class_is_not_a_match():
    coco = gt_coco([[(3, square(2, 2))]])
    res = _evaluate(coco, [prediction([(2, square(2, 2), 0.9)])])
    assert res["segm/masks"]["AP"] == pytest.approx(0)
    assert math.isnan(res["segm/masks"]["AF1"])  # no true positive at all


def test_detection_on_crowd_region_is_ignored():
    crowd = square(22, 30, 15)
    coco = gt_coco([[(3, square(2, 2))]], crowd=[(0, 3, crowd)])
    res = _evaluate(coco, [prediction([(1, crowd, 0.95), (1, square(2, 2), 0.5)])])
    assert res["segm/masks"]["AP"] == pytest.approx(100)
    assert res["segm/masks"]["AF1"] == pytest.approx(100)


def test_several_mask_sets_side_by_side():
    coco = gt_coco([[(3, square(10, 10))]])
    out = prediction([(1, square(10, 10), 0.9)])
    out["masks_phi0"] = torch.from_numpy(square(10, 12).astype(np.float32))[None, None]
    res = _evaluate(coco, [out], mask_keys=("masks", "masks_phi0"), boundary_mode="inner")
    assert set(res) == {"bbox", "segm/masks", "segm/masks_phi0"}
    assert res["segm/masks"]["AP"] == pytest.approx(100)
    assert res["segm/masks_phi0"]["AP"] == pytest.approx(40)
    assert res["segm/masks_phi0"]["AF1"] == pytest.approx(100 * 20 / 36)
    davis = _evaluate(coco, [out], mask_keys=("masks", "masks_phi0"))
    assert davis["segm/masks"]["AF1"] == pytest.approx(100)
    assert davis["segm/masks_phi0"]["AF1"] == pytest.approx(100 * 22 / 40)


def test_probabilities_are_thresholded():
    coco = gt_coco([[(3, square(10, 10))]])
    out = prediction([(1, square(10, 10), 0.9)])
    out["masks"] = out["masks"] * 0.8 + 0.1  # 0.9 inside, 0.1 outside
    assert _evaluate(coco, [out])["segm/masks"]["AP"] == pytest.approx(100)
    assert _evaluate(coco, [out], mask_threshold=0.95)["segm/masks"]["AP"] == pytest.approx(0)


def test_no_detections_score_zero():
    coco = gt_coco([[(3, square(10, 10))]])
    res = _evaluate(coco, [prediction([])])
    assert res["bbox"]["AP"] == pytest.approx(0)
    assert res["segm/masks"]["AP"] == pytest.approx(0)


def test_only_processed_images_count_and_targets_work():
    coco = gt_coco([[(3, square(2, 2))], [(7, square(5, 5))]])
    ev = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT)
    ev.process([{"image_id": torch.tensor(1)}], [prediction([(1, square(2, 2), 0.9)])])
    assert ev.evaluate()["segm/masks"]["AP"] == pytest.approx(100)
    ev.reset()
    with pytest.raises(KeyError, match="image id 9"):
        ev.process([9], [prediction([])])


def test_bad_outputs_are_named():
    coco = gt_coco([[(3, square(2, 2))]])
    ev = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT)
    with pytest.raises(KeyError, match="label 5"):
        ev.process([1], [prediction([(5, square(2, 2), 0.9)])])
    out = prediction([(1, square(2, 2), 0.9)])
    out["masks"] = out["masks"][..., :20, :20]
    with pytest.raises(ValueError, match="original image"):
        ev.process([1], [out])
    with pytest.raises(ValueError, match="category ids"):
        COCOEvaluator(coco, label_to_cat_id={1: 99})


def test_merge_across_ranks_equals_single_pass(monkeypatch):
    gts = [[(3, square(2, 2)), (7, square(20, 25, 12))], [(7, square(5, 30, 8))],
           [(3, square(10, 10))]]
    coco = gt_coco(gts)
    outs = [prediction([(1, square(2, 3), 0.9), (2, square(20, 25, 12), 0.8)]),
            prediction([(2, square(5, 31, 8), 0.7), (1, square(25, 5), 0.95)]),
            prediction([(1, square(10, 12), 0.6)])]
    whole = _evaluate(coco, outs)
    shards = []
    for ids in ([1, 3], [2, 3]):  # image 3 on both ranks, as DistributedSampler pads
        ev = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT)
        ev.process(ids, [outs[i - 1] for i in ids])
        shards.append(ev._records)
    monkeypatch.setattr(evaluator_module, "all_gather", lambda obj: shards)
    merged = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT).evaluate()
    assert set(merged) == set(whole)
    for key in whole:
        assert merged[key] == pytest.approx(whole[key], nan_ok=True), key
    assert 0 < whole["segm/masks"]["AP"] < 100


def test_results_json_round_trips_through_loadres(tmp_path):
    coco = gt_coco([[(3, square(2, 2)), (7, square(20, 25, 12))], [(7, square(5, 30, 8))]])
    outs = [prediction([(1, square(2, 3), 0.9), (2, square(20, 25, 12), 0.8)]),
            prediction([(2, square(6, 30, 8), 0.7)])]
    path = write_coco_results(outs, [1, 2], LABEL_TO_CAT, tmp_path / "res.json")
    records = json.loads(path.read_text())
    assert len(records) == 3 and {r["category_id"] for r in records} == {3, 7}
    for r in records:  # mask-area size ranges: evaluate masks without boxes
        del r["bbox"]
    coco_eval = COCOeval(coco, coco.loadRes(records), "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    ours = _evaluate(coco, outs)["segm/masks"]
    assert ours["AP"] == pytest.approx(100 * coco_eval.stats[0])
    assert ours["AP75"] == pytest.approx(100 * coco_eval.stats[2])


def test_evaluators_combine():
    coco = gt_coco([[(3, square(2, 2))]])
    ev = DatasetEvaluators([COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT,
                                          iou_types=("bbox",))])
    ev.reset()
    ev.process([1], [prediction([(1, square(2, 2), 0.9)])])
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(100)


def test_max_dets_caps_detections_per_image():
    squares = [square(2, 2), square(2, 20), square(20, 2)]
    coco = gt_coco([[(3, m) for m in squares]])
    out = prediction([(1, m, s) for m, s in zip(squares, (0.9, 0.8, 0.7), strict=True)])
    assert _evaluate(coco, [out])["segm/masks"]["AP"] == pytest.approx(100)
    # Two of three found: precision 1 up to recall 2/3, i.e. 67 of the 101 recall points.
    capped = _evaluate(coco, [out], max_dets=2)
    assert capped["segm/masks"]["AP"] == pytest.approx(100 * 67 / 101)
    assert capped["bbox"]["AP50"] == pytest.approx(100 * 67 / 101)


def test_boundary_mode_is_checked():
    coco = gt_coco([[(3, square(2, 2))]])
    with pytest.raises(ValueError, match="boundary_mode"):
        COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT, boundary_mode="outer")
