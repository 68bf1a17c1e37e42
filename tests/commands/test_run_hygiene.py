"""Runs never mix and outputs are never lost: --overwrite gives a clean run folder, --resume
refuses another recipe, a model is never scored on other classes, predict keeps every
overlay and fails when nothing could be read, overrides may follow options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from levelset_rcnn.cli import main
from levelset_rcnn.data.synthetic import SYNTHETIC_CATEGORIES

from ..engine.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(400)

NAMES = [c["name"] for c in SYNTHETIC_CATEGORIES]


def _train(out: Path, root: Path, *extra: str) -> int:
    return main(["train", "--output", str(out), "--no-progress", *TINY_OVERRIDES,
                 f"data.root={root}", *extra])


@pytest.fixture(scope="module")
def trained(tiny_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hygiene") / "run"
    assert _train(out, tiny_data_root, "solver.max_iter=2") == 0
    return out


def _records(path: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_overwrite_gives_a_clean_run_folder(trained: Path, tiny_data_root: Path,
                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "eval_results.json").write_text("{}")
    assert _records(out / "metrics.jsonl") == [1, 2]
    # a new run that dies before its first checkpoint: nothing of the old run survives
    bad = tmp_path / "missing.json"
    assert _train(out, tiny_data_root, "--overwrite", "data.synthetic=false",
                  f"data.train_ann={bad}", f"data.train_images={tmp_path}") == 1
    assert "missing.json" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert _train(out, tiny_data_root, "--resume") == 1  # no old run to continue silently
    assert "checkpoint_last.pth" in capsys.readouterr().err
    # and a complete new run: one run's records and one event file
    assert _train(out, tiny_data_root, "--overwrite", "solver.max_iter=3") == 0
    assert _records(out / "metrics.jsonl") == [1, 2, 3]
    assert len(list((out / "tb").iterdir())) == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_refuses_another_recipe(trained: Path, tiny_data_root: Path, tmp_path: Path,
                                       capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    capsys.readouterr()
    assert _train(out, tiny_data_root, "--resume", "solver.base_lr=0.02") == 1
    err = capsys.readouterr().err
    assert "solver.base_lr: 0.01 -> 0.02" in err and "--allow-recipe-change" in err
    assert _records(out / "metrics.jsonl") == [1, 2]  # untouched
    # fields that do not change what is trained are free: train further
    assert _train(out, tiny_data_root, "--resume", "solver.max_iter=3", "train.log_period=1",
                  "--no-tensorboard") == 0
    assert _records(out / "metrics.jsonl") == [1, 2, 3]
    assert _train(out, tiny_data_root, "--resume", "solver.base_lr=0.02", "solver.max_iter=4",
                  "--allow-recipe-change", "--no-tensorboard") == 0
    assert "resuming under a changed recipe" in capsys.readouterr().err
    assert _records(out / "metrics.jsonl") == [1, 2, 3, 4]


def test_overrides_may_follow_options(tmp_path: Path, capsys) -> None:
    # the late override is applied (a ConfigError naming it), not refused by argparse
    assert main(["train", "model.backbone=resnet18", "--output", str(tmp_path / "o"),
                 "solver.base_lr=-1"]) == 1
    assert "solver.base_lr must be a finite number > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "a.b=1", "--outptu", "x"])
    assert exc.value.code == 2 and "--outptu" in capsys.readouterr().err


def _one_class_json(tmp_path: Path, root: Path, name: str, n_cats: int = 1) -> Path:
    data = json.loads((root / "val.json").read_text())
    cats = [{"id": 1, "name": name}] + [{"id": 100 + i, "name": f"c{i}"}
                                        for i in range(n_cats - 1)]
    data["categories"] = cats
    for a in data["annotations"]:
        a["category_id"] = 1
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_eval_refuses_other_classes_before_any_work(trained: Path, tiny_data_root: Path,
                                                    tmp_path: Path, capsys) -> None:
    weights = str(trained / "model_final.pth")
    for n_cats in (1, 80):
        ann = _one_class_json(tmp_path, tiny_data_root, "thing", n_cats)
        out = tmp_path / f"ev{n_cats}"
        assert main(["eval", "--weights", weights, "--images", str(tiny_data_root / "val"),
                     "--ann", str(ann), "--output", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"has 4 classes [1: {NAMES[0]} (id 1)" in err and "thing" in err, err
        assert str(ann) in err and "--class-map" in err
        assert not (out / "eval_results.json").exists()
    # an explicit map: the first class is scored as 'thing', the others dropped
    ann = _one_class_json(tmp_path, tiny_data_root, "thing")
    mapping = [f"{NAMES[0]}=thing"] + [f"{n}=-" for n in NAMES[1:]]
    assert main(["eval", "--weights", weights, "--images", str(tiny_data_root / "val"),
                 "--ann", str(ann), "--output", str(tmp_path / "mapped"), "--no-progress",
                 "--max-images", "1", "--class-map", *mapping]) == 0
    assert "bbox" in json.loads((tmp_path / "mapped" / "eval_results.json").read_text())
    # the same map as a JSON file; a name the checkpoint does not have is refused
    (tmp_path / "map.json").write_text(json.dumps({"nonesuch": "thing"}))
    assert main(["eval", "--weights", weights, "--images", str(tiny_data_root / "val"),
                 "--ann", str(ann), "--output", str(tmp_path / "m2"), "--no-progress",
                 "--class-map", str(tmp_path / "map.json")]) == 1
    assert "--class-map names ['nonesuch']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--weights", weights, "--max-images", "0"])
    assert exc.value.code == 2


def test_train_refuses_a_validation_set_of_other_classes(tiny_data_root: Path, tmp_path: Path,
                                                         capsys) -> None:
    ann = _one_class_json(tmp_path, tiny_data_root, "thing")
    assert _train(tmp_path / "run", tiny_data_root, "data.synthetic=false",
                  f"data.train_ann={tiny_data_root / 'train.json'}",
                  f"data.train_images={tiny_data_root / 'train'}", f"data.val_ann={ann}",
                  f"data.val_images={tiny_data_root / 'val'}", "train.eval_at_end=true") == 1
    err = capsys.readouterr().err
    assert "the training set" in err and "the validation set" in err and str(ann) in err
    assert not (tmp_path / "run" / "checkpoint_last.pth").exists()


def test_predict_keeps_every_overlay_and_fails_on_nothing(trained: Path, tiny_data_root: Path,
                                                          tmp_path: Path, capsys) -> None:
    from PIL import Image

    src = sorted((tiny_data_root / "val").glob("*.png"))[0]
    a, b = tmp_path / "x", tmp_path / "y"
    a.mkdir()
    b.mkdir()
    shutil.copy(src, a / "img.png")
    Image.open(src).convert("RGB").save(a / "img.jpg", quality=95)
    shutil.copy(src, b / "img.png")
    out = tmp_path / "pred"
    weights = str(trained / "model_final.pth")
    # inputs intermixed with options
    assert main(["predict", str(a), "--weights", weights, "--output", str(out),
                 "--no-progress", "--score-thresh", "0", str(b / "img.png")]) == 0
    overlays = json.loads((out / "overlays.json").read_text())
    assert len(overlays) == 3 and len(set(overlays.values())) == 3
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert len(json.loads((out / "image_ids.json").read_text())) == 3
    # nothing readable: an error line and exit code 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "bad"), "--weights", weights, "--output",
                 str(tmp_path / "p2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: none of the 1 input image(s) could be read") and \
        "broken.png" in err
    assert not (tmp_path / "p2" / "results.json").exists()
    assert torch.load(weights, weights_only=True)["iteration"] == 2
