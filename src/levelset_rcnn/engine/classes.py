"""The classes a model was trained on against those of the data it meets.

A model's labels 1..K mean the classes of its training set, in that set's category-id order;
a checkpoint records them (``meta``: ``class_names``, ``label_to_cat_id``). Scoring it on a
JSON with other classes scores one class as another (a 4-class model's "ring" as COCO's
"person"), so :func:`resolve_classes` compares the two before any work:

- same names label by label: the JSON's category ids are used (they may be numbered
  differently);
- anything else is refused with both lists, unless a class map says how the checkpoint's
  classes correspond to the JSON's: ``{checkpoint name: JSON name}``, ``None`` (or ``"-"``)
  for a class whose detections are dropped. A class the map leaves out keeps its name. JSON
  categories no class maps to are scored with no detections (a warning says so).

``eval --class-map ring=donut star=- ...`` or ``--class-map map.json`` (a JSON object of the
same pairs) passes a map (:func:`parse_class_map`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..evaluation import DatasetEvaluator

__all__ = ["ClassMismatchError", "FilteredEvaluator", "check_same_classes", "class_list",
           "parse_class_map", "resolve_classes"]

logger = logging.getLogger(__name__)

Classes = list[tuple[int, str, int]]  # (label, name, category id)


class ClassMismatchError(ConfigError):
    """The model's classes are not the dataset's (the message shows both lists)."""


def class_list(meta_or_dataset: Any) -> Classes | None:
    """``(label, name, category id)`` for labels 1..K of a checkpoint's ``meta`` dict or a
    dataset (``class_names``, ``label_to_cat_id``); None when they are not recorded."""
    if isinstance(meta_or_dataset, Mapping):
        names = meta_or_dataset.get("class_names")
        ids = meta_or_dataset.get("label_to_cat_id")
    else:
        names = getattr(meta_or_dataset, "class_names", None)
        ids = getattr(meta_or_dataset, "label_to_cat_id", None)
    if not isinstance(names, Sequence) or not isinstance(ids, Mapping):
        return None
    ids = {int(k): v for k, v in ids.items()}
    try:
        return [(k, str(names[k]), int(ids[k])) for k in range(1, len(names))]
    except (KeyError, TypeError, ValueError):
        return None


def _show(classes: Classes) -> str:
    return ", ".join(f"{lab}: {name} (id {cid})" for lab, name, cid in classes) or "none"


def check_same_classes(a: Classes | None, b: Classes | None, *, a_name: str, b_name: str,
                       hint: str = "") -> None:
    """Raise :class:`ClassMismatchError` unless ``a`` and ``b`` name the same classes in the
    same label order (category ids may differ)."""
    if a is None or b is None:
        return
    if [n for _, n, _ in a] != [n for _, n, _ in b]:
        raise ClassMismatchError(f"{a_name} has {len(a)} classes [{_show(a)}] but {b_name} has "
                                 f"{len(b)} [{_show(b)}]{hint}")


def parse_class_map(items: Sequence[str] | None) -> dict[str, str | None] | None:
    """``CKPT=JSON`` items (``CKPT=`` or ``CKPT=-``: drop that class), or one path to a JSON
    object of such pairs (``null`` or ``"-"`` to drop)."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        path = Path(items[0])
        if not path.is_file():
            raise ConfigError(f"--class-map {path}: no such file (give CKPT=JSON pairs or a "
                              "JSON file of them)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--class-map {path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(
                isinstance(v, str) or v is None for v in data.values()):
            raise ConfigError(f"--class-map {path}: must be a JSON object of checkpoint class "
                              "name -> dataset class name (or null to drop it)")
        pairs = data.items()
    else:
        pairs = []
        for item in items:
            if "=" not in item:
                raise ConfigError(f"--class-map: {item!r} is not CKPT=JSON")
            pairs.append(tuple(s.strip() for s in item.split("=", 1)))
    return {str(k): (None if v in (None, "", "-") else v) for k, v in pairs}


