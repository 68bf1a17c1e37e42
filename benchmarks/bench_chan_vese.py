"""Benchmark of the level-set core: the fused deep Chan-Vese layer against the direct,
line-by-line formula of eq. 7-9, and classic Chan-Vese against scikit-image.

Every figure that matters is a ratio against a baseline measured in the same run (these
machines are shared and noisy). Prints a table and, with ``--json PATH``, writes the numbers.

    python benchmarks/bench_chan_vese.py --json bench_results/chan_vese.json
    python benchmarks/bench_chan_vese.py --device cuda      # on a GPU machine

Keys written: ``forward_speedup`` (no-grad forward), ``forward_train_speedup`` (forward
recording for backward), ``forward_backward_speedup``, ``peak_memory_ratio`` (extra memory of
one training forward+backward above the inputs, ours over reference),
``classic_speedup_vs_skimage`` (images per second), plus the raw times, the traffic model and
the achieved bandwidth.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from levelset_rcnn.levelset import chan_vese, chan_vese_evolve
from levelset_rcnn.levelset.reference import ref_chan_vese


def make_inputs(R: int, C: int, M: int, N: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    phi0 = torch.tanh(torch.randn(R, 1, M, M, generator=g)).to(device)
    feats = torch.relu(torch.randn(R, C, M, M, generator=g)).to(device)
    hp = {
        "lambda1": (0.5 + torch.rand(R, generator=g)).to(device),
        "lambda2": (0.5 + torch.rand(R, generator=g)).to(device),
        "mu": (0.5 + torch.rand(R, generator=g)).to(device),
        "eps": (0.2 + torch.rand(R, N, generator=g)).to(device),
        "dt": (0.5 + torch.rand(R, N, generator=g)).to(device),
    }
    return phi0, feats, hp


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], device: str,
              repeats: int) -> tuple[float, float]:
    """Median times of two functions measured alternately (a, b, a, b, ...), so that a change
    in the machine's load during the run affects both alike."""
    fn_a(), fn_b()
    _sync(device)
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            start = time.perf_counter()
            fn()
            _sync(device)
            acc.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def _impl(name: str):
    return chan_vese_evolve if name == "ours" else ref_chan_vese


def forward_fn(impl, phi0, feats, hp, *, grad: bool):
    """The forward pass alone; with ``grad`` it records what backward needs, as in training."""
    if grad:
        feats = feats.clone().requires_grad_(True)

    def run():
        with torch.set_grad_enabled(grad):
            return impl(phi0, feats, **hp)

    return run


def train_fn(impl, phi0, feats, hp):
    leaves = [t.clone().requires_grad_(True) for t in (phi0, feats, *hp.values())]
    p, f, l1, l2, mu, eps, dt = leaves

    def run():
        out = impl(p, f, lambda1=l1, lambda2=l2, mu=mu, eps=eps, dt=dt)
        torch.autograd.grad(out.square().mean(), leaves)

    return run


