"""Frozen-detector training: start from trained weights and keep named parts of the model fixed.

Two recipe fields (``train`` section, :class:`~levelset_rcnn.config.TrainConfig`):

* ``train.init_from``: a file whose tensors are loaded into the freshly built model before
  training: a ``train`` output (``model_final.pth`` / ``checkpoint_last.pth``) or a bare state
  dict such as torchvision's ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``. Every tensor whose
  name and shape match loads (:func:`~levelset_rcnn.modeling.weights.load_maskrcnn_weights`,
  which also maps torchvision's key names); the rest of the model keeps its initialisation,
  and the report is printed. Not applied on ``--resume`` (the checkpoint has the weights).
  The box predictor's class rows are matched to the dataset's classes by category id and
  name (:func:`match_class_rows`): torchvision's 91-way COCO predictor gives a COCO-class
  dataset (80 classes, contiguous labels) its rows; a file trained on other classes gives
  no box predictor.
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
           "dataset_classes", "load_init_weights", "match_class_rows", "prepare_model",
           "set_train_mode"]

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

_CLS = "roi_heads.box_predictor.cls_score."
_BOX = "roi_heads.box_predictor.bbox_pred."
#: Class-specific binary mask logits (torchvision's name, and the binary branch's).
_MASK_LOGITS = ("roi_heads.mask_predictor.mask_fcn_logits.",
                "roi_heads.mask_branch.mask_predictor.mask_fcn_logits.")

Classes = list[tuple[int, str]]  # label 1..K -> (category id, name)


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


def dataset_classes(meta: dict[str, Any] | None) -> Classes | None:
    """``(category id, name)`` of labels 1..K from a trainer's / checkpoint's ``meta``."""
    if not isinstance(meta, dict):
        return None
    names, cat_ids = meta.get("class_names"), meta.get("label_to_cat_id")
    if not isinstance(names, list) or not isinstance(cat_ids, dict):
        return None
    try:
        return [(int(cat_ids[k]), str(names[k])) for k in range(1, len(names))]
    except (KeyError, ValueError, TypeError):
        return None


def _torchvision_coco_classes() -> Classes:
    """torchvision's COCO detectors: 91 rows, row = COCO category id (10 ids unused)."""
    from ..data.converters.coco_classes import COCO80_CAT_IDS, COCO80_NAMES

    names = dict(zip(COCO80_CAT_IDS, COCO80_NAMES, strict=True))
    return [(i, names.get(i, "")) for i in range(1, 91)]


def match_class_rows(state: dict[str, torch.Tensor], source: Classes | None,
                     target: Classes | None, num_rows: int) -> str | None:
    """Make the class-specific rows of ``state`` (box predictor, binary mask logits) those of
    the ``target`` classes (the dataset's), matched to the file's by category id and name.

    The file's classes are ``source`` (its ``meta``: rows 1..K are its labels) or, for a bare
    state dict with a 91-way predictor, torchvision's COCO convention (row = category id).
    Nothing happens when either side is unknown, when they agree, or when the model's
    predictor does not have ``len(target) + 1`` rows (``model.num_classes`` set apart from the
    dataset). When every target class is in the file its rows are picked (background first);
    otherwise the file's box predictor is dropped (it scores other classes) and starts fresh.
    Returns a line saying which, or None.
    """
    key = f"{_CLS}weight"
    if target is None or num_rows != len(target) + 1 or key not in state:
        return None
    file_rows = state[key].shape[0]
    if source is not None and file_rows >= len(source) + 1:
        source = source + [(-1, "")] * (file_rows - 1 - len(source))  # unused rows
    elif source is None and file_rows == 91:
        source = _torchvision_coco_classes()
    else:
        return None

    def norm(classes: Classes) -> list[tuple[int, str]]:
        return [(c, n.strip().lower()) for c, n in classes]

    if norm(source) == norm(target):
        return None
    where = {c: row for row, c in enumerate(norm(source), start=1) if c[1]}
    rows = [where.get(c) for c in norm(target)]
    if any(r is None for r in rows):
        missing = [n for (_, n), r in zip(target, rows, strict=True) if r is None]
        for k in [k for k in state if k.startswith((_CLS, _BOX))]:
            del state[k]
        return (f"box predictor not loaded: the file's classes lack {len(missing)} of the "
                f"dataset's {len(target)} (e.g. {missing[0]!r}; matched by category id and "
                "name), so it starts fresh")
    pick = torch.tensor([0, *rows])
    box = (4 * pick[:, None] + torch.arange(4)).flatten()
    for k in list(state):
        if k.startswith((_CLS, *_MASK_LOGITS)) and state[k].shape[0] == file_rows:
            state[k] = state[k][pick]
        elif k.startswith(_BOX) and state[k].shape[0] == 4 * file_rows:
            state[k] = state[k][box]
    return (f"box predictor: the dataset's {len(target)} classes picked from the file's "
            f"{file_rows - 1} rows by category id and name")


