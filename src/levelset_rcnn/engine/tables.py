"""Metric tables: the mask rows of an evaluator's results, and the one formatter that prints
them (``eval``'s console table, the demo's report and summary lines, Cityscapes per class)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["METRIC_COLUMNS", "format_metrics", "metrics_table"]

#: Result keys of the mask rows per evaluator, and the columns worth showing.
_MASK_PREFIXES = ("segm", "cityscapes", "lvis_segm")
METRIC_COLUMNS: tuple[str, ...] = ("AP", "AP50", "AP75", "APr", "APc", "APf", "AF1", "AF2",
                                   "boundary_AP")


def metrics_table(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"masks": {...}, "masks_phi0": {...}}`` rows of mask AP / AP50 / AP75 / AF1 / AF2
    (COCO), AP / AP50 (Cityscapes) or AP / AP50 / AP75 / APr / APc / APf (LVIS), from an
    evaluator's ``evaluate()`` dict."""
    rows = {}
    for prefix in _MASK_PREFIXES:
        for name in ("masks", "masks_phi0"):
            r = results.get(f"{prefix}/{name}")
            if isinstance(r, dict):
                rows[name] = {k: float(r[k]) for k in METRIC_COLUMNS
                              if isinstance(r.get(k), int | float)}
    return rows


def _cell(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def format_metrics(rows: Mapping[str | tuple[str, ...], Mapping[str, float | None]], *,
                   columns: Sequence[str] | None = None,
                   header: str | tuple[str, ...] = "masks", style: str = "markdown") -> str:
    """Rows of metrics (percent, one decimal; a missing, None or NaN value is ``n/a``).

    Args:
        rows: ``{row name: {column: value}}``; a tuple name fills several label columns.
        columns: the value columns, in order (default: those of :data:`METRIC_COLUMNS` that
            some row has).
        header: the label column(s) heading; in ``lines`` style, the word after the name.
        style: ``markdown`` (a table with right-aligned values) or ``lines`` (one
            ``<name> <header> AP 12.3  AP50 45.6`` line per row, names padded to one width
            and a space).
    """
    if columns is None:
        columns = [c for c in METRIC_COLUMNS if any(c in row for row in rows.values())]
    names = {key: (key,) if isinstance(key, str) else tuple(key) for key in rows}
    if style == "lines":
        width = max((len(" | ".join(n)) for n in names.values()), default=0) + 1
        return "\n".join(
            f"{' | '.join(names[key]):<{width}} {header} "
            + "  ".join(f"{c} {_cell(row.get(c))}" for c in columns)
            for key, row in rows.items())
    if style != "markdown":
        raise ValueError(f"style must be 'markdown' or 'lines', got {style!r}")
    labels = (header,) if isinstance(header, str) else tuple(header)
    lines = ["| " + " | ".join([*labels, *columns]) + " |",
             "|" + " --- |" * len(labels) + " ---: |" * len(columns)]
    for key, row in rows.items():
        lines.append("| " + " | ".join([*names[key], *(_cell(row.get(c)) for c in columns)])
                     + " |")
    return "\n".join(lines)
