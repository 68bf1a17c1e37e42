"""The command line end to end on a tiny synthetic dataset: train -> eval -> predict, and
the refusals (non-empty output, missing weights, bad recipe, unreadable image)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from levelset_rcnn.cli import build_parser, main

from ..engine.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo"])
def test_help_is_complete(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in {"train": ["--config", "--resume", "--overwrite", "KEY=VALUE"],
                 "eval": ["--weights", "--ann", "--output", "--overwrite", "--tta",
                          "--tta-sizes", "eval.evaluator"],
                 "predict": ["--weights", "--polygons", "--score-thresh", "--overwrite",
                             "--tta"],
                 "demo": ["--output", "--quick", "--max-iter", "--overwrite"]}[command]:
        assert flag in text
    assert command in build_parser().format_help()


def test_train_eval_predict(tiny_data_root: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--output", str(out), "--no-progress", *TINY_OVERRIDES,
            f"data.root={tiny_data_root}", "train.eval_at_end=true", "solver.max_iter=3"]
    assert main(args) == 0
    for name in ("model_final.pth", "checkpoint_last.pth", "config.yaml", "metrics.jsonl",
                 "eval_results.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir())  # TensorBoard event file
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 3 and final["meta"]["class_names"][0] == "__background__"

    # A second run into the same folder is refused; nothing there is touched.
    before = (out / "model_final.pth").stat().st_mtime_ns
    assert main(args) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "model_final.pth").stat().st_mtime_ns == before

    assert main(["eval", "--weights", str(out / "model_final.pth"), "--output",
                 str(tmp_path / "ev"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "ev" / "eval_results.json").read_text())
    assert {"bbox", "segm/masks", "segm/masks_phi0"} <= set(res)
    assert {"AP", "AP50", "AF1", "AF2"} <= set(res["segm/masks_phi0"])

    images = tmp_path / "images"
    images.mkdir()
    val = tiny_data_root / "val"
    for p in sorted(val.glob("*.png")):
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    pred = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict", str(images), "--weights", str(out / "model_final.pth"),
                 "--output", str(pred), "--polygons", "--score-thresh", "0",
                 "--no-progress"]) == 0
    text = capsys.readouterr()
    assert "broken.png" in text.out + text.err
    n = len(list(val.glob("*.png")))
    assert len(list((pred / "overlays").glob("*.png"))) == n
    results = json.loads((pred / "results.json").read_text())
    assert all({"image_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    polys = json.loads((pred / "polygons.json").read_text())
    assert len(polys) == n and "broken.png" not in "".join(polys)


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--weights", str(tmp_path / "nope.pth")]) == 1
    assert "nope.pth" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--weights", str(tmp_path / "nope.pth")]) == 1
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver:\n  max_iter: many\n")
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "solver.max_iter" in err
    assert main(["train", "model.no_such_field=1", "--output", str(tmp_path / "o")]) == 1
    assert "model.no_such_field" in capsys.readouterr().err
    assert main(["train", "--resume", "--output", str(tmp_path / "fresh")]) == 1
    assert "checkpoint_last.pth" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "fresh").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert main(["demo", "--output", str(tmp_path / "other")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_demo_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--max-iter", "3", "--train-images", "4",
            "--val-images", "2", "--no-progress"]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    assert "| LevelSet R-CNN, phi_0 (initial) |" in report
    assert "| LevelSet R-CNN, phi_N (final) |" in report
    assert "| Mask R-CNN 28x28, same frozen detector |" in report
    for name in ("losses.png", "demo_results.json", "train/model_final.pth",
                 "maskrcnn/model_final.pth"):
        assert (out / name).is_file(), name
    assert len(list((out / "predictions" / "overlays").glob("*.png"))) == 2
    summary = json.loads((out / "demo_results.json").read_text())
    assert {"masks", "masks_phi0", "maskrcnn"} == set(summary["table"])
    assert "boundary_AP" in summary["table"]["masks"]
    # the baseline's mask head sits on the same frozen detector: the same box AP
    assert summary["baseline_bbox_AP"] == summary["bbox"].get("AP")
    assert main(args) == 0  # a previous demo output is replaced without --overwrite
