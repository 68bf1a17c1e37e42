"""The same-detector benchmark's results file: a run of some row groups keeps the rows, row
timings and detector time that an earlier run of the same budget wrote, and drops them when
the budget differs (rows of different budgets must never share a table)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_shared_detector")


def _cell(ap: float) -> dict:
    return {"AP": {"mean": ap, "std": 0.5}}


def _results_file(path: Path, *, iters: int) -> None:
    budget = {"seeds": [0, 1, 2], "iters": iters, "detector_iters": 600}
    path.write_text(json.dumps({
        "dsb2018": {"detections": {"maskrcnn": _cell(41.9), "levelset_phiN": _cell(45.1)},
                    "gt_boxes": {"maskrcnn": _cell(47.7), "levelset_phiN": _cell(56.0)}},
        "synthetic": {"detections": {"maskrcnn": _cell(23.7)}},
        "_meta": {"timing": {
            "dsb2018": {"detector_s": 857.6, **budget,
                        "rows": {"maskrcnn": [{"train_s": 1.0, "eval_s": 1.0}],
                                 "levelset": [{"train_s": 2.0, "eval_s": 2.0}]}},
            "synthetic": {"detector_s": 748.0, **budget, "rows": {}}}}}))


def _args(path: Path, *, rows: list[str], iters: int) -> argparse.Namespace:
    return argparse.Namespace(json=path, datasets=["dsb2018"], rows=rows, iters=iters,
                              detector_iters=600, seeds=[0, 1, 2])


def test_a_run_of_other_rows_keeps_the_finished_rows_and_the_detector_time(bench, tmp_path):
    path = tmp_path / "shared_detector.json"
    _results_file(path, iters=100)
    keep, timing, kept = bench._previous(_args(path, rows=["levelset_steps"], iters=100))
    assert set(keep) == {"synthetic"} and set(timing) == {"synthetic"}
    old = kept["dsb2018"]
    assert old["detector_s"] == 857.6
    assert set(old["results"]["detections"]) == {"maskrcnn", "levelset_phiN"}
    assert old["results"]["gt_boxes"]["levelset_phiN"]["AP"]["mean"] == 56.0
    assert set(old["timing"]) == {"maskrcnn", "levelset"}


def test_a_rerun_of_a_group_replaces_only_that_groups_rows(bench, tmp_path):
    path = tmp_path / "shared_detector.json"
    _results_file(path, iters=100)
    _, _, kept = bench._previous(_args(path, rows=["levelset"], iters=100))
    assert set(kept["dsb2018"]["results"]["detections"]) == {"maskrcnn"}
    assert set(kept["dsb2018"]["timing"]) == {"maskrcnn"}


def test_another_budget_keeps_nothing_of_the_dataset(bench, tmp_path):
    path = tmp_path / "shared_detector.json"
    _results_file(path, iters=100)
    keep, _, kept = bench._previous(_args(path, rows=["levelset_steps"], iters=300))
    assert "dsb2018" not in kept and "dsb2018" not in keep
    assert "synthetic" in keep


def test_a_file_that_is_not_a_results_file_is_refused_by_name(bench, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="broken.json"):
        bench._previous(_args(path, rows=["levelset"], iters=100))