def load_init_weights(model: nn.Module, path: str | Path, *, classes: Classes | None = None
                      ) -> tuple[LoadReport, list[str]]:
    """Load every matching tensor of ``path`` (a ``train`` checkpoint or a bare state dict,
    e.g. torchvision's COCO Mask R-CNN file) into ``model``; ``classes`` (the dataset's, see
    :func:`dataset_classes`) match the box predictor's rows (:func:`match_class_rows`).

    Returns the load report and notes (lines to print).

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
    model = comm.unwrap(model)
    own = model.state_dict()
    rows = own[f"{_CLS}weight"].shape[0] if f"{_CLS}weight" in own else 0
    note = match_class_rows(state, dataset_classes(ckpt.get("meta") if isinstance(ckpt, dict)
                                                   else None), classes, rows)
    report = load_maskrcnn_weights(model, state)
    report.source = str(path)
    if not report.loaded:
        raise ConfigError(f"train.init_from: no tensor of {path} matches the model the recipe "
                          f"builds: {report.summary()}")
    return report, [note] if note else []


def check_frozen_loaded(model: nn.Module, names: Sequence[str],
                        reports: Sequence[LoadReport], notes: Sequence[str] = ()) -> None:
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
            why = (f"; shape mismatch for {', '.join(mismatched[:3])} (the file was trained "
                   "for other classes?)" if mismatched else "")
            raise ConfigError(
                f"train.freeze: {name!r} would keep {len(fresh)} initial (untrained) tensors, "
                f"e.g. {fresh[0]}{why}. Load them (train.init_from / model.weights) or do not "
                f"freeze {name!r}. " + " | ".join([*notes, *(r.summary() for r in reports)]))


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


def prepare_model(model: nn.Module, cfg: TrainConfig, *, resume: bool,
                  meta: dict[str, Any] | None = None) -> FreezeSummary | None:
    """The trainer's set-up: load ``cfg.init_from`` (unless resuming; ``meta``: the dataset's
    ``class_names`` and ``label_to_cat_id``, to match the box predictor's classes), check that
    the parts to freeze hold trained weights (unless resuming), freeze them, print what
    happened (rank 0).

    Returns the :class:`FreezeSummary` (None when neither field is set).
    """
    if not cfg.init_from and not cfg.freeze:
        return None
    main = comm.is_main_process()
    reports: list[LoadReport] = []
    builder_report = getattr(comm.unwrap(model), "load_report", None)
    if isinstance(builder_report, LoadReport):
        reports.append(builder_report)  # model.weights, loaded by the builder
    notes: list[str] = []
    if cfg.init_from and not resume:
        report, notes = load_init_weights(model, cfg.init_from, classes=dataset_classes(meta))
        reports.append(report)
        if main:
            for line in [report.summary(), *notes]:
                print(f"train.init_from: {line}")
    if not resume:
        check_frozen_loaded(model, cfg.freeze, reports, notes)
    summary = apply_freeze(model, cfg.freeze)
    if main:
        for line in summary.lines():
            print(line)
    return summary
