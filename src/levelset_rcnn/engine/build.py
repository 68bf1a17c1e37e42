"""The model from a :class:`~levelset_rcnn.config.ModelConfig` through the modeling builders
(``model.arch`` picks :func:`~levelset_rcnn.modeling.levelset_rcnn` or the Mask R-CNN
baseline :func:`~levelset_rcnn.modeling.mask_rcnn`)."""

from __future__ import annotations

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
    """Builder keywords for ``cfg`` (``num_classes`` fills ``cfg.num_classes`` when None)."""
    n = cfg.num_classes if cfg.num_classes is not None else num_classes
    kw: dict[str, Any] = dict(
        backbone=cfg.backbone, weights=cfg.weights, weights_backbone=cfg.weights_backbone,
        num_classes=n, trainable_backbone_layers=cfg.trainable_backbone_layers,
        fpn_channels=cfg.fpn_channels, box_representation_size=cfg.box_representation_size,
        mask_layers=tuple(cfg.mask_layers), predictor_channels=cfg.predictor_channels,
        min_size=tuple(cfg.min_size), max_size=cfg.max_size,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=cfg.box_score_thresh,
    )
    if cfg.deform_stages:
        kw["deform_stages"] = tuple(cfg.deform_stages)
    if cfg.panet:
        kw["panet"] = True
    if cfg.arch == "mask_rcnn":
        kw["mask_resolution"] = cfg.mask_resolution
    else:
        kw.update(mask_head_type=cfg.mask_head_type, num_steps=cfg.num_steps,
                  cv_channels=cfg.cv_channels, cv_hidden_channels=cfg.cv_hidden_channels,
                  loss_weights=tuple(cfg.loss_weights), detach_phi0=cfg.detach_phi0)
    kw.update(cfg.extra)
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
