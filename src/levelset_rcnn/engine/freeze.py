"""Frozen-detector training: start from trained weights and keep named parts of the model fixed.

Two recipe fields (``train`` section, :class:`~levelset_rcnn.config.TrainConfig`):

* ``train.init_from``: a file whose tensors are loaded into the freshly built model before
  training: a ``train`` output (``model_final.pth`` / ``checkpoint_last.pth``) or a bare state
  dict such as torchvision's ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``. Every tensor whose
  name and shape match loads (:func:`~levelset_rcnn.modeling.weights.load_maskrcnn_weights`,
  which also maps torchvision's key names); the rest of the model keeps its initialisation,
  and the report is printed. Not applied on ``--resume`` (the checkpoint has the weights).
* ``train.freeze``: names of parts (:data:`PARTS`) that do not train: their parameters get
  ``requires_grad=False`` (so the optimizer, DDP and gradient clipping never see them and no
  backward pass runs through them) and their modules stay in eval mode (BatchNorm uses and
  keeps its running statistics, no dropout) however often the trainer calls ``model.train()``
  (:func:`set_train_mode`).

The model needs no second code path: freezing works on its named sub-modules. The RPN and the
RoI heads themselves stay in training mode, so proposals are sampled with the recipe's
``rpn_*_train`` / ``box_*`` settings and the detector's losses are still computed and logged
(without gradients).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import comm
from ..config import FREEZABLE_PARTS, ConfigError, TrainConfig
from ..modeling.weights import LoadReport, load_maskrcnn_weights

__all__ = ["PARTS", "FreezeSummary", "apply_freeze", "check_frozen_loaded", "check_resume_freeze",
           "load_init_weights", "prepare_model", "set_train_mode"]

#: ``train.freeze`` name -> the sub-modules (paths from the model) it covers. The RPN's weights
#: all sit in ``rpn.head``; the box part is the box head and the box predictor.
PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),                                      # ResNet body + FPN
    "rpn": ("rpn.head",),
    "box_head": ("roi_heads.box_head", "roi_heads.box_predictor"),
    "mask_trunk": ("roi_heads.mask_head",),                         # Mask R-CNN's 3x3 convs
}
assert tuple(PARTS) == FREEZABLE_PARTS, "config.FREEZABLE_PARTS must name PARTS' keys"

#: State-dict entries a frozen part may lack in the file it was loaded from: BatchNorm's
#: batch counter (unused in eval mode; torchvision's COCO file has none) and the offsets of
#: deformable convolutions (zero at the start, i.e. the plain convolution of the file).
_MAY_START_FRESH = ("num_batches_tracked", ".conv_offset.")


@dataclass
class FreezeSummary:
    """What :func:`apply_freeze` froze, in numbers."""

    parts: dict[str, int] = field(default_factory=dict)  # name -> parameters frozen
    trainable: int = 0
    total: int = 0
    trainable_groups: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.parts:
            frozen = ", ".join(f"{k} ({v:,} parameters)" for k, v in self.parts.items())
            out.append(f"train.freeze: {frozen}: no gradients, kept in eval mode")
        out.append(f"training {self.trainable:,} of {self.total:,} parameters: "
                   f"{', '.join(self.trainable_groups) or '-'}")
        return out


def _modules(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    out = []
    for name in names:
        if name not in PARTS:
            raise ConfigError(f"train.freeze: unknown part {name!r} (valid: "
                              f"{', '.join(PARTS)})")
        for path in PARTS[name]:
            try:
                out.append((path, model.get_submodule(path)))
            except AttributeError as exc:
                raise ConfigError(f"train.freeze: {name!r} needs the model's {path!r}, which "
                                  f"{type(model).__name__} does not have") from exc
    return out


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def apply_freeze(model: nn.Module, names: Sequence[str]) -> FreezeSummary:
    """``requires_grad_(False)`` and eval mode for the parts ``names`` (:data:`PARTS`).

    Call before the optimizer is built. Raises :class:`ConfigError` for an unknown name.
    """
    model = comm.unwrap(model)
    summary = FreezeSummary()
    for name in _unique(names):
        mods = _modules(model, [name])
        summary.parts[name] = sum(p.numel() for _, m in mods for p in m.parameters())
        for _, m in mods:
            m.requires_grad_(False)
            m.eval()
    params = dict(model.named_parameters())
    summary.total = sum(p.numel() for p in params.values())
    summary.trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    summary.trainable_groups = sorted({".".join(k.split(".")[:2]) for k, p in params.items()
                                       if p.requires_grad})
    if not summary.trainable:
        raise ConfigError(f"train.freeze={list(names)} leaves no parameter to train")
    return summary


def set_train_mode(model: nn.Module, names: Sequence[str]) -> None:
    """``model.train()``, then eval mode again for the frozen parts ``names``."""
    model.train()
    for _, m in _modules(comm.unwrap(model), names):
        m.eval()


def load_init_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load every matching tensor of ``path`` (a ``train`` checkpoint or a bare state dict,
    e.g. torchvision's COCO Mask R-CNN file) into ``model``.

    Raises:
        ConfigError: the file is missing, is not a checkpoint / state dict, or none of its
            tensors matches the model (the message holds the load report).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train.init_from: {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, a torn file, or pickled objects
        raise ConfigError(f"train.init_from: {path} is not a checkpoint or state-dict file "
                          f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    state: Any = ckpt
    for key in ("model", "state_dict"):  # train outputs (and others) wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"train.init_from: {path} holds no state dict (a dict of tensors, "
                          f"alone or under 'model'), got {type(state).__name__}")
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    report = load_maskrcnn_weights(comm.unwrap(model), state)
    report.source = str(path)
    if not report.loaded:
        raise ConfigError(f"train.init_from: no tensor of {path} matches the model the recipe "
                          f"builds: {report.summary()}")
    return report


def check_frozen_loaded(model: nn.Module, names: Sequence[str],
                        reports: Sequence[LoadReport]) -> None:
    """Every tensor of a frozen part must have come from a weights file.

    Raises:
        ConfigError: no weights were loaded at all, or a frozen part would keep initial
            (random) tensors, e.g. a box predictor skipped for another number of classes.
    """
    if not names:
        return
    if not reports:
        raise ConfigError(f"train.freeze={list(names)} needs trained weights to freeze: set "
                          "train.init_from (a train output or a torchvision Mask R-CNN file) "
                          "or model.weights")
    loaded = {k for r in reports for k in r.loaded}
    model = comm.unwrap(model)
    for name in _unique(names):
        fresh = [f"{path}.{k}" for path, m in _modules(model, [name])
                 for k in m.state_dict()
                 if f"{path}.{k}" not in loaded and not any(s in f"{path}.{k}"
                                                            for s in _MAY_START_FRESH)]
        if fresh:
            mismatched = sorted({k for r in reports for k in r.mismatched} & set(fresh))
            why = (f"; shape mismatch for {', '.join(mismatched[:3])} (another number of "
                   "classes? set model.num_classes to the file's)" if mismatched else "")
            raise ConfigError(
                f"train.freeze: {name!r} would keep {len(fresh)} initial (untrained) tensors, "
                f"e.g. {fresh[0]}{why}. Load them (train.init_from / model.weights) or do not "
                f"freeze {name!r}. " + " | ".join(r.summary() for r in reports))


def check_resume_freeze(checkpoint: dict[str, Any], cfg: TrainConfig, path: str | Path) -> None:
    """The resumed recipe must freeze what the checkpoint's run froze (the optimizer state
    covers exactly the trainable parameters)."""
    stored = checkpoint.get("config")
    if not isinstance(stored, dict):
        return
    before = _unique((stored.get("train") or {}).get("freeze") or [])
    now = _unique(cfg.freeze)
    if sorted(before) != sorted(now):
        raise ConfigError(f"--resume: {path} was trained with train.freeze={before}, the recipe "
                          f"now says train.freeze={now}; resume with the same recipe "
                          f"(train.freeze=[{','.join(before)}])")


def prepare_model(model: nn.Module, cfg: TrainConfig, *, resume: bool) -> FreezeSummary | None:
    """The trainer's set-up: load ``cfg.init_from`` (unless resuming), check that the parts to
    freeze hold trained weights (unless resuming), freeze them, print what happened (rank 0).

    Returns the :class:`FreezeSummary` (None when neither field is set).
    """
    if not cfg.init_from and not cfg.freeze:
        return None
    main = comm.is_main_process()
    reports: list[LoadReport] = []
    builder_report = getattr(comm.unwrap(model), "load_report", None)
    if isinstance(builder_report, LoadReport):
        reports.append(builder_report)  # model.weights, loaded by the builder
    if cfg.init_from and not resume:
        report = load_init_weights(model, cfg.init_from)
        reports.append(report)
        if main:
            print(f"train.init_from: {report.summary()}")
    if not resume:
        check_frozen_loaded(model, cfg.freeze, reports)
    summary = apply_freeze(model, cfg.freeze)
    if main:
        for line in summary.lines():
            print(line)
    return summary
