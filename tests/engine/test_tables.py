"""The one metric-table formatter, in every shape its callers print."""

from __future__ import annotations

import math

import pytest

from levelset_rcnn.engine.tables import format_metrics, metrics_table

ROWS = {"initial phi_0": {"AP": 12.34, "AP50": 50.0, "AF1": math.nan},
        "final masks": {"AP": 20.06, "AP50": 61.25, "AF1": 7.0}}


def test_markdown_columns_default_to_those_reported():
    assert format_metrics(ROWS) == "\n".join([
        "| masks | AP | AP50 | AF1 |",
        "| --- | ---: | ---: | ---: |",
        "| initial phi_0 | 12.3 | 50.0 | n/a |",
        "| final masks | 20.1 | 61.2 | 7.0 |"])


def test_fixed_columns_and_several_label_columns():
    text = format_metrics(ROWS, columns=("AP", "AF2"))
    assert text.splitlines()[2] == "| initial phi_0 | 12.3 | n/a |"
    per_class = {("masks", "AP"): {"car": 30.0, "bus": None}, ("masks", "AP50"): {"car": 55.55}}
    assert format_metrics(per_class, columns=["car", "bus"],
                          header=("masks", "metric")) == "\n".join([
        "| masks | metric | car | bus |",
        "| --- | --- | ---: | ---: |",
        "| masks | AP | 30.0 | n/a |",
        "| masks | AP50 | 55.5 | n/a |"])


def test_lines_style():
    rows = {"phi_0 (initial)": {"AP": 1.0, "AF1": None}, "phi_N (final)": {"AP": 2.25}}
    assert format_metrics(rows, columns=("AP", "AF1"), header="mask", style="lines") == (
        "phi_0 (initial)  mask AP 1.0  AF1 n/a\n"
        "phi_N (final)    mask AP 2.2  AF1 n/a")
    with pytest.raises(ValueError, match="style"):
        format_metrics(rows, style="html")


def test_metrics_table_picks_the_mask_rows():
    results = {"bbox": {"AP": 1.0}, "segm/masks": {"AP": 2.0, "AF1": 3, "per_class": {}},
               "lvis_segm/masks_phi0": {"APr": 4.0, "AP": "x"}}
    assert metrics_table(results) == {"masks": {"AP": 2.0, "AF1": 3.0},
                                      "masks_phi0": {"APr": 4.0}}
