"""CityscapesEvaluator through cityscapesscripts' official instance-level evaluation, on a
fabricated Cityscapes tree: perfect predictions, hand-computed partial ones, both mask sets of
LevelSet R-CNN, repeated runs in one process, DDP merging, the engine's evaluation loop."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from levelset_rcnn.data import CocoInstanceDataset
from levelset_rcnn.data.converters import convert_cityscapes
from levelset_rcnn.evaluation import cityscapes_evaluator as cs_module
from levelset_rcnn.evaluation import evaluator as evaluator_module
from levelset_rcnn.evaluation.cityscapes_evaluator import CityscapesEvaluator

from ..cityscapes_fixture import SCENES, base_name, make_cityscapes_tree, read_ids

PRESENT = ("person", "rider", "car", "truck", "bicycle")  # classes with ground truth
ABSENT = ("bus", "train", "motorcycle")
NAME_OF = {24: "person", 25: "rider", 26: "car", 27: "truck", 33: "bicycle"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = make_cityscapes_tree(tmp_path_factory.mktemp("cityscapes"))
    convert_cityscapes(root, root / "val.json", progress=False)
    return root


@pytest.fixture(scope="module")
def dataset(tree):
    return CocoInstanceDataset(tree / "leftImg8bit" / "val", tree / "val.json", train=False)


def _image_id(ds, city, frame):
    name = f"{city}/{base_name(city, frame)}_leftImg8bit.png"
    return next(i for i, info in ds.coco.imgs.items() if info["file_name"] == name)


def _gt_instances(tree, ds):
    """Per image id: [(label id, instance value, (H, W) bool mask)] read from the PNGs."""
    out = {}
    for city, frame in SCENES:
        ids = read_ids(tree, "val", city, frame)
        out[_image_id(ds, city, frame)] = [(int(v) // 1000, int(v), ids == v)
                                           for v in np.unique(ids) if v // 1000 in NAME_OF]
    return out


def _output(ds, items):
    """A prediction dict from [(label id, (H, W) bool mask, score)]."""
    masks = torch.stack([torch.from_numpy(m) for _, m, _ in items]).float()[:, None]
    boxes = []
    for _, m, _ in items:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([ds.cat_id_to_label[c] for c, _, _ in items]),
            "scores": torch.tensor([s for _, _, s in items], dtype=torch.float32),
            "masks": masks}


def _perfect(tree, ds, drop=(), extra=None):
    """Outputs per image id: every gt instance (score 0.9) except the values in ``drop``,
    plus ``extra[image_id]`` items."""
    outs = {}
    for image_id, insts in _gt_instances(tree, ds).items():
        items = [(lab, m, 0.9) for lab, v, m in insts if v not in drop]
        items += (extra or {}).get(image_id, [])
        outs[image_id] = _output(ds, items)
    return outs


def _evaluate(ev, outs):
    ev.reset()
    for image_id, out in outs.items():
        ev.process([image_id], [out])
    return ev.evaluate()


def _evaluator(tree, ds, **kw):
    return CityscapesEvaluator(ds.coco, ds.label_to_cat_id, tree / "gtFine" / "val", **kw)


def _rect_mask(y0, y1, x0, x1):
    m = np.zeros((64, 128), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_perfect_prediction_scores_100(tree, dataset):
    res = _evaluate(_evaluator(tree, dataset), _perfect(tree, dataset))["cityscapes/masks"]
    assert res["AP"] == pytest.approx(100) and res["AP50"] == pytest.approx(100)
    for name in PRESENT:
        assert res["per_class"][name] == pytest.approx({"AP": 100, "AP50": 100})
    for name in ABSENT:  # no ground truth, no prediction: NaN, left out of the mean
        assert math.isnan(res["per_class"][name]["AP"])


def test_one_missing_car_gives_car_ap_50(tree, dataset):
    """Two cars, one predicted exactly (score 0.9), one missed. At every IoU threshold the
    official curve has one point (precision 1, recall 1/2) plus the artificial (1, 0);
    step widths from the recalls [1/2, 0] padded to [1/2, 1/2, 0, 0] convolved with
    [-1/2, 0, 1/2] are [1/4, 1/4], so AP = 1 * 1/4 + 1 * 1/4 = 1/2. Overall: the mean over
    the five classes with ground truth, (4 * 100 + 50) / 5 = 90."""
    res = _evaluate(_evaluator(tree, dataset),
                    _perfect(tree, dataset, drop={26001}))["cityscapes/masks"]
    assert res["per_class"]["car"] == pytest.approx({"AP": 50, "AP50": 50})
    assert res["per_class"]["person"] == pytest.approx({"AP": 100, "AP50": 100})
    assert res["AP"] == pytest.approx(90) and res["AP50"] == pytest.approx(90)


def test_higher_scored_false_positive_gives_person_ap_one_third(tree, dataset):
    """Person: 2 gt, both found with score 0.9, plus a false positive on the road (not void)
    with score 0.95. Sorted by ascending score: [TP .9, TP .9, FP .95]; at threshold .9
    (tp 2, fp 1): precision 2/3, recall 1; at .95 (tp 0, fp 1): precision 0, recall 0; the
    artificial point (1, 0). Recalls [1, 0, 0] padded to [1, 1, 0, 0, 0] give step widths
    [1/2, 1/2, 0], so AP = 2/3 * 1/2 + 0 * 1/2 + 1 * 0 = 1/3 at every IoU threshold."""
    image_id = _image_id(dataset, "aachen", "000001_000019")
    fp = [(24, _rect_mask(45, 60, 100, 120), 0.95)]  # 300 px of road
    res = _evaluate(_evaluator(tree, dataset),
                    _perfect(tree, dataset, extra={image_id: fp}))["cityscapes/masks"]
    assert res["per_class"]["person"] == pytest.approx({"AP": 100 / 3, "AP50": 100 / 3})
    assert res["AP"] == pytest.approx((4 * 100 + 100 / 3) / 5)


def test_single_gt_false_positive_first_gives_ap_25(tree, dataset):
    """Truck: 1 gt (found, score 0.8) and a false positive on a road (scored 0.95). Points:
    (.8: tp 1, fp 1 -> p 1/2, r 1), (.95: tp 0, fp 1 -> p 0, r 0), artificial (1, 0); widths
    [1/2, 1/2, 0]; AP = 1/2 * 1/2 = 1/4 (not the 1/2 of an interpolated COCO curve)."""
    road_image = _image_id(dataset, "aachen", "000001_000019")
    outs = {}
    for image_id, insts in _gt_instances(tree, dataset).items():
        items = [(lab, m, 0.8 if lab == 27 else 0.9) for lab, _, m in insts]
        if image_id == road_image:
            items.append((27, _rect_mask(45, 60, 0, 30), 0.95))
        outs[image_id] = _output(dataset, items)
    res = _evaluate(_evaluator(tree, dataset), outs)["cityscapes/masks"]
    assert res["per_class"]["truck"] == pytest.approx({"AP": 25, "AP50": 25})
    assert res["per_class"]["car"] == pytest.approx({"AP": 100, "AP50": 100})


def test_false_positives_on_void_and_on_a_group_are_ignored(tree, dataset):
    """A prediction mostly on void (unlabeled pixels) or on a car group region is not a false
    positive in the official protocol: the scores stay 100."""
    image_id = _image_id(dataset, "aachen", "000000_000019")
    extra = [(24, _rect_mask(12, 30, 0, 3), 0.99),    # x < 4, rows 12..29: unlabeled (void)
             (26, _rect_mask(44, 54, 80, 100), 0.99)]  # exactly the cargroup region
    res = _evaluate(_evaluator(tree, dataset),
                    _perfect(tree, dataset, extra={image_id: extra}))["cityscapes/masks"]
    assert res["AP"] == pytest.approx(100)


def test_both_mask_sets_and_output_dir(tree, dataset, tmp_path):
    outs = _perfect(tree, dataset)
    car_image = _image_id(dataset, "aachen", "000000_000019")
    missed = torch.from_numpy(read_ids(tree, "val", "aachen", "000000_000019") == 26001)
    for image_id, out in outs.items():  # same detections; phi_0 misses car 26001 (empty mask)
        out["masks_phi0"] = out["masks"].clone()
        if image_id == car_image:
            k = [torch.equal(m.bool(), missed) for m in out["masks"][:, 0]].index(True)
            out["masks_phi0"][k] = 0
    ev = _evaluator(tree, dataset, mask_keys=("masks", "masks_phi0"), output_dir=tmp_path)
    res = _evaluate(ev, outs)
    assert res["cityscapes/masks"]["AP"] == pytest.approx(100)
    assert res["cityscapes/masks_phi0"]["per_class"]["car"]["AP"] == pytest.approx(50)
    # the official submission format, one folder per mask set
    txt = tmp_path / "cityscapes_pred_masks" / "aachen" / "aachen_000000_000019_pred.txt"
    lines = [line.split() for line in txt.read_text().splitlines()]
    assert sorted(int(label) for _, label, _ in lines) == [24, 26, 26]
    for png, _, score in lines:
        assert (txt.parent / png).is_file() and float(score) == pytest.approx(0.9)
    saved = json.loads((tmp_path / "cityscapes_pred_masks_phi0" /
                        "resultInstanceLevelSemanticLabeling.json").read_text())
    assert saved["averages"]["classes"]["car"]["ap"] == pytest.approx(0.5)


def test_repeated_runs_ignore_global_state_and_leave_the_dataset_alone(tree, dataset,
                                                                        monkeypatch):
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    # Settings a previous user of the official module may have left behind.
    monkeypatch.setattr(official.args, "minRegionSizes", np.array([10**6, 10**6, 10**6]))
    monkeypatch.setattr(official.args, "overlaps", np.array([0.99]))
    monkeypatch.setattr(official.args, "gtInstancesFile", str(tree / "gtInstances.json"))
    cwd = set(os.listdir("."))
    ev = _evaluator(tree, dataset)
    first = _evaluate(ev, _perfect(tree, dataset, drop={26001}))["cityscapes/masks"]
    second = _evaluate(ev, _perfect(tree, dataset))["cityscapes/masks"]
    third = _evaluate(_evaluator(tree, dataset), _perfect(tree, dataset, drop={33000}))
    assert first["AP"] == pytest.approx(90) and second["AP"] == pytest.approx(100)
    # the only bicycle missed: ground truth without any prediction scores 0
    assert third["cityscapes/masks"]["per_class"]["bicycle"]["AP"] == 0
    assert third["cityscapes/masks"]["AP"] == pytest.approx(80)
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before
    assert set(os.listdir(".")) == cwd
    pkg = Path(official.__file__).parent
    assert not (pkg / "gtInstances.json").exists()


def test_processing_only_some_images_scores_those(tree, dataset):
    outs = _perfect(tree, dataset)
    bonn = _image_id(dataset, "bonn", "000000_000019")
    res = _evaluate(_evaluator(tree, dataset), {bonn: outs[bonn]})["cityscapes/masks"]
    assert res["per_class"]["truck"]["AP"] == pytest.approx(100)
    assert math.isnan(res["per_class"]["car"]["AP"])  # its images were not processed


def test_ddp_gather_merges_ranks(tree, dataset, monkeypatch):
    outs = _perfect(tree, dataset, drop={26001})
    ids = sorted(outs)
    ev0, ev1 = _evaluator(tree, dataset), _evaluator(tree, dataset)
    for image_id in ids[:2]:
        ev0.process([image_id], [outs[image_id]])
    for image_id in ids[1:]:  # the padded sampler repeats an image: counted once
        ev1.process([image_id], [outs[image_id]])
    monkeypatch.setattr(evaluator_module, "all_gather",
                        lambda obj: [ev0._records, ev1._records])
    res = ev0.evaluate()["cityscapes/masks"]
    assert res["AP"] == pytest.approx(90)
    monkeypatch.setattr(evaluator_module, "get_rank", lambda: 1)
    assert ev1.evaluate() == {}


def test_bad_input(tree, dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="ground-truth folder not found"):
        CityscapesEvaluator(dataset.coco, dataset.label_to_cat_id, tmp_path / "nowhere")
    gt_copy = tmp_path / "gt"
    for city, _ in SCENES:
        (gt_copy / city).mkdir(parents=True, exist_ok=True)
    with pytest.raises(FileNotFoundError, match=r"3 instanceIds file\(s\) missing .*"
                                                r"_gtFine_instanceIds\.png"):
        CityscapesEvaluator(dataset.coco, dataset.label_to_cat_id, gt_copy)
    data = json.loads((tree / "val.json").read_text())
    data["categories"][0]["name"] = "dog"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'dog' is not a Cityscapes instance class"):
        CityscapesEvaluator(tmp_path / "bad.json", dataset.label_to_cat_id,
                            tree / "gtFine" / "val")
    ev = _evaluator(tree, dataset)
    out = _perfect(tree, dataset)
    image_id = next(iter(out))
    small = dict(out[image_id], masks=out[image_id]["masks"][..., :32, :64])
    with pytest.raises(ValueError, match="paste masks in original image coordinates"):
        ev.process([image_id], [small])


class _ReplayModel(nn.Module):
    """Stands in for LevelSet R-CNN: replays fixed outputs, with a constant positive phi_0."""

    refines_initial_tsdf = True

    def __init__(self, outputs: list[dict]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, images, *, return_tsdf=False):
        outs = []
        for _ in images:
            out = dict(self.outputs[self.calls])
            self.calls += 1
            if return_tsdf:
                out["tsdf_init"] = torch.ones(len(out["boxes"]), 1, 28, 28)
            outs.append(out)
        return outs


def test_engine_evaluation_loop(tree, dataset):
    from levelset_rcnn.data import collate_fn
    from levelset_rcnn.engine.inference import evaluate_model

    outs = _perfect(tree, dataset)
    model = _ReplayModel([outs[i] for i in dataset.ids])
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate_fn)
    ev = _evaluator(tree, dataset, mask_keys=("masks", "masks_phi0"))
    res = evaluate_model(model, loader, ev, torch.device("cpu"), progress=False)
    assert res["cityscapes/masks"]["AP"] == pytest.approx(100)
    # phi_0 = 1 everywhere pastes a box-shaped mask: the rectangles are found at IoU 0.5
    assert res["cityscapes/masks_phi0"]["per_class"]["truck"]["AP50"] == pytest.approx(100)


@pytest.mark.parametrize("shape", [(37, 101), (5, 3), (64, 128)])
def test_mask_png_round_trip(tmp_path, shape):
    """The written 1-bit PNG, read as the official code reads it, is the mask (any width)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    mask = (np.random.default_rng(shape[0]).random(shape) > 0.5).astype(np.uint8)
    decoded = mask_utils.decode(mask_utils.encode(np.asfortranarray(mask)))
    cs_module._mask_image(decoded).save(tmp_path / "m.png")
    read = np.array(Image.open(tmp_path / "m.png").convert("L")) != 0
    assert np.array_equal(read, mask.astype(bool))
