"""benchmarks/gpu_check.py: it skips cleanly without CUDA, its correctness checks run on the CPU
as a dry run (CPU float32 against CPU float64) and pass, and its comparisons do catch
differences."""

from __future__ import annotations

import json

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_skips_without_cuda(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--json", str(out)]) == 0
    assert json.loads(out.read_text())["skipped"] == "no CUDA device"
    assert "skipped: no CUDA device" in capsys.readouterr().out


def test_cpu_dry_run_of_the_correctness_checks(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    sections = [s for s in gpu_check.CORRECTNESS if s != "classic_compiled"]  # slow compile
    code = gpu_check.main(["--device", "cpu", "--quick", "--sections", ",".join(sections),
                           "--json", str(out)])
    data = json.loads(out.read_text())
    assert code == 0, (data["failed_checks"], data["errored_sections"])
    assert data["device"] == "cpu" and data["quick"] is True
    assert [s for s, v in data["sections"].items() if v["status"] == "ok"] == sections
    assert {c["section"] for c in data["checks"]} == set(sections)
    assert all(c["passed"] for c in data["checks"])
    assert data["all_checks_passed"] is True and data["exit_code"] == 0


def test_comparisons_catch_differences(gpu_check, capsys):
    rec = gpu_check.Record(None, {})
    ref = {"a": torch.linspace(-1, 1, 50, dtype=torch.float64)}
    assert gpu_check.compare_named(rec, "s", "same", {"a": ref["a"].float()}, ref, 1e-6)
    assert not gpu_check.compare_named(rec, "s", "off", {"a": ref["a"] * 1.01}, ref, 1e-3)
    nan = ref["a"].clone()
    nan[3] = float("nan")
    assert not gpu_check.compare_named(rec, "s", "nan", {"a": nan}, ref, 1e3)
    assert rec.failed_checks() == ["off", "nan"]
    assert "FAIL  off" in capsys.readouterr().out

    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 30], [5, 5, 25, 25]])
    det = {"boxes": boxes, "labels": torch.tensor([1, 2, 1]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "masks": torch.rand(3, 1, 8, 8),
           "tsdf": torch.rand(3, 1, 4, 4)}
    same = gpu_check.compare_detections([det], [det], 3)
    assert same["matched"] == 1.0 and same["box_max_abs"] == 0.0 and same["mask_iou_min"] == 1.0
    swapped = {**det, "labels": torch.tensor([1, 1, 1])}  # a detection of another class
    assert gpu_check.compare_detections([swapped], [det], 3)["matched"] < 1.0
    moved = {**det, "boxes": boxes + torch.tensor([0.5, 0, 0.5, 0]),
             "scores": det["scores"] + 1e-3}
    diff = gpu_check.compare_detections([moved], [det], 3)
    assert diff["matched"] == 1.0
    assert diff["box_max_abs"] == pytest.approx(0.5) and diff["score_max_abs"] > 5e-4
