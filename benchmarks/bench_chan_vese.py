"""Benchmark of the level-set core: the fused deep Chan-Vese layer against the direct,
line-by-line formula of eq. 7-9 (:mod:`levelset_rcnn.levelset.reference`), and classic
Chan-Vese against scikit-image.

The reference is eq. 8 as printed (``step_bound=None``); ours adds the curvature floor of
:mod:`levelset_rcnn.levelset.chan_vese` (two elementwise operations per step).

Every figure that matters is a ratio against a baseline measured in the same run (these
machines are shared and noisy). Prints a table and, with ``--json PATH``, writes the numbers.
On a machine that other jobs load, run it with ``OMP_WAIT_POLICY=PASSIVE`` (what the CLI
sets, see :mod:`levelset_rcnn.threads`): with OpenMP's default spinning at barriers our
multi-threaded side loses far more than single-threaded scikit-image (measured at load 9 on
2 cores: classic 6x with the default policy, 25x with PASSIVE). The header prints the policy
and the load average.

    python benchmarks/bench_chan_vese.py --json bench_results/chan_vese.json
    python benchmarks/bench_chan_vese.py --only-classic      # the classic comparison alone
    python benchmarks/bench_chan_vese.py --skip-classic      # the layer rows alone
    python benchmarks/bench_chan_vese.py --device cuda      # on a GPU machine

Keys written: ``forward_speedup`` (no-grad forward), ``forward_train_speedup`` (forward
recording for backward), ``forward_backward_speedup``, ``peak_memory_ratio`` (extra memory of
one training forward+backward above the inputs, ours over reference, each measured after a
one-RoI warm-up call in its process; ``peak_memory_ratio_cold`` is the same for the first
call of a fresh process, which also counts the libraries' one-time lazy loading;
``state_memory_ratio`` leaves out the gradient of the features, which both return and which
alone is ``C M^2`` floats per RoI),
``classic_speedup_vs_skimage`` (images per second, 64 of scikit-image's sample images at
256 x 256 by default, scikit-image's parameters and stopping rule) with
``classic_max_pixel_disagreement`` (largest fraction of an image's pixels on which our
segmentation differs from scikit-image's) and ``classic_same_iterations`` (images that ran as
many iterations as with scikit-image), plus the raw times, the traffic model and the
achieved bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
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


def memory_probe(impl_name: str, R: int, C: int, M: int, N: int, device: str, *,
                 warm: bool = True) -> dict:
    """Extra memory (bytes) of one forward+backward above the inputs, for one implementation.

    On the CPU, run in a fresh process: once the inputs exist, the kernel's high-water mark of
    the resident set is reset (``/proc/self/clear_refs``), and the step's peak is that mark
    (``VmHWM``) minus the resident size before the step. On CUDA, ``max_memory_allocated``
    minus the allocation before the step. With ``warm``, one forward+backward of a single
    RoI runs first, so that the pages of library code and buffers that the process loads once
    on first use (tens of MB on the CPU) are not counted as the step's memory.
    """
    if warm:
        train_fn(_impl(impl_name), *make_inputs(1, C, M, N, device, seed=1))()
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


def _memory_in_subprocess(impl_name: str, args, *, warm: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--memory-probe", impl_name, "--rois", str(args.rois),
           "--channels", str(args.channels), "--size", str(args.size), "--steps",
           str(args.steps), "--device", args.device, "--threads", str(args.threads)]
    if not warm:
        cmd.append("--memory-probe-cold")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


#: scikit-image's bundled sample images used for the classic benchmark (grey; colour ones
#: converted with rgb2gray), each resized to the benchmark's size.
CLASSIC_SAMPLES = ("camera", "coins", "moon", "page", "text", "astronaut", "coffee", "chelsea",
                   "brick", "grass", "gravel", "rocket", "horse", "hubble_deep_field",
                   "immunohistochemistry", "cell")
#: The eight symmetries of the square: a batch larger than the sample list takes the samples
#: again, mirrored or rotated (a different problem for the checkerboard initialisation).
_SYMMETRIES = (lambda a: a, np.fliplr, np.flipud, np.transpose, np.rot90,
               lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3),
               lambda a: np.rot90(np.fliplr(a)))


def classic_images(n: int, size: int) -> np.ndarray:
    """``(n, size, size)`` float64 in [0, 1]: the samples, then their symmetric images."""
    from skimage import color, data
    from skimage.transform import resize

    base = []
    for name in CLASSIC_SAMPLES:
        img = getattr(data, name)()
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3])
        base.append(resize(img.astype(np.float64), (size, size), anti_aliasing=True))
    out = [_SYMMETRIES[(k // len(base)) % len(_SYMMETRIES)](base[k % len(base)])
           for k in range(n)]
    return np.ascontiguousarray(np.stack(out))


def bench_classic(args) -> dict:
    """Classic Chan-Vese on a batch of scikit-image's sample images, ours (one batched call)
    against :func:`skimage.segmentation.chan_vese` (image by image, float64 as it computes
    for float64 and integer images), both with scikit-image's parameters and stopping rule.

    Times are the medians of ``--classic-repeats`` runs, ours and scikit-image's alternately,
    after one warm-up call of ours (which compiles its step). The segmentations are compared
    pixel by pixel with scikit-image's float64 ones, and so are the iterations each image
    ran. With extras: scikit-image on float32 images (it then computes in float32) and our
    eager (uncompiled) step, once each."""
    from skimage.segmentation import chan_vese as sk_chan_vese

    B, S = args.classic_images, args.classic_size
    iters, tol = args.classic_iters, args.classic_tol
    images = classic_images(B, S)
    x32 = torch.from_numpy(images.astype(np.float32)).to(args.device)

    def ours(compile=True):
        _, mask, n = chan_vese(x32, tol=tol, num_iters=iters, compile=compile,
                               return_num_iters=True)
        _sync(args.device)
        return mask[:, 0].cpu().numpy(), n.tolist()

    def skimage_all(dtype=np.float64):
        segs, ns = [], []
        for im in images:
            seg, _, energies = sk_chan_vese(im.astype(dtype), tol=tol, max_num_iter=iters,
                                            extended_output=True)
            segs.append(seg)
            ns.append(len(energies))
        return np.stack(segs), ns

    def timed(fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        return time.perf_counter() - start, out

    t_warm, _ = timed(ours)
    t_sk, t_ours = [], []
    for _ in range(max(1, args.classic_repeats)):
        t, (ref, ref_n) = timed(skimage_all)
        t_sk.append(t)
        t, (mask, n) = timed(ours)
        t_ours.append(t)
    t_sk, t_ours = statistics.median(t_sk), statistics.median(t_ours)

    def agreement(prefix: str, seg: np.ndarray, ns: list[int]) -> dict:
        diff = (seg != ref).reshape(B, -1).mean(axis=1)
        return {f"{prefix}_max_pixel_disagreement": float(diff.max()),
                f"{prefix}_mean_pixel_disagreement": float(diff.mean()),
                f"{prefix}_same_iterations": int(sum(a == b for a, b in zip(ns, ref_n,
                                                                            strict=True))),
                f"{prefix}_max_iteration_difference": max(abs(a - b) for a, b in zip(
                    ns, ref_n, strict=True))}

    res = {"classic_images": B, "classic_size": S, "classic_iters": iters, "classic_tol": tol,
           "classic_samples": list(CLASSIC_SAMPLES), "classic_total_iterations": sum(ref_n),
           "classic_warmup_s": t_warm,
           "classic_ours_s": t_ours, "classic_skimage_s": t_sk,
           "classic_ours_img_per_s": B / t_ours, "classic_skimage_img_per_s": B / t_sk,
           "classic_speedup_vs_skimage": t_sk / t_ours,
           **agreement("classic", mask, n)}
    if not args.skip_classic_extras:
        t32, (seg32, n32) = timed(skimage_all, np.float32)
        t_eager, (seg_e, n_e) = timed(ours, False)
        res.update({"classic_skimage_float32_s": t32,
                    "classic_speedup_vs_skimage_float32": t32 / t_ours,
                    **agreement("classic_skimage_float32", seg32, n32),
                    "classic_eager_s": t_eager,
                    "classic_eager_speedup_vs_skimage": t_sk / t_eager,
                    **agreement("classic_eager", seg_e, n_e)})
    return res


def print_classic(res: dict, threads: int) -> None:
    B = res["classic_images"]
    print(f"\nClassic Chan-Vese, {B} images {res['classic_size']}x{res['classic_size']} "
          f"(scikit-image's samples, mirrored / rotated), tol {res['classic_tol']:g}, at most "
          f"{res['classic_iters']} iterations ({res['classic_total_iterations']} in all); ours "
          f"float32, {threads} threads (OMP_WAIT_POLICY {res['omp_wait_policy'] or 'unset'}), "
          "scikit-image single-threaded; load average "
          + " -> ".join(f"{la[0]:.1f}" for la in (res["loadavg_at_start"], res["loadavg_at_end"]))
          + " (other users' jobs included)")
    print(f"{'':30}{'time':>9}{'images/s':>10}{'speedup':>9}  {'pixels differing':>17}"
          f"  {'same iters':>10}  target")
    print(f"{'':30}{'':>9}{'':>10}{'':>9}  {'max / mean':>17}")

    def row(label, t, prefix, target=""):
        if prefix is None:
            agree, same = f"{'(reference)':>17}", f"{'':>10}"
        else:
            agree = (f"{res[prefix + '_max_pixel_disagreement']:>8.2e} / "
                     f"{res[prefix + '_mean_pixel_disagreement']:.0e}")
            same = f"{res[prefix + '_same_iterations']:>5}/{B:<4}"
        print(f"{label:30}{t:>8.2f}s{B / t:>10.1f}{res['classic_skimage_s'] / t:>8.2f}x  "
              f"{agree:>17}  {same:>10}  {target}")

    row("scikit-image, float64", res["classic_skimage_s"], None)
    if "classic_skimage_float32_s" in res:
        row("scikit-image, float32 images", res["classic_skimage_float32_s"],
            "classic_skimage_float32")
    row("ours (compiled step)", res["classic_ours_s"], "classic", ">= 20x, <= 1% pixels")
    if "classic_eager_s" in res:
        row("ours (eager step, fallback)", res["classic_eager_s"], "classic_eager")
    if "classic_speedup_vs_skimage_float32" in res:
        print(f"ours vs scikit-image on float32 images: "
              f"{res['classic_speedup_vs_skimage_float32']:.2f}x; warm-up call of ours "
              f"(compiles the step): {res['classic_warmup_s']:.1f} s")


def bench_layer(args) -> dict:
    """The deep Chan-Vese layer against the reference: times, memory, traffic."""
    R, C, M, N, dev = args.rois, args.channels, args.size, args.steps, args.device
    phi0, feats, hp = make_inputs(R, C, M, N, dev)
    f_bytes = feats.numel() * feats.element_size()
    res: dict = {"R": R, "C": C, "M": M, "N": N, "feature_bytes": f_bytes}
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
        for suffix, warm in (("", True), ("_cold", False)):
            if not warm and dev != "cpu":
                continue  # CUDA's allocator counts only tensors: nothing loads lazily there
            mem = {k: _memory_in_subprocess(k, args, warm=warm) if dev == "cpu" else
                   memory_probe(k, R, C, M, N, dev) for k in ("reference", "ours")}
            ref_b, ours_b = mem["reference"]["extra_bytes"], mem["ours"]["extra_bytes"]
            res[f"reference_extra_bytes{suffix}"] = ref_b
            res[f"ours_extra_bytes{suffix}"] = ours_b
            res[f"peak_memory_ratio{suffix}"] = ours_b / ref_b
        # Both return the gradient of F (f_bytes); what each keeps and allocates besides:
        res["state_memory_ratio"] = ((res["ours_extra_bytes"] - f_bytes)
                                     / (res["reference_extra_bytes"] - f_bytes))

    return res


def print_layer(res: dict, args) -> None:
    R, C, M, N, dev = args.rois, args.channels, args.size, args.steps, args.device
    f_bytes = res["feature_bytes"]
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
              f"  <= 0.10x   (F itself: {f_bytes * mb:.0f} MB)")
        if "peak_memory_ratio_cold" in res:
            print(f"{'  first call, cold':24}{res['reference_extra_bytes_cold'] * mb:>10.0f}MB"
                  f"{res['ours_extra_bytes_cold'] * mb:>10.0f}MB"
                  f"{res['peak_memory_ratio_cold']:>9.3f}x  (+ one-time library loading)")
        print(f"{'  without dF':24}{(res['reference_extra_bytes'] - f_bytes) * mb:>10.0f}MB"
              f"{(res['ours_extra_bytes'] - f_bytes) * mb:>10.0f}MB"
              f"{res['state_memory_ratio']:>9.3f}x  (dF, returned by both, alone is "
              f"{f_bytes / res['reference_extra_bytes']:.3f}x)")
    print(f"traffic: forward must read F {2 * N + 1}x = {res['forward_min_bytes'] * mb:.0f} MB; "
          f"achieved {res['forward_achieved_gbs']:.1f} GB/s vs copy {res['copy_bandwidth_gbs']:.1f}"
          " GB/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rois", type=int, default=100)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classic-images", type=int, default=64)
    ap.add_argument("--classic-size", type=int, default=256)
    ap.add_argument("--classic-iters", type=int, default=500,
                    help="most iterations per image (scikit-image's max_num_iter)")
    ap.add_argument("--classic-tol", type=float, default=1e-3,
                    help="stopping tolerance (scikit-image's default; 0 runs every iteration)")
    ap.add_argument("--classic-repeats", type=int, default=1)
    ap.add_argument("--skip-classic-extras", action="store_true",
                    help="skip the scikit-image float32 and eager rows")
    ap.add_argument("--only-classic", action="store_true",
                    help="run only the classic Chan-Vese comparison")
    ap.add_argument("--skip-classic", action="store_true",
                    help="run only the deep Chan-Vese layer rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-probe", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--memory-probe-cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    R, C, M, N, dev = args.rois, args.channels, args.size, args.steps, args.device

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, R, C, M, N, dev,
                                      warm=not args.memory_probe_cold)))
        return 0

    res: dict = {"device": dev, "device_name": torch.cuda.get_device_name() if
                 dev.startswith("cuda") else platform.processor() or platform.machine(),
                 "threads": args.threads, "torch": torch.__version__,
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                 "loadavg_at_start": os.getloadavg()}
    if not args.only_classic:
        res.update(bench_layer(args))
    if not args.skip_classic:
        res.update(bench_classic(args))
    if not args.only_classic:
        print_layer(res, args)
    res["loadavg_at_end"] = os.getloadavg()
    if not args.skip_classic:
        print_classic(res, args.threads)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
