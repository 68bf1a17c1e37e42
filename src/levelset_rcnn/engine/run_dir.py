"""One run per training folder: what ``train --overwrite`` clears, what ``--resume`` compares,
and the metrics log cut back to the checkpoint a run resumes from.

- :func:`clear_previous_run` removes every file a training run writes (checkpoints, recipe,
  metrics, TensorBoard events, evaluation output, temporary files of killed writes), so an
  overwritten folder holds nothing of the old run; other files are left alone.
- :func:`recipe_differences` lists the recipe fields in which the run being resumed and the
  recipe given now differ, ignoring the fields that do not change what is trained
  (:data:`RESUME_FREE_FIELDS`).
- :func:`truncate_metrics` drops the ``metrics.jsonl`` records after the resumed iteration
  (a kill after the last checkpoint leaves records of iterations the resumed run repeats).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from .checkpoint import FINAL_MODEL, LAST_CHECKPOINT, remove_stale_temp_files

__all__ = ["METRICS_FILE", "RESUME_FREE_FIELDS", "RUN_DIRS", "RUN_FILES", "check_resume_recipe",
           "clear_previous_run", "recipe_differences", "truncate_metrics"]

METRICS_FILE = "metrics.jsonl"
#: Files and folders of a training run's output (``train`` and its evaluations).
RUN_FILES = (LAST_CHECKPOINT, FINAL_MODEL, "config.yaml", METRICS_FILE, "eval_results.json")
RUN_DIRS = ("tb", "cityscapes", "eval")
#: Recipe fields a resumed run may change without mixing two recipes: where and how often it
#: writes and logs, how far it trains, the device, data-loading processes and evaluation.
RESUME_FREE_FIELDS = ("train.output_dir", "train.device", "train.checkpoint_period",
                      "train.log_period", "train.eval_period", "train.eval_at_end",
                      "solver.max_iter", "data.num_workers", "eval.*")


def clear_previous_run(folder: str | Path) -> list[str]:
    """Delete what an earlier run wrote into ``folder`` (:data:`RUN_FILES`, :data:`RUN_DIRS`,
    stale temporary checkpoint files); returns the names removed."""
    folder = Path(folder)
    removed = []
    for name in RUN_FILES:
        p = folder / name
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(name)
    for name in RUN_DIRS:
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(f"{name}/")
    removed += [p.name for p in remove_stale_temp_files(folder)]
    return removed


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{section}.{name}": value for section, fields in d.items()
            for name, value in (fields or {}).items()}


def _free(key: str) -> bool:
    return any(key == f or (f.endswith(".*") and key.startswith(f[:-1]))
               for f in RESUME_FREE_FIELDS)


def recipe_differences(stored: Mapping[str, Any] | None, cfg: Config, *, source: str
                       ) -> list[str]:
    """``"field: <stored> -> <now>"`` for each recipe field (outside
    :data:`RESUME_FREE_FIELDS`) in which ``cfg`` differs from the recipe ``stored`` in a
    checkpoint (``source`` names it). No stored recipe is one difference.

    A field the stored recipe lacks (it predates the field) counts at its default; one this
    version no longer has counts as a difference.
    """
    if not isinstance(stored, Mapping):
        return [f"{source} holds no recipe to compare with"]
    before = {**_flat(Config().to_dict()),
              **_flat({k: v for k, v in stored.items() if isinstance(v, Mapping)})}
    now = _flat(cfg.to_dict())
    return [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
            if not _free(k) and before.get(k) != now.get(k)]


def truncate_metrics(path: str | Path, iteration: int) -> int:
    """Keep the records of ``path`` (a ``metrics.jsonl``) up to ``iteration``; drop later ones
    and any torn line. Returns the number of lines dropped. Atomic (temporary file, rename)."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = int(record["iteration"]) <= iteration
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def check_resume_recipe(stored: Mapping[str, Any] | None, cfg: Config, *, source: str,
                        allow_change: bool) -> list[str]:
    """Refuse (``ConfigError``) to resume ``source`` under a recipe that differs from its own
    unless ``allow_change``; returns the differences (for a warning)."""
    diffs = recipe_differences(stored, cfg, source=source)
    if diffs and not allow_change:
        raise ConfigError(
            f"--resume: the recipe differs from the one {source} was trained with, so the "
            "resumed run would mix two recipes: " + "; ".join(diffs) + ". Resume with the "
            "run's own recipe (its config.yaml), or pass --allow-recipe-change to continue "
            "under the new one anyway.")
    return diffs
