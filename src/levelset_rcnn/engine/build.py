"""The model from a :class:`~levelset_rcnn.config.ModelConfig` through the modeling builders
(``model.arch`` picks :func:`~levelset_rcnn.modeling.levelset_rcnn` or the Mask R-CNN
baseline :func:`~levelset_rcnn.modeling.mask_rcnn`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..config import (
    Config,
    ConfigError,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    validate,
)
from ..modeling import levelset_rcnn, mask_rcnn
from .checkpoint import load_checkpoint, model_state

__all__ = ["build_model", "load_trained_model", "model_kwargs"]


def model_kwargs(cfg: ModelConfig, *, num_classes: int | None = None) -> dict[str, Any]:
    """Builder keywords for ``cfg``: every field but ``arch``, under its own name (lists as
    tuples); ``num_classes`` fills ``cfg.num_classes`` when that is None."""
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name != "arch":
            value = getattr(cfg, f.name)
            kw[f.name] = tuple(value) if isinstance(value, list) else value
    if kw["num_classes"] is None:
        kw["num_classes"] = num_classes
    return kw


def build_model(cfg: ModelConfig, *, num_classes: int | None = None) -> nn.Module:
    """Build the configured model (weights loaded when ``cfg.weights`` is set)."""
    kw = model_kwargs(cfg, num_classes=num_classes)
    return mask_rcnn(**kw) if cfg.arch == "mask_rcnn" else levelset_rcnn(**kw)


def load_trained_model(weights: str | Path, *, config: str | Path | None = None,
                       overrides: Sequence[str] = ()) -> tuple[nn.Module, Config, dict[str, Any]]:
    """A trained model from a ``train`` output (``model_final.pth`` / ``checkpoint_last.pth``).

    The recipe stored in the file is used unless ``config`` is given; ``overrides`` apply on
    top. A bare state dict needs ``config``. Returns ``(model, cfg, meta)`` with ``meta``
    holding ``class_names`` and ``label_to_cat_id`` when the file has them.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ConfigError: no recipe available, or a bad one.
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    ckpt = load_checkpoint(path)
    if config is not None:
        cfg = load_config(config, overrides)
    elif isinstance(ckpt.get("config"), dict):
        cfg = config_from_dict(ckpt["config"], source=str(path))
        apply_overrides(cfg, overrides)
        validate(cfg)
    else:
        raise ConfigError(f"{path} holds no recipe (a bare state dict): pass --config")
    state = model_state(ckpt)
    meta = dict(ckpt.get("meta", {})) if isinstance(ckpt.get("meta"), dict) else {}
    num_classes = cfg.model.num_classes
    if num_classes is None and "class_names" in meta:
        num_classes = len(meta["class_names"])
    key = "roi_heads.box_predictor.cls_score.weight"
    if num_classes is None and key in state:
        num_classes = int(state[key].shape[0])
    cfg.model.weights = None           # the file replaces any pretrained start
    cfg.model.weights_backbone = None
    model = build_model(cfg.model, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not match the model the recipe builds "
                          f"({cfg.model.arch}, {cfg.model.backbone}): {str(exc)[:400]}") from exc
    model.eval()
    return model, cfg, meta
