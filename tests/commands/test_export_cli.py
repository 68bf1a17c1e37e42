"""``levelset-rcnn export`` on a tiny trained-model file: ONNX and TorchScript files that give
the eager model's outputs, the default size, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from levelset_rcnn.cli import main
from levelset_rcnn.config import load_config
from levelset_rcnn.engine import load_trained_model
from levelset_rcnn.engine.build import build_model

from ..engine.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``model_final.pth`` as ``train`` writes it (state dict, recipe, meta)."""
    cfg = load_config(None, TINY_OVERRIDES + ["model.box_score_thresh=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=4)
    path = tmp_path_factory.mktemp("run") / "model_final.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0,
                "meta": {"class_names": ["__background__", "a", "b", "c"]}}, path)
    return path


def _image(h: int, w: int) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--weights", "--format", "--output", "--height", "--width", "--tsdf",
                 "--overwrite", "--set"):
        assert flag in text


def test_export_onnx_and_torchscript(weights: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, _, _ = load_trained_model(weights)
    x = _image(48, 80)
    with torch.no_grad():
        ref = model([x[0]], return_tsdf=True)[0]
    assert len(ref["boxes"]) > 0

    onnx_file = tmp_path / "out" / "model.onnx"
    assert main(["export", "--weights", str(weights), "--output", str(onnx_file),
                 "--height", "48", "--width", "80", "--tsdf"]) == 0
    assert "images (1, 3, 48, 80)" in capsys.readouterr().out
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"images": x.numpy()}), strict=True))
    assert list(got) == ["boxes", "labels", "scores", "masks", "tsdf", "tsdf_init"]
    for k, tol in (("boxes", 1e-4), ("scores", 1e-4), ("masks", 1e-3), ("tsdf", 1e-3)):
        assert got[k].shape == ref[k].shape
        assert float((torch.from_numpy(got[k]) - ref[k]).abs().max()) <= tol, k

    # An existing file is kept unless --overwrite.
    before = onnx_file.stat().st_mtime_ns
    assert main(["export", "--weights", str(weights), "--output", str(onnx_file)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert onnx_file.stat().st_mtime_ns == before

    ts_file = tmp_path / "model.pt"
    assert main(["export", "--weights", str(weights), "--format", "torchscript",
                 "--output", str(ts_file)]) == 0  # default size: min_size x min_size
    assert "images (1, 3, 64, 64)" in capsys.readouterr().out
    module = torch.jit.load(str(ts_file))
    x = _image(64, 64)
    fresh, _, _ = load_trained_model(weights)  # torchvision's poolers keep the first size's
    with torch.no_grad():                      # FPN scales: `model` ran at 48 x 80
        out, ref = module(x), fresh([x[0]])[0]
    assert list(out) == ["boxes", "labels", "scores", "masks"]
    assert float((out["masks"] - ref["masks"]).abs().max()) <= 1e-3


def test_refusals(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--weights", str(tmp_path / "nope.pth"),
                 "--output", str(tmp_path / "m.onnx")]) == 1
    assert "nope.pth" in capsys.readouterr().err
    assert main(["export", "--weights", str(weights), "--output", str(tmp_path / "m.onnx"),
                 "--height", "0"]) == 1
    assert "positive" in capsys.readouterr().err
    cfg = load_config(None, TINY_OVERRIDES + ["model.arch=mask_rcnn"])
    binary = tmp_path / "binary.pth"
    torch.save({"model": build_model(cfg.model, num_classes=4).state_dict(),
                "config": cfg.to_dict()}, binary)
    assert main(["export", "--weights", str(binary), "--format", "torchscript",
                 "--output", str(tmp_path / "m.pt"), "--tsdf"]) == 1
    assert "--tsdf needs a level-set model" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.onnx").exists()
