"""predict pastes one detection at a time, into a crop around its box: never a (K, 1, H, W)
stack of full-image masks, and the same masks as the model's own pasting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import levelset_rcnn.engine.predict as predict_mod
import levelset_rcnn.modeling.transform as transform_mod
from levelset_rcnn.engine import build_model
from levelset_rcnn.engine.inference import predict_batch
from levelset_rcnn.engine.predict import run_predict

from .conftest import tiny_config

pytestmark = pytest.mark.timeout(300)


def _model(tmp_path: Path, root: Path, *extra: str) -> torch.nn.Module:
    cfg = tiny_config(root, tmp_path / "unused", "model.box_score_thresh=0",
                      "model.box_detections_per_img=12", *extra)
    torch.manual_seed(0)
    return build_model(cfg.model, num_classes=5).eval()


@pytest.mark.parametrize("extra", [(), ("model.arch=mask_rcnn",)], ids=["levelset", "binary"])
def test_per_detection_masks_equal_the_models_own(extra, tiny_data_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path, tiny_data_root, *extra)
    rng = np.random.default_rng(0)
    pixels = (rng.random((150, 200, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    image = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)
    (want,) = predict_batch(model, [image], torch.device("cpu"))
    assert len(want["labels"]) > 1

    shapes: list[tuple[int, ...]] = []
    real = transform_mod.paste_masks

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(transform_mod, "paste_masks", recording)
    monkeypatch.setattr(predict_mod, "paste_masks", recording)
    run_predict(model, [tmp_path / "img.png"], tmp_path / "out", device=torch.device("cpu"),
                score_thresh=0.0, progress=False)
    # one detection per paste, each no larger than the image: never K full-image masks
    assert len(shapes) == len(want["labels"])
    assert all(s[0] == 1 and s[-2] <= 150 and s[-1] <= 200 for s in shapes), shapes
    assert sum(s[-2] * s[-1] for s in shapes) < len(shapes) * 150 * 200

    got = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(got) == len(want["labels"])
    for k, rec in enumerate(got):
        mine = mask_utils.decode(rec["segmentation"]).astype(bool)
        theirs = want["masks"][k, 0].numpy() > 0.5
        if not extra:  # exact pasting: the same pixels
            assert np.array_equal(mine, theirs), k
        else:  # torchvision's rounding of shifted boxes may move an edge pixel
            assert np.logical_xor(mine, theirs).sum() <= max(2, 0.01 * theirs.sum()), k
        assert rec["score"] == pytest.approx(float(want["scores"][k]))
