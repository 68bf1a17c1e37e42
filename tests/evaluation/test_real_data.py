"""Ground truth fed back as predictions scores 100 on real photographs (coco128-seg)."""

import numpy as np
import pytest
import torch

from levelset_rcnn.data import CocoInstanceDataset
from levelset_rcnn.data.converters import convert_yolo_seg
from levelset_rcnn.evaluation import COCOEvaluator

from ..data.shared_data import shared_data_root


@pytest.fixture(scope="module")
def coco128(tmp_path_factory):
    root = shared_data_root() / "coco128_seg"
    images, labels = root / "images" / "train2017", root / "labels" / "train2017"
    if not (images.is_dir() and labels.is_dir()):
        pytest.skip(f"coco128_seg data not found under {root} (set LEVELSET_RCNN_SHARED_DATA)")
    out = tmp_path_factory.mktemp("c128") / "c.json"
    convert_yolo_seg(images, labels, out, progress=False)
    return CocoInstanceDataset(images, out, train=False)


def test_ground_truth_as_predictions_scores_100(coco128):
    ds = coco128
    ev = COCOEvaluator(ds.coco, label_to_cat_id=ds.label_to_cat_id, mask_keys=("masks", "m2"))
    rng = np.random.default_rng(0)
    for index in range(0, len(ds), 4):  # every 4th image: 32 photographs, ~230 objects
        target = ds.load_target(index)
        n = len(target["labels"])
        masks = target["masks"][:, None].float()
        out = {"boxes": target["boxes"], "labels": target["labels"],
               "scores": torch.from_numpy(rng.uniform(0.5, 1.0, n)).float(),
               "masks": masks, "m2": masks.flip(-1) if n else masks}
        ev.process([target], [out])
    res = ev.evaluate()
    for name in ("bbox", "segm/masks"):
        for key in ("AP", "AP50", "AP75"):
            assert res[name][key] == pytest.approx(100), (name, key)
    assert res["segm/masks"]["AF1"] == pytest.approx(100)
    assert res["segm/masks"]["AF2"] == pytest.approx(100)
    assert res["segm/m2"]["AP"] < 50  # mirrored masks: a second set, scored separately

