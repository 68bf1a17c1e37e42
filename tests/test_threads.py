"""The CPU thread choice (levelset_rcnn.threads) from fake affinity and cgroup files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from levelset_rcnn import threads
from levelset_rcnn.threads import (
    ENV_AUTO_MARK,
    ENV_THREADS,
    ThreadChoice,
    cgroup_cpu_quota,
    choose_threads,
    configure_threads,
    current_choice,
    log_line,
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path, cgroup="/job", **cpu_max) -> tuple[Path, Path]:
    """A cgroup v2 tree: ``cpu_max`` maps a relative directory ('' = root) to cpu.max."""
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory\n")
    for rel, text in cpu_max.items():
        _write(root / rel.replace("__", "/") / "cpu.max", text + "\n")
    proc = tmp_path / "proc_cgroup"
    _write(proc, f"0::{cgroup}\n")
    return root, proc


def test_v2_quota_is_quota_over_period(tmp_path):
    root, proc = _v2(tmp_path, job="150000 100000")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)


def test_v2_no_quota_and_smallest_ancestor(tmp_path):
    root, proc = _v2(tmp_path, cgroup="/a/b", a__b="max 100000")
    assert cgroup_cpu_quota(root, proc) is None
    root, proc = _v2(tmp_path / "2", cgroup="/a/b", a__b="300000 100000", a="50000 100000")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(0.5)


def test_v2_inside_a_container_namespace_reads_the_root(tmp_path):
    root, proc = _v2(tmp_path, cgroup="/", **{"": "200000 100000"})
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.0)


def test_v2_hybrid_layout_under_unified(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "unified" / "cgroup.controllers", "cpu\n")
    _write(root / "unified" / "job" / "cpu.max", "100000 100000\n")
    proc = tmp_path / "proc_cgroup"
    _write(proc, "1:name=systemd:/\n0::/job\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.0)


@pytest.mark.parametrize("controller_dir", ["cpu", "cpu,cpuacct"])
def test_v1_cfs_quota(tmp_path, controller_dir):
    root = tmp_path / "cgroup"
    base = root / controller_dir
    _write(base / "cpu.cfs_quota_us", "-1\n")  # the root: no quota
    _write(base / "cpu.cfs_period_us", "100000\n")
    _write(base / "docker" / "c1" / "cpu.cfs_quota_us", "250000\n")
    _write(base / "docker" / "c1" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc_cgroup"
    _write(proc, "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n0::/\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.5)
    _write(proc, "2:cpu,cpuacct:/\n")
    assert cgroup_cpu_quota(root, proc) is None  # -1 at the root


def test_missing_or_garbled_files_mean_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "no_proc") is None
    root, proc = _v2(tmp_path, job="lots 100000")
    assert cgroup_cpu_quota(root, proc) is None


@pytest.mark.parametrize(("affinity", "quota", "expected"), [
    (4, None, 4), (8, 1.5, 1), (8, 2.0, 2), (2, 6.0, 2), (4, 0.3, 1), (None, 3.0, 3),
])
def test_choice_is_the_smaller_limit(affinity, quota, expected):
    choice = choose_threads({}, affinity=affinity, cgroup_quota=quota)
    assert choice.threads == expected and choice.override is None


def test_choice_from_fake_files(tmp_path):
    root, proc = _v2(tmp_path, job="150000 100000")
    choice = choose_threads({}, affinity=4, cgroup_root=root, proc_cgroup=proc)
    assert (choice.threads, choice.affinity, choice.cgroup_quota) == (1, 4, 1.5)
    assert choice.describe() == ("threads: 1 (affinity 4, cgroup quota 1.5 CPUs, "
                                 "override none)")


def test_overrides():
    env = {ENV_THREADS: "3", "OMP_NUM_THREADS": "1"}
    choice = choose_threads(env, affinity=2, cgroup_quota=None)
    assert choice.threads == 3 and choice.override == f"{ENV_THREADS}=3"
    choice = choose_threads({"OMP_NUM_THREADS": "4,2"}, affinity=2, cgroup_quota=1.0)
    assert choice.threads == 4 and choice.override == "OMP_NUM_THREADS=4,2"
    for bad in ("0", "-2", "many", ""):  # ignored: the limits decide
        assert choose_threads({ENV_THREADS: bad}, affinity=2, cgroup_quota=None).threads == 2


def test_describe_matches_the_training_log_line():
    assert (ThreadChoice(2, 2, None).describe()
            == "threads: 2 (affinity 2, cgroup quota none, override none)")
    assert "override OMP_NUM_THREADS=1" in ThreadChoice(1, 2, None, "OMP_NUM_THREADS=1").describe()


def test_this_process_is_detected():
    choice = choose_threads({})
    assert choice.threads >= 1
    if hasattr(threads.os, "sched_getaffinity"):
        assert choice.affinity == len(threads.os.sched_getaffinity(0))


def test_configure_sets_wait_policy_defaults_without_overwriting_the_users():
    env = {"KMP_BLOCKTIME": "200"}
    choice = configure_threads(env, set_torch=False, affinity=3, cgroup_quota=None)
    assert env == {"KMP_BLOCKTIME": "200", "OMP_WAIT_POLICY": "PASSIVE",
                   "OMP_NUM_THREADS": "3", ENV_AUTO_MARK: "3"}
    assert choice.env_defaults == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3",
                                   ENV_AUTO_MARK: "3"}
    assert choice.applied_before_torch is False  # torch is imported in this test process
    assert current_choice() is choice and choice.threads == 3 and choice.interop_threads is None
    env = {}
    configure_threads(env, set_torch=False, wait_policy=False, affinity=3, cgroup_quota=None)
    assert env == {"OMP_NUM_THREADS": "3", ENV_AUTO_MARK: "3"}


def test_users_omp_num_threads_is_kept_and_ours_is_not_an_override():
    env = {"OMP_NUM_THREADS": "1"}
    choice = configure_threads(env, set_torch=False, affinity=4, cgroup_quota=None)
    assert choice.threads == 1 and env["OMP_NUM_THREADS"] == "1" and ENV_AUTO_MARK not in env
    # a child process inherits our export: it chooses again (its limits may differ)
    child = {"OMP_NUM_THREADS": "2", ENV_AUTO_MARK: "2"}
    choice = choose_threads(child, affinity=4, cgroup_quota=None)
    assert choice.threads == 4 and choice.override is None
    configure_threads(child, set_torch=False, affinity=4, cgroup_quota=None)
    assert child["OMP_NUM_THREADS"] == "4" and child[ENV_AUTO_MARK] == "4"
    # the user changed it after the parent exported ours: the user's value wins
    child = {"OMP_NUM_THREADS": "3", ENV_AUTO_MARK: "2"}
    assert choose_threads(child, affinity=4, cgroup_quota=None).threads == 3


def test_configure_applies_the_count_to_torch():
    before = torch.get_num_threads()
    try:
        env = {ENV_THREADS: "1"}
        choice = configure_threads(env, affinity=2, cgroup_quota=None)  # torch is imported
        assert choice.threads == 1 and torch.get_num_threads() == 1
        assert choice.override == f"{ENV_THREADS}=1" and env["OMP_NUM_THREADS"] == "1"
        assert log_line() == ("threads: 1 (affinity 2, cgroup quota none, "
                              f"override {ENV_THREADS}=1)")
        torch.set_num_threads(2)
        assert log_line().endswith("; torch now uses 2")
    finally:
        torch.set_num_threads(before)


def test_log_line_without_configure(monkeypatch):
    monkeypatch.setattr(threads, "_CURRENT", None)
    line = log_line()
    assert line.startswith(f"threads: {torch.get_num_threads()} (torch's setting; ")
    assert "would choose" in line and "cgroup quota" in line


def test_the_environment_reaches_torch_in_a_fresh_process():
    """Configured before torch is imported (as the CLI does), the count and the wait policy
    are what torch's OpenMP starts with."""
    code = ("from levelset_rcnn.threads import configure_threads\n"
            "c = configure_threads()\n"
            "import os, torch\n"
            "print(c.applied_before_torch, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env[ENV_THREADS] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["True", "1", "PASSIVE"]
