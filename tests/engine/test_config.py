"""Recipes: YAML loading, packaged recipes by name, overrides, errors that name the field and
the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from levelset_rcnn.config import ConfigError, find_recipe, load_config, recipe_names

SHIPPED = ["cityscapes_r50", "cityscapes_r50_coco", "coco_r50", "dsb2018_cpu", "synthetic_cpu"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load_by_name_from_any_folder(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(name)
    assert cfg.solver.max_iter > 0
    assert load_config(f"{name}.yaml") == cfg
    assert load_config(Path(str(find_recipe(name)))) == cfg  # the packaged file by its path


def test_recipe_names_and_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert recipe_names() == SHIPPED
    with pytest.raises(ConfigError, match="unknown recipe 'synthetic_gpu'") as info:
        load_config("synthetic_gpu")
    assert all(name in str(info.value) for name in SHIPPED)
    with pytest.raises(ConfigError, match="does not exist.*synthetic_cpu"):
        load_config("configs/synthetic_cpu.yaml")  # a path: not looked up by name


def test_an_existing_file_wins_over_a_packaged_name(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthetic_cpu.yaml").write_text("solver:\n  max_iter: 7\n")
    assert load_config("synthetic_cpu.yaml").solver.max_iter == 7
    assert load_config("synthetic_cpu").solver.max_iter == 1000


def test_paper_recipes() -> None:
    coco = load_config("coco_r50")
    assert (coco.solver.max_iter, coco.solver.base_lr, coco.solver.steps) == (
        90000, 0.02, [60000, 80000])
    assert (coco.solver.ims_per_batch, coco.solver.weight_decay, coco.solver.gamma) == (
        8, 1e-4, 0.1)
    assert coco.model.loss_weights == [0.2, 1.0] and coco.model.backbone == "resnet50"
    city = load_config("cityscapes_r50")
    assert (city.solver.max_iter, city.solver.base_lr, city.solver.steps) == (24000, 0.01,
                                                                            [18000])
    assert city.solver.base_lr * city.solver.gamma == pytest.approx(0.001)
    assert (min(city.model.min_size), max(city.model.min_size)) == (800, 1024)
    assert city.model.loss_weights == [1.0, 5.0]


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
    cfg = load_config("coco_r50", ["solver.max_iter=7"])
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
    from levelset_rcnn.modeling import MASK_BRANCHES

    for head in MASK_BRANCHES:
        assert load_config(None, [f"model.mask_head_type={head}"]).model.mask_head_type == head


@pytest.mark.parametrize("name", SHIPPED)
def test_each_recipe_sets_its_loss_weights_and_paper_recipes_name_their_table(name: str) -> None:
    import yaml

    text = find_recipe(name).read_text()
    assert "loss_weights" in yaml.safe_load(text)["model"]  # not the builder's default
    if not name.endswith("_cpu"):
        header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
        assert "Table" in header, f"{name}: the header names no table of the paper"


def test_paper_recipes_follow_the_paper() -> None:
    fine = load_config("cityscapes_r50").model
    assert fine.weights is None and fine.weights_backbone == "IMAGENET1K_V1"  # fine-only
    assert fine.loss_weights == [1.0, 5.0]
    coco_ft = load_config("cityscapes_r50_coco")
    assert coco_ft.model.weights == "DEFAULT"  # torchvision's COCO Mask R-CNN
    assert (coco_ft.solver.max_iter, coco_ft.solver.steps) == (6000, [4000])
    coco = load_config("coco_r50").model
    assert coco.min_size == [800]  # "without multi-scaling"
    assert coco.weights_backbone == "IMAGENET1K_V1" and coco.loss_weights == [0.2, 1.0]
