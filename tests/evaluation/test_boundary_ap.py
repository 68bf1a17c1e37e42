"""Boundary AP (Cheng et al., CVPR 2021) through faster-coco-eval in the COCO evaluator."""

import math

import numpy as np
import pytest
import torch

from levelset_rcnn.evaluation import AP_NAMES, COCOEvaluator
from levelset_rcnn.evaluation.coco_evaluator import BOUNDARY_AP_NAMES

from .cases import LABEL_TO_CAT, evaluator_cases, gt_coco, prediction, square

BIG = (300, 300)  # diagonal 424: Boundary IoU's band is round(0.02 * 424) = 8 px wide


def _evaluator(coco, outputs, **kwargs):
    ev = COCOEvaluator(coco, label_to_cat_id=LABEL_TO_CAT, **kwargs)
    ev.process(list(range(1, len(outputs) + 1)), outputs)
    return ev


def _segm(coco, outputs, **kwargs):
    return _evaluator(coco, outputs, **kwargs).evaluate()["segm/masks"]


@pytest.mark.parametrize("max_dets", [100, 2])
@pytest.mark.parametrize("name", sorted(evaluator_cases()))
def test_faster_coco_eval_segm_and_bbox_ap_equal_pycocotools(name, max_dets):
    coco, outputs = evaluator_cases()[name]
    ev = _evaluator(coco, outputs, max_dets=max_dets)
    for key, iou_type in ((None, "bbox"), ("masks", "segm")):
        img_ids, dets = ev.detections(ev._records, key)
        reference, _, _ = ev._run(dets, iou_type, img_ids)  # pycocotools
        fast = ev._run_faster(dets, iou_type, img_ids)
        assert set(fast) == set(AP_NAMES)
        assert fast == pytest.approx(reference, nan_ok=True), (name, iou_type)


def test_perfect_masks_score_100():
    coco, outputs = evaluator_cases()["perfect"]
    seg = _segm(coco, outputs)
    for key in BOUNDARY_AP_NAMES:
        assert seg[key] == pytest.approx(100), key
    big = square(75, 75, 150, shape=BIG)
    seg = _segm(gt_coco([[(3, big)]], shape=BIG), [prediction([(1, big, 0.9)])])
    for key in ("AP", *BOUNDARY_AP_NAMES):
        assert seg[key] == pytest.approx(100), key


def test_a_few_pixels_shift_costs_boundary_ap_not_mask_ap():
    # A 150x150 square shifted right by 3 px: mask IoU 147 / 153 = 0.961, a hit at every
    # threshold (mask AP 100). Its 8-px inner band (150^2 - 134^2 = 4544 px) overlaps the
    # shifted one in 16 rows x 147 + 134 rows x (5 + 5) = 3692 px: boundary IoU
    # 3692 / (2 * 4544 - 3692) = 0.684, a hit at 0.50..0.65 only (Boundary AP 40).
    gt = square(75, 75, 150, shape=BIG)
    seg = _segm(gt_coco([[(3, gt)]], shape=BIG),
                [prediction([(1, square(75, 78, 150, shape=BIG), 0.9)])])
    assert seg["AP"] == pytest.approx(100)
    assert seg["boundary_AP"] == pytest.approx(40)
    assert seg["boundary_AP50"] == pytest.approx(100)
    assert seg["boundary_AP75"] == pytest.approx(0)


def test_a_jagged_boundary_costs_boundary_ap_not_mask_ap():
    # Rows of the square shifted alternately 3 px left and right: same area, mask IoU 0.961.
    gt = square(75, 75, 150, shape=BIG)
    comb = np.zeros(BIG, dtype=np.uint8)
    for r in range(75, 225):
        o = 3 if (r // 2) % 2 else -3
        comb[r, 75 + o:225 + o] = 1
    assert comb.sum() == gt.sum()
    seg = _segm(gt_coco([[(3, gt)]], shape=BIG), [prediction([(1, comb, 0.9)])])
    assert seg["AP"] == pytest.approx(100)
    assert seg["boundary_AP"] <= 60


def test_a_band_wider_than_the_object_gives_mask_ap():
    # With d >= half the object, the band is the whole mask: boundary IoU = mask IoU.
    gt = square(75, 75, 150, shape=BIG)
    out = [prediction([(1, square(75, 78, 150, shape=BIG), 0.9)])]
    seg = _segm(gt_coco([[(3, gt)]], shape=BIG), out, boundary_dilation_ratio=0.5)
    assert seg["boundary_AP"] == pytest.approx(seg["AP"])


def test_switchable_and_reported_for_every_mask_key():
    coco = gt_coco([[(3, square(10, 10))]])
    out = prediction([(1, square(10, 10), 0.9)])
    out["masks_phi0"] = torch.from_numpy(square(10, 12).astype(np.float32))[None, None]
    res = _evaluator(coco, [out], mask_keys=("masks", "masks_phi0")).evaluate()
    assert res["segm/masks"]["boundary_AP"] == pytest.approx(100)
    # 2 px shift of a 10x10 square in a 40x50 image (band round(0.02 * 64) = 1 px): mask IoU
    # 0.667 (AP 40), but the two 36-px rings share only 8 + 8 pixels of their top and bottom
    # rows: boundary IoU 16 / 56 = 0.29, below every threshold.
    assert res["segm/masks_phi0"]["AP"] == pytest.approx(40)
    assert res["segm/masks_phi0"]["boundary_AP"] == pytest.approx(0)
    assert "boundary_AP" not in res["bbox"]
    off = _evaluator(coco, [out], mask_keys=("masks", "masks_phi0"),
                     boundary_ap=False).evaluate()
    for key in ("segm/masks", "segm/masks_phi0"):
        assert not set(BOUNDARY_AP_NAMES) & set(off[key])
        assert off[key]["AP"] == pytest.approx(res[key]["AP"])
        assert off[key]["AF1"] == pytest.approx(res[key]["AF1"])


def test_no_detections_and_no_true_positive():
    coco, outputs = evaluator_cases()["no_detections"]
    assert _segm(coco, outputs)["boundary_AP"] == pytest.approx(0)
    coco, outputs = evaluator_cases()["wrong_class"]
    seg = _segm(coco, outputs)
    assert seg["boundary_AP"] == pytest.approx(0)
    assert math.isnan(seg["AF1"])


def test_ground_truth_is_left_untouched():
    coco, outputs = evaluator_cases()["mixed"]
    before = {i: set(a) for i, a in coco.anns.items()}
    ev = _evaluator(coco, outputs)
    ev.evaluate()
    ev.evaluate()  # the cached faster-coco-eval copy is reused
    # pycocotools' own evaluation adds "ignore"; faster-coco-eval works on a copy.
    assert all(set(a) - before[i] <= {"ignore", "_ignore"} for i, a in coco.anns.items())
