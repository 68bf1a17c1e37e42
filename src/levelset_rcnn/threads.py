"""CPU threads that respect the process's limits.

PyTorch sizes its intra-op pool by the host's core count, and its OpenMP threads spin for a
while at every barrier before they sleep. On a small machine shared with other jobs (two
cores here, and a second single-threaded job) that combination fights: a thread that shares
a core with the other job makes every parallel region wait for it, and the spinning threads
take the cycles that the late one needs (``benchmarks/bench_threads.py`` measures it).

:func:`configure_threads` chooses the intra-op thread count from what the process may actually
run on, not from ``os.cpu_count()``:

* the CPUs in its affinity mask (``os.sched_getaffinity``: ``taskset``, ``cpuset`` cgroups,
  ``docker --cpuset-cpus``);
* the CPU bandwidth quota of its cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``; ``docker --cpus``, Kubernetes CPU limits), the smallest along the
  cgroup's ancestors, rounded down (at least 1);
* an explicit override wins: ``LEVELSET_RCNN_THREADS``, else ``OMP_NUM_THREADS`` if the user
  set it.

It also sets ``OMP_WAIT_POLICY=PASSIVE`` (libgomp and Intel OpenMP: a thread that waits at a
barrier sleeps at once instead of spinning) and ``KMP_BLOCKTIME=0`` (the same for Intel
OpenMP) in the environment unless the user set them. OpenMP reads them when it starts, that
is when ``torch`` is first imported, so call it before that: the CLI does, first thing.

Before torch is imported, the count is applied the same way, as ``OMP_NUM_THREADS`` (torch's
intra-op pool and MKL take their size from it), marked by ``LEVELSET_RCNN_AUTO_THREADS`` so
that a child process (which inherits both) does not mistake it for the user's setting and
chooses for itself. Once torch is imported it is applied with ``torch.set_num_threads``, and
the inter-op pool (used by ``torch.jit.fork``, which this package does not use; its threads
block rather than spin) is set to one thread where torch still allows it.

The choice is kept (:func:`current_choice`) so that training can log it once.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENV_AUTO_MARK", "ENV_THREADS", "ThreadChoice", "affinity_cpus", "cgroup_cpu_quota",
           "choose_threads", "configure_threads", "current_choice", "log_line"]

#: Environment variable that sets the intra-op thread count explicitly.
ENV_THREADS = "LEVELSET_RCNN_THREADS"
#: Set next to an ``OMP_NUM_THREADS`` that :func:`configure_threads` exported (same value).
ENV_AUTO_MARK = "LEVELSET_RCNN_AUTO_THREADS"
#: Set in the environment (unless the user set them) before the OpenMP runtime starts.
WAIT_POLICY_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count and what it was chosen from."""

    threads: int
    affinity: int | None  # CPUs in the affinity mask (None: unknown on this platform)
    cgroup_quota: float | None  # CPUs' worth of the cgroup quota (None: no quota)
    override: str | None = None  # "NAME=value" of the variable that decided, if any
    interop_threads: int | None = None  # set in torch (None: left at torch's default)
    env_defaults: dict[str, str] = field(default_factory=dict)  # what we set in os.environ
    applied_before_torch: bool | None = None  # were the env settings in time for OpenMP?

    def limits(self) -> str:
        """``affinity 2, cgroup quota none, override none``."""
        quota = "none" if self.cgroup_quota is None else f"{self.cgroup_quota:g} CPUs"
        aff = "unknown" if self.affinity is None else str(self.affinity)
        return f"affinity {aff}, cgroup quota {quota}, override {self.override or 'none'}"

    def describe(self) -> str:
        """``threads: 2 (affinity 2, cgroup quota none, override none)``."""
        return f"threads: {self.threads} ({self.limits()})"


