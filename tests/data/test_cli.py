import json

import numpy as np
from PIL import Image

from levelset_rcnn.cli import main


def _fake_dsb(root):
    d = root / "img1"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "images" / "img1.png")
    m = np.zeros((8, 8), np.uint8)
    m[1:4, 1:3] = 255
    Image.fromarray(m).save(d / "masks" / "a.png")
    return root


def test_convert_dsb2018_cli(tmp_path, capsys):
    src, out = _fake_dsb(tmp_path / "src"), tmp_path / "out.json"
    assert main(["convert", "dsb2018", str(src), str(out), "--quiet"]) == 0
    assert "1 images, 1 instances" in capsys.readouterr().out
    assert json.loads(out.read_text())["annotations"][0]["area"] == 6
    assert main(["convert", "dsb2018", str(src), str(out), "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "dsb2018", str(src), str(out), "--quiet", "--overwrite"]) == 0


def test_convert_yolo_seg_cli_reports_bad_line(tmp_path, capsys):
    (tmp_path / "im").mkdir()
    (tmp_path / "lb").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "im" / "7.jpg")
    (tmp_path / "lb" / "7.txt").write_text("3 0.1 0.1 0.9 0.1 0.5\n")
    argv = ["convert", "yolo-seg", str(tmp_path / "im"), str(tmp_path / "lb"),
            str(tmp_path / "o.json"), "--quiet"]
    assert main(argv) == 1
    assert "7.txt:1: odd number of coordinates" in capsys.readouterr().err
    (tmp_path / "lb" / "7.txt").write_text("3 0.1 0.1 0.9 0.1 0.5 0.9\n")
    assert main(argv) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["images"][0]["id"] == 7 and data["annotations"][0]["category_id"] == 4


def test_convert_synthetic_cli(tmp_path, capsys):
    assert main(["convert", "synthetic", str(tmp_path), "--num-images", "2",
                 "--image-size", "96"]) == 0
    data = json.loads((tmp_path / "train.json").read_text())
    assert len(data["images"]) == 2 and data["images"][0]["height"] == 96
