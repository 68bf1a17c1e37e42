"""hubconf.py: torch.hub.load(repo, name, source="local") builds each model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from levelset_rcnn.modeling import LevelSetRCNN

from .modeling.common import tiny_kwargs

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"levelset_rcnn", "levelset_rcnn_mobilenet_v3_large_fpn",
                "levelset_rcnn_resnet18_fpn", "levelset_rcnn_resnet50_fpn", "mask_rcnn"}


def test_entry_points_and_dependencies() -> None:
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    # torch.hub.list's rule: the callables whose names do not start with "_"
    assert {f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")} \
        == ENTRY_POINTS
    assert hub.dependencies == ["torch", "torchvision"]


@pytest.mark.parametrize("name", ["levelset_rcnn_resnet50_fpn", "levelset_rcnn_resnet18_fpn",
                                  "levelset_rcnn_mobilenet_v3_large_fpn"])
def test_load_named_variants_without_downloads(name: str) -> None:
    model = torch.hub.load(str(ROOT), name, source="local", weights_backbone=None,
                           num_classes=3)
    assert isinstance(model, LevelSetRCNN)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.mask_branch.predicts_level_sets


@pytest.mark.parametrize("name", ["levelset_rcnn", "mask_rcnn"])
def test_load_tiny_and_run(name: str) -> None:
    torch.manual_seed(0)
    model = torch.hub.load(str(ROOT), name, source="local", **tiny_kwargs()).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[1:] == (1, 64, 80)
    assert model.mask_branch.predicts_level_sets == (name == "levelset_rcnn")