def affinity_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask), or None where not available."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and its v1 ``cpu`` controller path, from
    ``/proc/self/cgroup`` (lines ``id:controllers:path``)."""
    text = _read(proc_cgroup)
    v2 = v1 = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, rel: str | None) -> list[Path]:
    """``root/rel``, its parents, ..., ``root`` (a quota anywhere above also limits us).
    Inside a container the cgroup namespace usually shows the path as ``/``."""
    rel_parts = [p for p in (rel or "/").split("/") if p]
    dirs = [root.joinpath(*rel_parts[:k]) for k in range(len(rel_parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _quota_v2(d: Path) -> float | None:
    text = _read(d / "cpu.max")  # "max 100000" or "150000 100000"
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max":
        return None
    try:
        quota = float(fields[0])
        period = float(fields[1]) if len(fields) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(d: Path) -> float | None:
    q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    try:
        quota, period = float(q), float(p)
    except (TypeError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota


def cgroup_cpu_quota(cgroup_root: str | Path = "/sys/fs/cgroup",
                     proc_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """CPUs' worth of CPU time the process's cgroup allows (quota / period), the smallest
    along its ancestors, or None when no quota applies (or none can be read).

    Looks for cgroup v2 (``cpu.max``) at ``cgroup_root`` and at ``cgroup_root/unified``
    (hybrid layout), and for v1 (``cpu.cfs_quota_us``, ``cpu.cfs_period_us``) under
    ``cgroup_root/cpu``, ``cpu,cpuacct`` or ``cpuacct,cpu``."""
    root = Path(cgroup_root)
    v2_path, v1_path = _cgroup_paths(Path(proc_cgroup))
    found: list[float] = []
    for base in (root, root / "unified"):
        if (base / "cgroup.controllers").exists():
            found += [q for d in _ancestors(base, v2_path) if (q := _quota_v2(d)) is not None]
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / name
        if base.is_dir():
            found += [q for d in _ancestors(base, v1_path) if (q := _quota_v1(d)) is not None]
    return min(found) if found else None


def _positive_int(value: str | None) -> int | None:
    """``"3"`` -> 3; ``"4,2"`` (OpenMP's nested list) -> 4; anything else -> None."""
    if value is None:
        return None
    head = value.strip().split(",")[0].strip()
    try:
        n = int(head)
    except ValueError:
        return None
    return n if n > 0 else None


def choose_threads(environ: Mapping[str, str] | None = None, *,
                   affinity: int | None | str = "detect",
                   cgroup_quota: float | None | str = "detect",
                   cgroup_root: str | Path = "/sys/fs/cgroup",
                   proc_cgroup: str | Path = "/proc/self/cgroup") -> ThreadChoice:
    """The intra-op thread count for this process (module docstring); changes nothing.

    ``affinity`` / ``cgroup_quota`` default to what this process has; pass numbers (or None)
    to decide for other limits."""
    env = os.environ if environ is None else environ
    aff = affinity_cpus() if affinity == "detect" else affinity
    quota = (cgroup_cpu_quota(cgroup_root, proc_cgroup) if cgroup_quota == "detect"
             else cgroup_quota)
    ours = env.get(ENV_AUTO_MARK)
    for name in (ENV_THREADS, "OMP_NUM_THREADS"):
        n = _positive_int(env.get(name))
        if name == "OMP_NUM_THREADS" and ours is not None and env.get(name) == ours:
            continue  # exported by configure_threads in a parent process, not the user's
        if n is not None:
            return ThreadChoice(n, aff, quota, override=f"{name}={env[name]}")
    limits = [x for x in (aff, None if quota is None else max(1, math.floor(quota + 1e-9)))
              if x is not None]
    n = min(limits) if limits else (os.cpu_count() or 1)
    return ThreadChoice(max(1, int(n)), aff, quota)


_CURRENT: ThreadChoice | None = None


def configure_threads(environ: MutableMapping[str, str] | None = None, *,
                      set_torch: bool | None = None, wait_policy: bool = True,
                      **limits) -> ThreadChoice:
    """Choose the thread count (:func:`choose_threads`) and apply it, with the OpenMP
    wait-policy defaults (unless ``wait_policy=False``), as the module docstring says.

    ``set_torch``: None (default) applies the count through the environment if torch is not
    imported yet, else through ``torch.set_num_threads``; True imports torch and sets it;
    False only chooses and sets the environment. Call it before ``import torch`` for the wait
    policy to take effect (recorded in :attr:`ThreadChoice.applied_before_torch`). Returns the
    choice and keeps it for :func:`current_choice`."""
    global _CURRENT
    env = os.environ if environ is None else environ
    choice = choose_threads(env, **limits)
    before = "torch" not in sys.modules
    defaults = ({k: v for k, v in WAIT_POLICY_DEFAULTS.items() if k not in env}
                if wait_policy else {})
    user_omp = "OMP_NUM_THREADS" in env and env.get(ENV_AUTO_MARK) != env["OMP_NUM_THREADS"]
    if not user_omp:
        defaults.update({"OMP_NUM_THREADS": str(choice.threads),
                         ENV_AUTO_MARK: str(choice.threads)})
    env.update(defaults)
    interop = None
    if set_torch or (set_torch is None and not before):
        import torch

        torch.set_num_threads(choice.threads)
        try:
            torch.set_num_interop_threads(1)
            interop = 1
        except RuntimeError:  # already set, or inter-op work has started
            pass
    choice = ThreadChoice(choice.threads, choice.affinity, choice.cgroup_quota,
                          override=choice.override, interop_threads=interop,
                          env_defaults=defaults, applied_before_torch=before)
    _CURRENT = choice
    return choice


def current_choice() -> ThreadChoice | None:
    """What :func:`configure_threads` chose in this process (None if it was not called)."""
    return _CURRENT


def log_line() -> str:
    """The line training logs once: the choice and what it came from, e.g.
    ``threads: 2 (affinity 2, cgroup quota none, override none)``; says so if torch now uses
    another count, or if :func:`configure_threads` was not called in this process."""
    import torch

    n = torch.get_num_threads()
    if _CURRENT is None:
        return (f"threads: {n} (torch's setting; levelset_rcnn.threads would choose "
                f"{choose_threads().describe()[len('threads: '):]})")
    if n != _CURRENT.threads:
        return f"{_CURRENT.describe()}; torch now uses {n}"
    return _CURRENT.describe()
