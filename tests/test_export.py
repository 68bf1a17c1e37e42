"""ONNX and TorchScript export: the exported graphs give eager mode's outputs on the CPU for
any number of detections (more, fewer or none than at trace time, and a trace made on an
image without detections) and any split of the RoIs over the FPN levels, at a non-square
fixed size; the model is left as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

from levelset_rcnn.export import (
    INPUT_NAME,
    export_onnx,
    export_torchscript,
    output_names,
    trace_model,
)
from levelset_rcnn.modeling import levelset_rcnn, mask_rcnn

from .modeling.common import synthetic_sample, tiny_kwargs

pytestmark = pytest.mark.timeout(300)

H, W = 96, 128  # resized to 72 x 96 inside the graph (min_size = max_size = 96)
TOL = {"boxes": 1e-4, "scores": 1e-4, "masks": 1e-3, "tsdf": 1e-3, "tsdf_init": 1e-3}


def _images() -> dict[str, Tensor]:
    out = {f"shapes{s}": synthetic_sample(3, size=(H, W), seed=s)[0] for s in (1, 2, 5)}
    out["empty"] = torch.full((3, H, W), 0.5)  # flat grey: no detection above the threshold
    return out


def _setup(model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Tensor], dict]:
    """The model with a score threshold just above its best score on the flat image (so
    that one has no detection and the shapes images have some), and eager references."""
    torch.manual_seed(0)
    images = _images()
    model.eval()
    for pool in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        pool.canonical_scale = 32  # the tiny model's boxes then fall into several FPN levels
    with torch.no_grad():
        best = float(model([images["empty"]])[0]["scores"].max())
    model.roi_heads.score_thresh = best + 1e-3
    kw = {"return_tsdf": True} if model.mask_branch.predicts_level_sets else {}
    with torch.no_grad():
        refs = {k: model([img], **kw)[0] for k, img in images.items()}
    counts = {k: len(r["boxes"]) for k, r in refs.items()}
    levels = model.roi_heads.mask_roi_pool.map_levels([r["boxes"] for r in refs.values()])
    assert len(levels.unique()) >= 3  # and their RoI counts differ from image to image
    assert counts["empty"] == 0
    assert len({counts[k] for k in counts if k != "empty"} - {0}) >= 2, counts
    return model, images, refs


@pytest.fixture(scope="module")
def levelset_case() -> tuple[torch.nn.Module, dict[str, Tensor], dict]:
    torch.manual_seed(0)
    return _setup(levelset_rcnn(**tiny_kwargs()))


@pytest.fixture(scope="module")
def binary_case() -> tuple[torch.nn.Module, dict[str, Tensor], dict]:
    torch.manual_seed(0)
    return _setup(mask_rcnn(**tiny_kwargs()))


def _compare(got: dict[str, Tensor], ref: dict[str, Tensor], names: tuple[str, ...]) -> dict:
    """Max abs difference per output (shapes and labels must match exactly)."""
    diffs = {}
    for k in names:
        g = torch.as_tensor(got[k])
        assert g.shape == ref[k].shape, (k, g.shape, ref[k].shape)
        if k == "labels":
            assert torch.equal(g, ref[k])
            continue
        diffs[k] = float((g - ref[k]).abs().max()) if g.numel() else 0.0
        assert diffs[k] <= TOL[k], (k, diffs[k])
    return diffs


def _run_onnx(path: Path, images: dict[str, Tensor], names: tuple[str, ...]) -> dict:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert session.get_inputs()[0].shape == [1, 3, H, W]
    assert tuple(o.name for o in session.get_outputs()) == names
    return {k: dict(zip(names, session.run(None, {INPUT_NAME: img[None].numpy()}),
                        strict=True))
            for k, img in images.items()}


# Without the level-set outputs, torchvision's FPN level merge had the trace-time RoI counts
# frozen in the ONNX graph (onnxruntime: "invalid expand shape"); see levelset_rcnn.export.
@pytest.mark.parametrize(("trace_on", "return_tsdf"), [("shapes1", False), ("empty", True)])
def test_onnx_matches_eager_for_any_number_of_detections(levelset_case, trace_on, return_tsdf,
                                                         tmp_path):
    pytest.importorskip("onnx")
    model, images, refs = levelset_case
    path = export_onnx(model, tmp_path / "m.onnx", height=H, width=W, return_tsdf=return_tsdf,
                       example=images[trace_on])
    names = output_names(return_tsdf)
    got = _run_onnx(path, images, names)
    for k in images:
        _compare(got[k], refs[k], names)
    assert got["empty"]["masks"].shape == (0, 1, H, W)
    assert not model.training and "mask_maps" not in vars(model.roi_heads)


def test_onnx_binary_baseline(binary_case, tmp_path):
    pytest.importorskip("onnx")
    model, images, refs = binary_case
    path = export_onnx(model, tmp_path / "m.onnx", height=H, width=W)
    got = _run_onnx(path, images, output_names())
    for k in images:
        _compare(got[k], refs[k], output_names())


def test_torchscript_matches_eager_and_checks_the_size(levelset_case, tmp_path):
    model, images, refs = levelset_case
    # traced on an image without detections: still right for any number of them
    path = export_torchscript(model, tmp_path / "m.pt", height=H, width=W, return_tsdf=True,
                              example=images["empty"])
    module = torch.jit.load(str(path))
    names = output_names(True)
    with torch.no_grad():
        for k, img in images.items():
            out = module(img[None])
            assert tuple(out) == names
            _compare(out, refs[k], names)
        with pytest.raises(Exception, match=r"exported size"):
            module(torch.rand(1, 3, H, W + 32))


def test_torchscript_binary_and_model_restored(binary_case):
    model, images, refs = binary_case
    model = copy.deepcopy(model)
    pools = [m for m in model.modules() if isinstance(m, MultiScaleRoIAlign)]
    for pool in pools:  # torchvision keeps the FPN scales of a pooler's first call
        pool.scales = pool.map_levels = None
    with torch.no_grad():
        model([torch.rand(3, 44, W)])  # 33 x 96 padded to 64 x 96: scales inferred x2
    cached = [pool.scales for pool in pools]
    assert cached[0][0] == 0.5  # 1/4 at H x W
    model.train()
    module = trace_model(model, height=H, width=W)  # infers them at H x W, as a fresh model
    assert model.training and [pool.scales for pool in pools] == cached
    with torch.no_grad():
        for k, img in images.items():
            _compare(module(img[None]), refs[k], output_names())


def test_bad_sizes_are_refused(binary_case):
    model = binary_case[0]
    with pytest.raises(ValueError, match="positive"):
        trace_model(model, height=0, width=W)
    with pytest.raises(ValueError, match=r"example must be \(1, 3, 96, 128\)"):
        trace_model(model, height=H, width=W, example=torch.rand(3, H, H))
