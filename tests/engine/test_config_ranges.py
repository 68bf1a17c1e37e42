"""Out-of-range recipe values are ConfigErrors naming the field (never a traceback later)."""

from __future__ import annotations

import dataclasses
import math
import re
import typing

import pytest

from levelset_rcnn.config import BACKBONES, Config, ConfigError, load_config


@pytest.mark.parametrize("override, field", [
    ("train.log_period=0", "train.log_period"),
    ("model.num_steps=-1", "model.num_steps"),
    ("model.min_size=[]", "model.min_size"),
    ("model.min_size=[800,0]", "model.min_size"),
    ("model.mask_layers=[]", "model.mask_layers"),
    ("solver.base_lr=-1", "solver.base_lr"),
    ("solver.base_lr=.nan", "solver.base_lr"),
    ("solver.base_lr=0", "solver.base_lr"),
    ("model.backbone=resnet999", "model.backbone"),
    ("data.hflip_prob=2", "data.hflip_prob"),
    ("data.hflip_prob=-0.1", "data.hflip_prob"),
    ("eval.max_images=0", "eval.max_images"),
    ("solver.momentum=1", "solver.momentum"),
    ("solver.warmup_factor=0", "solver.warmup_factor"),
    ("solver.clip_grad_norm=-1", "solver.clip_grad_norm"),
    ("model.box_score_thresh=1.5", "model.box_score_thresh"),
    ("model.rpn_bg_iou_thresh=0.9", "model.rpn_bg_iou_thresh"),
    ("model.deform_stages=[5]", "model.deform_stages"),
    ("model.trainable_backbone_layers=6", "model.trainable_backbone_layers"),
    ("model.hyper_init={mu: 3}", "model.hyper_init.mu"),
    ("model.hyper_init={lambda3: 1}", "model.hyper_init"),
    ("model.loss_weights=[.nan,1]", "model.loss_weights"),
    ("model.num_classes=1", "model.num_classes"),
    ("data.synthetic_image_size=16", "data.synthetic_image_size"),
    ("train.seed=-1", "train.seed"),
    ("train.eval_period=-5", "train.eval_period"),
    ("eval.mask_threshold=2", "eval.mask_threshold"),
])
def test_out_of_range_value_names_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field) + r"\b"):
        load_config(None, [override])


def test_backbone_list_is_the_builders() -> None:
    from levelset_rcnn.modeling.builders import BACKBONES as BUILT

    assert tuple(BACKBONES) == tuple(BUILT)
    for name in BACKBONES:
        assert load_config(None, [f"model.backbone={name}"]).model.backbone == name


def _numeric_fields() -> list[tuple[str, type]]:
    out = []
    for section, cls in typing.get_type_hints(Config).items():
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            if args[0] in (int, float):
                out.append((f"{section}.{f.name}", args[0]))
    return out


@pytest.mark.parametrize("key, kind", _numeric_fields())
def test_every_numeric_field_has_a_range(key: str, kind: type) -> None:
    """A new numeric field needs a rule in config._check_ranges: -1 (integers) and NaN
    (floats) are refused everywhere, naming the field."""
    bad = "-1" if kind is int else ".nan"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [f"{key}={bad}"])


def test_shipped_recipes_are_in_range() -> None:
    from levelset_rcnn.config import recipe_names

    for name in recipe_names():
        cfg = load_config(name)
        assert math.isfinite(cfg.solver.base_lr) and cfg.solver.base_lr > 0