def memory_probe(impl_name: str, R: int, C: int, M: int, N: int, device: str) -> dict:
    """Extra memory (bytes) of one forward+backward above the inputs, for one implementation.

    On the CPU, run in a fresh process: once the inputs exist, the kernel's high-water mark of
    the resident set is reset (``/proc/self/clear_refs``), and the step's peak is that mark
    (``VmHWM``) minus the resident size before the step. On CUDA, ``max_memory_allocated``
    minus the allocation before the step.
    """
    phi0, feats, hp = make_inputs(R, C, M, N, device)
    step = train_fn(_impl(impl_name), phi0, feats, hp)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return {"extra_bytes": torch.cuda.max_memory_allocated() - base, "input_bytes": base}
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS to the current RSS
    base = _status_kb("VmRSS")
    step()
    return {"extra_bytes": (_status_kb("VmHWM") - base) * 1024,
            "input_bytes": feats.numel() * feats.element_size()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _memory_in_subprocess(impl_name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-probe", impl_name, "--rois", str(args.rois),
           "--channels", str(args.channels), "--size", str(args.size), "--steps",
           str(args.steps), "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_classic(args) -> dict:
    from skimage.segmentation import chan_vese as sk_chan_vese

    rng = np.random.default_rng(0)
    B, S, iters = args.classic_images, 112, args.classic_iters
    images = rng.random((B, S, S)).astype(np.float32)
    images[:, 30:80, 25:90] += 0.5  # a region to find, under strong noise

    def ours():
        x = torch.from_numpy(images).to(args.device)
        _, mask = chan_vese(x, num_iters=iters)
        return mask.cpu()

    def skimage_all():
        for im in images:
            # tol=0: run exactly `iters` iterations, like ours
            sk_chan_vese(im.astype(np.float64), tol=0.0, max_num_iter=iters)

    t_sk, t_ours = time_pair(skimage_all, ours, args.device, max(1, args.repeats // 2))
    return {"classic_images": B, "classic_size": S, "classic_iters": iters,
            "classic_ours_s": t_ours, "classic_skimage_s": t_sk,
            "classic_ours_img_per_s": B / t_ours, "classic_skimage_img_per_s": B / t_sk,
            "classic_speedup_vs_skimage": t_sk / t_ours}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rois", type=int, default=100)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classic-images", type=int, default=64)
    ap.add_argument("--classic-iters", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-probe", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    R, C, M, N, dev = args.rois, args.channels, args.size, args.steps, args.device

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, R, C, M, N, dev)))
        return 0

    phi0, feats, hp = make_inputs(R, C, M, N, dev)
    f_bytes = feats.numel() * feats.element_size()
    res: dict = {"device": dev, "device_name": torch.cuda.get_device_name() if
                 dev.startswith("cuda") else platform.processor() or platform.machine(),
                 "threads": args.threads, "torch": torch.__version__,
                 "R": R, "C": C, "M": M, "N": N, "feature_bytes": f_bytes}
    for key, make in (
        ("forward", lambda impl: forward_fn(impl, phi0, feats, hp, grad=False)),
        ("forward_train", lambda impl: forward_fn(impl, phi0, feats, hp, grad=True)),
        ("forward_backward", lambda impl: train_fn(impl, phi0, feats, hp)),
    ):
        res[f"reference_{key}_s"], res[f"ours_{key}_s"] = time_pair(
            make(ref_chan_vese), make(chan_vese_evolve), dev, args.repeats
        )
    for key in ("forward", "forward_train", "forward_backward"):
        res[f"{key}_speedup"] = res[f"reference_{key}_s"] / res[f"ours_{key}_s"]

    # Traffic model: a step must read F at least twice (F^T H, then F.w); the forward also
    # reads it once for sum(F) and ||F - m||^2. Compare with a plain copy of F.
    dst = torch.empty_like(feats)
    dst.copy_(feats)  # touch the pages once: measure bandwidth, not page faults
    copy_s = timeit(lambda: dst.copy_(feats), dev, args.repeats)
    res["copy_bandwidth_gbs"] = 2 * f_bytes / copy_s / 1e9
    res["forward_min_bytes"] = (2 * N + 1) * f_bytes
    res["forward_achieved_gbs"] = res["forward_min_bytes"] / res["ours_forward_s"] / 1e9

    if not args.skip_memory:
        mem = {k: _memory_in_subprocess(k, args) if dev == "cpu" else
               memory_probe(k, R, C, M, N, dev) for k in ("reference", "ours")}
        res["reference_extra_bytes"] = mem["reference"]["extra_bytes"]
        res["ours_extra_bytes"] = mem["ours"]["extra_bytes"]
        res["peak_memory_ratio"] = res["ours_extra_bytes"] / res["reference_extra_bytes"]

    res.update(bench_classic(args))

    mb = 1 / 2**20
    rows = [
        ("forward (no grad)", res["reference_forward_s"], res["ours_forward_s"],
         res["forward_speedup"], ">= 3x"),
        ("forward (recording)", res["reference_forward_train_s"], res["ours_forward_train_s"],
         res["forward_train_speedup"], ""),
        ("forward + backward", res["reference_forward_backward_s"],
         res["ours_forward_backward_s"], res["forward_backward_speedup"], ">= 2.5x"),
    ]
    print(f"\nChan-Vese layer, R={R} C={C} M={M} N={N}, float32, {dev} "
          f"({res['device_name']}, {args.threads} threads), torch {torch.__version__}")
    print(f"{'':24}{'reference':>12}{'ours':>12}{'speedup':>10}  target")
    for label, ref, ours, sp, target in rows:
        print(f"{label:24}{ref * 1e3:>10.1f}ms{ours * 1e3:>10.1f}ms{sp:>9.2f}x  {target}")
    if "peak_memory_ratio" in res:
        print(f"{'train extra memory':24}{res['reference_extra_bytes'] * mb:>10.0f}MB"
              f"{res['ours_extra_bytes'] * mb:>10.0f}MB{res['peak_memory_ratio']:>9.3f}x"
              f"  <= 0.25x   (F itself: {f_bytes * mb:.0f} MB)")
    print(f"traffic: forward must read F {2 * N + 1}x = {res['forward_min_bytes'] * mb:.0f} MB; "
          f"achieved {res['forward_achieved_gbs']:.1f} GB/s vs copy {res['copy_bandwidth_gbs']:.1f}"
          " GB/s")
    print(f"\nClassic Chan-Vese, {res['classic_images']} images {res['classic_size']}x"
          f"{res['classic_size']}, {res['classic_iters']} iterations")
    print(f"{'':24}{'skimage':>12}{'ours':>12}{'speedup':>10}  target")
    print(f"{'images / s':24}{res['classic_skimage_img_per_s']:>12.1f}"
          f"{res['classic_ours_img_per_s']:>12.1f}{res['classic_speedup_vs_skimage']:>9.2f}x"
          "  >= 3x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
