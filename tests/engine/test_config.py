"""Recipes: YAML loading, overrides, errors that name the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from levelset_rcnn.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["coco_r50", "cityscapes_r50", "synthetic_cpu", "dsb2018_cpu"])
def test_shipped_recipes_load(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.solver.max_iter > 0


def test_paper_recipes() -> None:
    coco = load_config(CONFIGS / "coco_r50.yaml")
    assert (coco.solver.max_iter, coco.solver.base_lr, coco.solver.steps) == (
        90000, 0.02, [60000, 80000])
    assert (coco.solver.ims_per_batch, coco.solver.weight_decay, coco.solver.gamma) == (
        8, 1e-4, 0.1)
    assert coco.model.loss_weights == [0.2, 1.0] and coco.model.backbone == "resnet50"
    city = load_config(CONFIGS / "cityscapes_r50.yaml")
    assert (city.solver.max_iter, city.solver.base_lr, city.solver.steps) == (24000, 0.01,
                                                                            [18000])
    assert city.solver.base_lr * city.solver.gamma == pytest.approx(0.001)
    assert (min(city.model.min_size), max(city.model.min_size)) == (800, 1024)
    assert city.model.loss_weights == [1.0, 5.0]


def test_demo_recipe_matches_synthetic_cpu_yaml() -> None:
    from levelset_rcnn.commands.demo import DEMO_RECIPE
    from levelset_rcnn.config import config_from_dict

    yaml_cfg = load_config(CONFIGS / "synthetic_cpu.yaml")
    demo = config_from_dict(DEMO_RECIPE)
    assert demo.model == yaml_cfg.model
    assert demo.solver == yaml_cfg.solver


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config(None, ["solver.base_lr=0.005", "model.loss_weights=[1, 5]",
                             "solver.clip_grad_norm=none", "model.min_size=512",
                             "train.eval_at_end=false"])
    assert cfg.solver.base_lr == 0.005 and cfg.model.loss_weights == [1.0, 5.0]
    assert cfg.solver.clip_grad_norm is None and cfg.model.min_size == [512]
    assert cfg.train.eval_at_end is False


def test_unknown_field_in_file_names_field_and_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("solver:\n  base_lr: 0.01\n  lerning_rate: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*solver\.lerning_rate"):
        load_config(p)


def test_wrong_type_names_field_and_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("solver:\n  max_iter: lots\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*solver\.max_iter.*integer"):
        load_config(p)
    p.write_text("model:\n  loss_weights: [1, x]\n")
    with pytest.raises(ConfigError, match=r"model\.loss_weights\[1\]"):
        load_config(p)


def test_bad_overrides_and_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="command line.*unknown field 'model.depth'"):
        load_config(None, ["model.depth=3"])
    with pytest.raises(ConfigError, match="unknown section 'optim'"):
        load_config(None, ["optim.lr=3"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["solver.base_lr"])
    with pytest.raises(ConfigError, match="true/false"):
        load_config(None, ["solver.amp=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "coco_r50.yaml", ["solver.max_iter=7"])
    cfg.dump(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("override, field", [
    ("model.mask_head_type=delsee", "model.mask_head_type"),
    ("eval.evaluator=cityscape", "eval.evaluator"),
    ("eval.evaluator=cityscapes", "eval.cityscapes_gt"),
    ("eval.evaluator=lvis", "eval.lvis_ann"),
    ("eval.tta_min_sizes=[800,0]", "eval.tta_min_sizes"),
])
def test_cross_field_checks_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_every_model_head_type_is_accepted_by_the_config() -> None:
    from levelset_rcnn.modeling import MASK_HEAD_TYPES

    for head in MASK_HEAD_TYPES:
        assert load_config(None, [f"model.mask_head_type={head}"]).model.mask_head_type == head
