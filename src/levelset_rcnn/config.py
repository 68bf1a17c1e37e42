"""Training / evaluation configuration: dataclasses loaded from YAML, with dotted overrides.

A recipe is a YAML file with up to five sections (``model``, ``data``, ``solver``, ``train``,
``eval``); a field left out keeps its default. The package ships its recipes
(``levelset_rcnn/configs/*.yaml``, :func:`recipe_names`): :func:`load_config` takes a file
path or the name of a packaged recipe, from any working directory. Command-line overrides
are ``key=value`` strings with a dotted key (``solver.base_lr=0.01``,
``model.loss_weights=[1, 5]``); the value is parsed as YAML. An unknown section or field, or
a value of the wrong type, raises :class:`ConfigError` naming the field and where it came
from (the file or the command line).

Example::

    cfg = load_config("synthetic_cpu", ["solver.max_iter=50"])
    cfg.solver.base_lr, cfg.to_dict()
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "SolverConfig",
           "TrainConfig", "load_config", "apply_overrides", "config_from_dict", "find_recipe",
           "recipe_names", "FREEZABLE_PARTS"]


class ConfigError(ValueError):
    """A configuration problem; the message names the field and its source."""


@dataclass
class ModelConfig:
    """What :func:`levelset_rcnn.modeling.levelset_rcnn` / ``mask_rcnn`` is called with: every
    field but ``arch`` is one of the builder's keywords, under the same name (the builder says
    what each does; a mask-branch setting is used by the variants whose ``build`` takes it).
    """

    arch: str = "levelset_rcnn"          # "levelset_rcnn" | "mask_rcnn"
    # Backbone and FPN.
    backbone: str = "resnet50"
    weights: str | None = None           # COCO Mask R-CNN weights ("DEFAULT" or a file)
    weights_backbone: str | None = None  # ImageNet backbone weights ("DEFAULT", an enum name,
    #                                      or a local torchvision state-dict file)
    num_classes: int | None = None       # including background; None: from the dataset
    trainable_backbone_layers: int | None = None
    deform_stages: list[int] = field(default_factory=list)  # ResNet layers (1-4) with DeformConv
    panet: bool = False                  # PANet bottom-up path augmentation after the FPN
    fpn_channels: int = 256
    # Box head and mask trunk widths.
    box_representation_size: int = 1024
    mask_layers: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    mask_paste: str | None = None        # exact | torchvision; None: exact for level sets,
    #                                      torchvision's for binary masks
    # The mask branch and its settings.
    mask_head_type: str = "levelset"     # levelset | tsdf | binary | lsloss | delse | delse_hp
    #                                      (binary whatever it says for arch mask_rcnn)
    predictor_channels: int = 256        # hidden channels of the 28x28 TSDF / mask predictor
    mask_resolution: int = 28            # binary / lsloss masks: 28 or 112
    class_agnostic: bool = False         # one initial TSDF for every class
    hyperparams: str = "head"            # head (per instance) | global (one learned set)
    hyper_init: dict[str, float] | None = None  # initial lambda1, lambda2, mu, eps, dt
    num_steps: int = 3                   # N unrolled Chan-Vese / DELSE steps
    cv_channels: int = 64                # Chan-Vese feature channels C
    cv_hidden_channels: int = 64
    cv_features: str = "learned"         # learned (to 112x112, the paper's) | interpolated
    cv_fine_channels: int = 16           # learned: width at 112x112 (twice that at 56x56)
    cv_upsampling: str = "implicit"      # interpolated: implicit | explicit (same result)
    cv_image_channels: int = 0           # beyond the paper: Chan-Vese features from the image
    #                                      inside each box (0: none)
    resolution: int = 112                # side M of phi_0, phi_N and the targets
    truncation: float = 12.0             # TSDF truncation in pixels of the M grid
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 5.0])  # (w_0, w_N)
    detach_phi0: bool = False            # Table 4 ablation
    delse_dt: float = 2.0                # delse / delse_hp: step in pixels
    delse_curvature: float = 0.5         # delse / delse_hp: curvature gain
    velocity_loss_weight: float = 1.0    # delse / delse_hp
    lsloss_weight: float = 1.0           # lsloss: weight of the Chan-Vese energy
    lsloss_eps: float = 0.1              # lsloss: Heaviside width
    lsloss_mu: float = 0.01              # lsloss: length weight
    # torchvision's transform, RPN and box branch.
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25


@dataclass
class DataConfig:
    """Datasets. ``synthetic: true`` generates the synthetic data under ``root``."""

    synthetic: bool = False
    root: str = "datasets/synthetic"
    synthetic_train_images: int = 200
    synthetic_val_images: int = 50
    synthetic_image_size: int = 256
    synthetic_seed: int = 0
    train_images: str = ""
    train_ann: str = ""
    val_images: str = ""
    val_ann: str = ""
    train_first: int | None = None       # keep the first N training images (by sorted id)
    val_last: int | None = None          # keep the last N validation images (by sorted id)
    hflip_prob: float = 0.5
    aspect_ratio_grouping: bool = True   # training batches of one orientation (portrait or
    #                                      landscape / square); no-op for the square synthetic data
    num_workers: int = 2


@dataclass
class SolverConfig:
    """SGD with linear warmup and step decay."""

    ims_per_batch: int = 16              # total over all processes
    base_lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 90000
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: float | None = None
    amp: bool = True                     # CUDA only; ignored on the CPU


@dataclass
class TrainConfig:
    """Where and how often to write, log and evaluate."""

    output_dir: str = "output"
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    checkpoint_period: int = 5000
    log_period: int = 20
    eval_period: int = 0                 # 0: evaluate only at the end
    eval_at_end: bool = True
    # Frozen-detector training (engine/freeze.py; README "Put level-set masks on your Mask
    # R-CNN"): init_from loads every matching tensor of a train output (model_final.pth /
    # checkpoint_last.pth) or a torchvision Mask R-CNN state-dict file before training (not
    # on --resume); freeze names parts of FREEZABLE_PARTS that keep their weights (no
    # gradients, eval mode): backbone (body + FPN), rpn, box_head (box head + predictor),
    # mask_trunk.
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)


#: The names ``train.freeze`` takes (the modules each covers: ``engine.freeze.PARTS``).
FREEZABLE_PARTS = ("backbone", "rpn", "box_head", "mask_trunk")


@dataclass
class EvalConfig:
    """Evaluation settings: COCO AP + AF1/AF2 (``coco``), the official Cityscapes AP / AP50
    (``cityscapes``) or LVIS AP* (``lvis``); optional test-time augmentation."""

    boundary: bool = True                # AF1 / AF2 (the paper's boundary metric)
    boundary_mode: str = "davis"         # davis (the paper's, DAVIS's seg2bmap) | inner
    boundary_ap: bool = True             # Boundary AP (Cheng et al. 2021, faster-coco-eval)
    mask_threshold: float = 0.5
    max_dets: int = 100
    max_images: int | None = None
    evaluator: str = "coco"              # coco | cityscapes | lvis
    cityscapes_gt: str = ""              # cityscapes: the gtFine/<split> folder
    lvis_ann: str = ""                   # lvis: LVIS val JSON (COCO-trained model, AP*)
    lvis_drop_missing: bool = False      # lvis: leave out COCO classes the file lacks (v1)
    tta: bool = False                    # test-time augmentation (flip / multi-scale)
    tta_flip: bool = True
    tta_min_sizes: list[int] = field(default_factory=list)  # empty: the model's test size


@dataclass
class Config:
    """The whole recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML / checkpoint friendly)."""
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        """Write the recipe as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_SECTION_TYPES = {"model": ModelConfig, "data": DataConfig, "solver": SolverConfig,
                  "train": TrainConfig, "eval": EvalConfig}


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def _check(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` (int -> float, tuple -> list) or raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            # A single number where a list is expected (min_size: 800) is a one-item list.
            (inner,) = typing.get_args(tp)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return [_check(value, inner, where)]
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is typing.Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _set(cfg: Config, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: {key!r} must be section.field, e.g. solver.base_lr")
    section, name = parts
    if section not in _SECTION_TYPES:
        raise ConfigError(f"{source}: unknown section {section!r} in {key!r} (sections: "
                          f"{', '.join(_SECTION_TYPES)})")
    hints = _hints(_SECTION_TYPES[section])
    if name not in hints:
        raise ConfigError(f"{source}: unknown field {key!r} (fields of {section}: "
                          f"{', '.join(hints)})")
    setattr(getattr(cfg, section), name, _check(value, hints[name], f"{source}: {key}"))


def config_from_dict(data: Mapping[str, Any] | None, *, source: str = "<dict>",
                     base: Config | None = None) -> Config:
    """Build a :class:`Config` from nested dicts (defaults for what is missing)."""
    cfg = base if base is not None else Config()
    if data is None:
        return cfg
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got "
                          f"{type(data).__name__}")
    for section, fields in data.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{source}: unknown section {section!r} (sections: "
                              f"{', '.join(_SECTION_TYPES)})")
        if fields is None:
            continue
        if not isinstance(fields, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        for name, value in fields.items():
            _set(cfg, f"{section}.{name}", value, source)
    return cfg


def apply_overrides(cfg: Config, overrides: Iterable[str], *, source: str = "command line"
                    ) -> Config:
    """Apply ``section.field=value`` strings (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: cannot parse the value of {key!r}: {exc}") from exc
        if isinstance(value, str) and value.lower() in ("none", "null", "~"):
            value = None
        _set(cfg, key.strip(), value, source)
    return cfg


def _packaged_recipes() -> Traversable:
    return resources.files("levelset_rcnn") / "configs"


def recipe_names() -> list[str]:
    """The names of the recipes that ship with the package (``load_config(name)``), sorted."""
    return sorted(p.name.removesuffix(".yaml") for p in _packaged_recipes().iterdir()
                  if p.name.endswith(".yaml"))


def find_recipe(spec: str | Path) -> Path | Traversable:
    """The recipe file ``spec`` names: an existing file is itself; otherwise a bare name, with
    or without ``.yaml``, is a packaged recipe (:func:`recipe_names`).

    Raises:
        ConfigError: no such file and no packaged recipe of that name (the message lists the
            packaged ones).
    """
    path = Path(spec)
    if path.is_file():
        return path
    available = ", ".join(recipe_names())
    if len(path.parts) != 1:  # a path, not a name
        raise ConfigError(f"config file {path} does not exist (packaged recipes, loadable by "
                          f"name: {available})")
    recipe = _packaged_recipes() / f"{path.name.removesuffix('.yaml')}.yaml"
    if not recipe.is_file():
        raise ConfigError(f"unknown recipe {str(spec)!r}: no such file, and no packaged recipe "
                          f"of that name (packaged recipes: {available})")
    return recipe


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML recipe, a file or a packaged recipe's name (:func:`find_recipe`), or the
    defaults when ``path`` is None; then apply overrides."""
    cfg = Config()
    if path is not None:
        recipe = find_recipe(path)
        try:
            data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{recipe}: not valid YAML: {exc}") from exc
        cfg = config_from_dict(data, source=str(recipe), base=cfg)
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks with clear messages."""
    if cfg.model.arch not in ("levelset_rcnn", "mask_rcnn"):
        raise ConfigError(f"model.arch must be levelset_rcnn or mask_rcnn, got "
                          f"{cfg.model.arch!r}")
    heads = ("levelset", "tsdf", "binary", "lsloss", "delse", "delse_hp")  # test: = builder's
    if cfg.model.arch == "levelset_rcnn" and cfg.model.mask_head_type not in heads:
        raise ConfigError(f"model.mask_head_type must be one of {', '.join(heads)}, got "
                          f"{cfg.model.mask_head_type!r}")
    if cfg.model.mask_paste not in (None, "exact", "torchvision"):
        raise ConfigError(f"model.mask_paste must be exact or torchvision, got "
                          f"{cfg.model.mask_paste!r}")
    if len(cfg.model.loss_weights) != 2:
        raise ConfigError("model.loss_weights must be two numbers (w_0, w_N)")
    if cfg.solver.max_iter < 0 or cfg.solver.ims_per_batch < 1:
        raise ConfigError("solver.max_iter must be >= 0 and solver.ims_per_batch >= 1")
    if list(cfg.solver.steps) != sorted(cfg.solver.steps):
        raise ConfigError(f"solver.steps must increase, got {cfg.solver.steps}")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {cfg.train.device!r}")
    if cfg.eval.boundary_mode not in ("davis", "inner"):
        raise ConfigError(f"eval.boundary_mode must be davis or inner, got "
                          f"{cfg.eval.boundary_mode!r}")
    if cfg.eval.evaluator not in ("coco", "cityscapes", "lvis"):
        raise ConfigError(f"eval.evaluator must be coco, cityscapes or lvis, got "
                          f"{cfg.eval.evaluator!r}")
    if cfg.eval.evaluator == "cityscapes" and not cfg.eval.cityscapes_gt:
        raise ConfigError("eval.evaluator=cityscapes needs eval.cityscapes_gt (the "
                          "gtFine/<split> folder, e.g. datasets/cityscapes/gtFine/val)")
    if cfg.eval.evaluator == "lvis" and not cfg.eval.lvis_ann:
        raise ConfigError("eval.evaluator=lvis needs eval.lvis_ann (the LVIS val JSON, e.g. "
                          "datasets/lvis/lvis_v0.5_val.json)")
    bad = [s for s in cfg.eval.tta_min_sizes if s <= 0]
    if bad:
        raise ConfigError(f"eval.tta_min_sizes must be positive shorter-edge sizes, got "
                          f"{cfg.eval.tta_min_sizes}")
    if cfg.train.checkpoint_period < 1:
        raise ConfigError("train.checkpoint_period must be >= 1")
    _check_ranges(cfg)


#: The backbones :func:`levelset_rcnn.modeling.levelset_rcnn` builds (a copy, so that reading a
#: recipe does not import torch; a test keeps it equal to ``modeling.builders.BACKBONES``).
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2",
             "mobilenet_v3_large")

# Range rules, by field. A field missing from this version of the dataclasses is skipped, so
# a rule can be listed before (or after) its field exists.
_MIN_INT = {
    "model.fpn_channels": 1, "model.box_representation_size": 1,
    "model.predictor_channels": 1, "model.num_steps": 0, "model.cv_channels": 1,
    "model.cv_hidden_channels": 1, "model.cv_fine_channels": 1, "model.resolution": 1,
    "model.cv_image_channels": 0,
    "model.max_size": 1, "model.rpn_pre_nms_top_n_train": 1, "model.rpn_pre_nms_top_n_test": 1,
    "model.rpn_post_nms_top_n_train": 1, "model.rpn_post_nms_top_n_test": 1,
    "model.rpn_batch_size_per_image": 1, "model.box_detections_per_img": 1,
    "model.box_batch_size_per_image": 1,
    "data.synthetic_train_images": 1, "data.synthetic_val_images": 1,
    "data.synthetic_image_size": 64, "data.synthetic_seed": 0, "data.num_workers": 0,
    "solver.warmup_iters": 0,
    "train.seed": 0, "train.log_period": 1, "train.eval_period": 0,
    "eval.max_dets": 1,
}
_MIN_OPTIONAL_INT = {"model.num_classes": 2, "model.trainable_backbone_layers": 0,
                     "data.train_first": 1, "data.val_last": 1, "eval.max_images": 1}
_POSITIVE = ("model.truncation", "model.delse_dt", "model.lsloss_eps", "solver.base_lr",
             "solver.gamma")
_NON_NEGATIVE = ("model.delse_curvature", "model.velocity_loss_weight", "model.lsloss_weight",
                 "model.lsloss_mu", "solver.weight_decay")
_UNIT_INTERVAL = ("model.rpn_nms_thresh", "model.rpn_fg_iou_thresh", "model.rpn_bg_iou_thresh",
                  "model.rpn_score_thresh", "model.box_score_thresh", "model.box_nms_thresh",
                  "model.box_fg_iou_thresh", "model.box_bg_iou_thresh", "data.hflip_prob",
                  "eval.mask_threshold")
_FRACTION = ("model.rpn_positive_fraction", "model.box_positive_fraction",
             "solver.warmup_factor")  # (0, 1]
_CHOICES = {"model.backbone": BACKBONES, "model.hyperparams": ("head", "global"),
            "model.cv_upsampling": ("implicit", "explicit"),
            "model.cv_features": ("learned", "interpolated")}
_POSITIVE_LISTS = ("model.min_size", "model.mask_layers")  # non-empty, every item >= 1
_HYPER_NAMES = ("lambda1", "lambda2", "mu", "eps", "dt")


def _fields(cfg: Config, keys: Iterable[str]) -> Iterable[tuple[str, Any]]:
    for key in keys:
        section, name = key.split(".")
        if hasattr(getattr(cfg, section), name):
            yield key, getattr(getattr(cfg, section), name)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _refuse(key: str, want: str, value: Any) -> ConfigError:
    return ConfigError(f"{key} must be {want}, got {value!r}")


def _check_ranges(cfg: Config) -> None:
    """Every numeric field in its range and every choice among its values, named in the
    message (``validate`` calls it last)."""
    for key, v in _fields(cfg, _MIN_INT):
        if v < _MIN_INT[key]:
            raise _refuse(key, f">= {_MIN_INT[key]}", v)
    for key, v in _fields(cfg, _MIN_OPTIONAL_INT):
        if v is not None and v < _MIN_OPTIONAL_INT[key]:
            raise _refuse(key, f"null or >= {_MIN_OPTIONAL_INT[key]}", v)
    for key, v in _fields(cfg, _POSITIVE):
        if not (_number(v) and v > 0):
            raise _refuse(key, "a finite number > 0", v)
    for key, v in _fields(cfg, _NON_NEGATIVE):
        if not (_number(v) and v >= 0):
            raise _refuse(key, "a finite number >= 0", v)
    for key, v in _fields(cfg, _UNIT_INTERVAL):
        if not (_number(v) and 0 <= v <= 1):
            raise _refuse(key, "in [0, 1]", v)
    for key, v in _fields(cfg, _FRACTION):
        if not (_number(v) and 0 < v <= 1):
            raise _refuse(key, "in (0, 1]", v)
    for key, v in _fields(cfg, _CHOICES):
        if v not in _CHOICES[key]:
            raise _refuse(key, f"one of {', '.join(_CHOICES[key])}", v)
    for key, v in _fields(cfg, _POSITIVE_LISTS):
        if not v or any(x < 1 for x in v):
            raise _refuse(key, "a non-empty list of positive integers", v)
    m, s = cfg.model, cfg.solver
    if m.trainable_backbone_layers is not None and m.trainable_backbone_layers > 5:
        raise _refuse("model.trainable_backbone_layers", "null or 0..5",
                      m.trainable_backbone_layers)
    if any(k not in (1, 2, 3, 4) for k in m.deform_stages) or \
            len(set(m.deform_stages)) != len(m.deform_stages):
        raise _refuse("model.deform_stages", "distinct ResNet stages 1-4", m.deform_stages)
    if not all(_number(w) and w >= 0 for w in m.loss_weights):
        raise _refuse("model.loss_weights", "two finite numbers >= 0", m.loss_weights)
    if m.hyper_init is not None:
        for name, v in m.hyper_init.items():
            if name not in _HYPER_NAMES:
                raise ConfigError(f"model.hyper_init: unknown hyperparameter {name!r} (known: "
                                  f"{', '.join(_HYPER_NAMES)})")
            if not (_number(v) and 0 < v < 2):
                raise _refuse(f"model.hyper_init.{name}", "a number in (0, 2)", v)
    if m.mask_resolution not in (28, 112):  # the binary / lsloss branches' two grids
        raise _refuse("model.mask_resolution", "28 or 112", m.mask_resolution)
    for kind in ("rpn", "box"):
        fg, bg = getattr(m, f"{kind}_fg_iou_thresh"), getattr(m, f"{kind}_bg_iou_thresh")
        if bg > fg:
            raise ConfigError(f"model.{kind}_bg_iou_thresh ({bg}) must not exceed "
                              f"model.{kind}_fg_iou_thresh ({fg})")
    if not (_number(s.momentum) and 0 <= s.momentum < 1):
        raise _refuse("solver.momentum", "in [0, 1)", s.momentum)
    if s.clip_grad_norm is not None and not (_number(s.clip_grad_norm) and s.clip_grad_norm > 0):
        raise _refuse("solver.clip_grad_norm", "null or a finite number > 0", s.clip_grad_norm)
    if any(step < 0 for step in s.steps):
        raise _refuse("solver.steps", "iterations >= 0", s.steps)
    if not str(cfg.train.output_dir).strip():
        raise _refuse("train.output_dir", "a folder", cfg.train.output_dir)
    unknown = [p for p in cfg.train.freeze if p not in FREEZABLE_PARTS]
    if unknown:
        raise ConfigError(f"train.freeze: unknown part(s) {', '.join(map(repr, unknown))} "
                          f"(valid: {', '.join(FREEZABLE_PARTS)})")
