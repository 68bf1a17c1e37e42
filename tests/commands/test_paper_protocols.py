"""The paper's evaluation protocols through the command line: Cityscapes (convert -> train ->
official evaluation, TTA eval) and LVIS AP* (convert -> train on the COCO categories -> eval
against the LVIS file), on tiny fabricated datasets in the official formats, plus the
configuration errors a user meets first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from levelset_rcnn.cli import main

from ..cityscapes_fixture import make_cityscapes_tree
from ..data.test_convert_lvis import full_lvis
from ..engine.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(400)

CITYSCAPES_CLASSES = {"person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle"}


def _tiny(ann: Path, images: Path, *extra: str) -> list[str]:
    over = [o for o in TINY_OVERRIDES if not o.startswith(("data.synthetic", "solver.max_iter"))]
    return over + ["data.synthetic=false", f"data.train_images={images}",
                   f"data.train_ann={ann}", f"data.val_images={images}", f"data.val_ann={ann}",
                   "solver.max_iter=2", "train.eval_at_end=true", *extra]


def test_cityscapes_convert_train_official_eval(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = make_cityscapes_tree(tmp_path / "cityscapes")
    ann = tmp_path / "ann" / "val.json"
    assert main(["convert", "cityscapes", str(root), str(ann), "--split", "val",
                 "--quiet"]) == 0
    images, gt = root / "leftImg8bit" / "val", root / "gtFine" / "val"

    # A recipe asking for the Cityscapes metric without its ground truth is refused, by name.
    bad = tmp_path / "bad"
    assert main(["train", "--output", str(bad), "--no-progress",
                 *_tiny(ann, images, "eval.evaluator=cityscapes")]) == 1
    assert "eval.cityscapes_gt" in capsys.readouterr().err

    out = tmp_path / "run"
    assert main(["train", "--output", str(out), "--no-progress",
                 *_tiny(ann, images, "eval.evaluator=cityscapes",
                        f"eval.cityscapes_gt={gt}")]) == 0
    res = json.loads((out / "eval_results.json").read_text())
    for key in ("cityscapes/masks", "cityscapes/masks_phi0"):
        assert {"AP", "AP50", "per_class"} <= set(res[key])
        assert set(res[key]["per_class"]) == CITYSCAPES_CLASSES
        assert 0.0 <= res[key]["AP"] <= 100.0

    # eval with flip + two-scale TTA through the same official code; per-class table printed.
    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", "--weights", str(out / "model_final.pth"), "--output", str(ev),
                 "--no-progress", "--tta-sizes", "56", "64"]) == 0
    text = capsys.readouterr().out
    assert "truck" in text and "AP50" in text
    res = json.loads((ev / "eval_results.json").read_text())
    assert set(res["cityscapes/masks"]["per_class"]) == CITYSCAPES_CLASSES
    # The official submission format is kept next to the results: one list per image.
    lists = sorted(p.name for p in (ev / "cityscapes").rglob("*_pred.txt"))
    assert len(lists) >= 3, lists


def test_lvis_convert_train_ap_star(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lvis_file = tmp_path / "lvis_val.json"
    lvis_file.write_text(json.dumps(full_lvis()))
    ann = tmp_path / "lvis_coco.json"
    assert main(["convert", "lvis", str(lvis_file), str(ann), "--quiet"]) == 0
    coco_root = tmp_path / "coco"
    for img in json.loads(ann.read_text())["images"]:
        path = coco_root / img["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(path)

    out = tmp_path / "run"
    assert main(["train", "--output", str(out), "--no-progress",
                 *_tiny(ann, coco_root, "eval.evaluator=lvis",
                        f"eval.lvis_ann={lvis_file}")]) == 0
    res = json.loads((out / "eval_results.json").read_text())
    for key in ("lvis_segm/masks", "lvis_segm/masks_phi0", "lvis_bbox"):
        assert {"AP", "AP50", "APr", "APc", "APf"} <= set(res[key]), key

    # An LVIS file that lacks the model's categories: one clear line, exit code 1.
    data = full_lvis()
    data["categories"] = [c for c in data["categories"] if c["synset"] != "person.n.01"]
    data["annotations"] = [a for a in data["annotations"]
                           if a["category_id"] in {c["id"] for c in data["categories"]}]
    for img in data["images"]:
        for k in ("neg_category_ids", "not_exhaustive_category_ids"):
            img[k] = [c for c in img[k] if c in {c["id"] for c in data["categories"]}]
    broken = tmp_path / "lvis_no_person.json"
    broken.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "model_final.pth"), "--output",
                 str(tmp_path / "ev"), "--no-progress", f"eval.lvis_ann={broken}"]) == 1
    err = capsys.readouterr().err
    assert "person" in err and str(broken) in err