def resolve_classes(model_classes: Classes | None, dataset: Any, *,
                    class_map: Mapping[str, str | None] | None = None,
                    model_num_classes: int | None = None, source: str = "the checkpoint"
                    ) -> tuple[dict[int, int], set[int]]:
    """``(label -> the dataset's category id, labels whose detections are dropped)`` for a
    model whose classes are ``model_classes`` (:func:`class_list` of its checkpoint) scored
    on ``dataset`` (see the module docstring).

    Raises:
        ClassMismatchError: the classes differ and no (sufficient) class map was given.
        ConfigError: a class map naming a class that neither side has.
    """
    data_classes = class_list(dataset) or []
    where = f"{getattr(dataset, 'ann_file', 'the dataset')}"
    hint = (". Evaluate on data with the model's classes, or say how they correspond with "
            "--class-map CKPT=JSON ... (CKPT=- drops a class) or --class-map map.json")
    if model_classes is None:
        if model_num_classes is not None and model_num_classes - 1 != len(data_classes):
            raise ClassMismatchError(f"{source} records no class names and its model predicts "
                                     f"{model_num_classes - 1} classes, but {where} has "
                                     f"{len(data_classes)} [{_show(data_classes)}]")
        logger.warning("%s records no class names: taking labels 1..%d as %s's classes in "
                       "category-id order", source, len(data_classes), where)
        return {lab: cid for lab, _, cid in data_classes}, set()
    if class_map is None:
        check_same_classes(model_classes, data_classes, a_name=source, b_name=where,
                           hint=hint)
        moved = [f"{n}: {a} -> {b}" for (_, n, a), (_, _, b) in
                 zip(model_classes, data_classes, strict=True) if a != b]
        if moved:
            logger.warning("same classes, other category ids in %s (%s): scored by name",
                           where, ", ".join(moved))
        return {lab: cid for lab, _, cid in data_classes}, set()
    by_name: dict[str, list[int]] = {}
    for _, name, cid in data_classes:
        by_name.setdefault(name, []).append(cid)
    names = {n for _, n, _ in model_classes}
    unknown = sorted(set(class_map) - names)
    if unknown:
        raise ConfigError(f"--class-map names {unknown}, which {source} does not have (its "
                          f"classes: {', '.join(n for _, n, _ in model_classes)})")
    mapping, dropped = {}, set()
    for lab, name, _ in model_classes:
        target = class_map.get(name, name)
        if target is None:
            dropped.add(lab)
            continue
        ids = by_name.get(target, [])
        if len(ids) != 1:
            what = "no" if not ids else f"{len(ids)} ({ids})"
            raise ClassMismatchError(
                f"{source}'s class {name!r} maps to {target!r}, but {where} has {what} "
                f"category of that name (its classes: [{_show(data_classes)}]); map it with "
                f"--class-map {name}=<dataset class> or drop it with {name}=-")
        mapping[lab] = ids[0]
    unscored = [f"{n} (id {c})" for _, n, c in data_classes if c not in mapping.values()]
    if unscored:
        logger.warning("no model class maps to %s of %s: their instances are scored with no "
                       "detections", ", ".join(unscored), where)
    return mapping, dropped


def _drop_labels(output: dict[str, Any], dropped: set[int]) -> dict[str, Any]:
    labels = output["labels"]
    keep = ~torch.isin(labels, torch.tensor(sorted(dropped), dtype=labels.dtype))
    n = len(labels)
    return {k: (v[keep] if isinstance(v, torch.Tensor) and v.dim() and len(v) == n else v)
            for k, v in output.items()}


class FilteredEvaluator(DatasetEvaluator):
    """Another evaluator, fed the outputs without the detections of ``dropped`` labels."""

    def __init__(self, inner: DatasetEvaluator, dropped: set[int]) -> None:
        self.inner, self.dropped = inner, set(dropped)

    def __getattr__(self, name: str) -> Any:  # mask_keys, ... of the inner evaluator
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.inner.reset()

    def process(self, targets_or_image_ids: Sequence[Any], outputs: Sequence[dict[str, Any]]
                ) -> None:
        if self.dropped:
            outputs = [_drop_labels(o, self.dropped) for o in outputs]
        self.inner.process(targets_or_image_ids, outputs)

    def evaluate(self) -> dict[str, Any]:
        return self.inner.evaluate()
