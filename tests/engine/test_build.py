"""The model from a recipe: every ``model`` field is a builder keyword (same name, same
default), a misspelled key is refused by name, and the variants build."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from levelset_rcnn.config import ConfigError, ModelConfig, load_config
from levelset_rcnn.engine.build import build_model, model_kwargs
from levelset_rcnn.modeling import MASK_BRANCHES, detector_settings, mask_branch_settings
from levelset_rcnn.modeling.builders import levelset_rcnn

from ..modeling.common import TINY


def _builder_defaults() -> dict[str, object]:
    import inspect

    own = {k: p.default for k, p in inspect.signature(levelset_rcnn).parameters.items()
           if p.kind is p.KEYWORD_ONLY}
    return {**detector_settings(), **mask_branch_settings(), **own}


def test_every_model_field_is_a_builder_keyword_with_the_same_default() -> None:
    defaults = _builder_defaults()
    for f in dataclasses.fields(ModelConfig):
        if f.name == "arch":
            continue
        assert f.name in defaults, f"model.{f.name} is no builder keyword"
        ours = getattr(ModelConfig(), f.name)
        theirs = defaults[f.name]
        if f.name == "min_size":  # torchvision: one int, ours a list of sizes
            theirs = [theirs]
        if isinstance(theirs, tuple):
            theirs = list(theirs)
        assert ours == theirs, f"model.{f.name}: config {ours!r} != builder {theirs!r}"
    # and model_kwargs hands each one over under its own name
    kw = model_kwargs(ModelConfig(), num_classes=5)
    assert set(kw) == {f.name for f in dataclasses.fields(ModelConfig)} - {"arch"}
    assert kw["num_classes"] == 5


def test_every_mask_branch_setting_is_a_typed_model_field() -> None:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    missing = sorted(set(mask_branch_settings()) - fields)
    assert not missing, missing


def test_misspelled_model_key_is_refused_naming_it_and_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model:\n  truncaton: 3.0\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*unknown field 'model\.truncaton'"):
        load_config(recipe)
    with pytest.raises(ConfigError, match=r"unknown field 'model\.extra'"):
        load_config(None, ['model.extra={"truncaton": 3.0}'])
    cfg = load_config(None, ["model.truncation=3.0"])
    assert cfg.model.truncation == 3.0


def _tiny_cfg(*overrides: str) -> ModelConfig:
    items = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()
             if k not in ("weights_backbone", "min_size", "max_size")]
    items += ["model.min_size=[96]", "model.max_size=96", *overrides]
    return load_config(None, items).model


@pytest.mark.parametrize("variant", list(MASK_BRANCHES))
def test_each_variant_builds_from_the_config_with_its_settings(variant: str) -> None:
    cfg = _tiny_cfg(f"model.mask_head_type={variant}", "model.truncation=9.0",
                    "model.num_steps=2", "model.mask_resolution=112")
    torch.manual_seed(0)
    model = build_model(cfg)
    branch = model.roi_heads.mask_branch
    assert type(branch).build.__func__ is MASK_BRANCHES[variant].__func__
    if hasattr(branch, "truncation"):
        assert branch.truncation == 9.0
    if hasattr(branch, "num_steps"):
        assert branch.num_steps == 2
    if hasattr(branch, "mask_predictor"):  # the 112x112 predictor was asked for
        out = branch.mask_predictor(torch.zeros(1, TINY["mask_layers"][-1], 14, 14))
        assert out.shape[-1] == 112


def test_mask_rcnn_arch_is_binary_whatever_the_head_type() -> None:
    from levelset_rcnn.modeling import BinaryMaskBranch

    cfg = _tiny_cfg("model.arch=mask_rcnn", "model.mask_head_type=levelset")
    assert isinstance(build_model(cfg).roi_heads.mask_branch, BinaryMaskBranch)
