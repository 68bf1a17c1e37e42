"""First thing to run on a lent GPU: CUDA correctness against the CPU, then the paper's timings.

Nothing in this project had run on CUDA before this script. One run (under 8 minutes on one
GPU) prints a PASS / FAIL line per correctness check and a summary table, and writes every
number to ``--json``:

Correctness, the device against float64 references computed on the CPU (the float64 line of a
check is the device's own float64 result, so it isolates the device's kernels; the float32
line adds rounding; the AMP line adds half precision). TF32 is switched off for these checks
(cuDNN enables it by default for convolutions) and restored for the timings:

* ``cv_layer``: :class:`~levelset_rcnn.levelset.ChanVese` on R=50 RoIs, C=64, 112x112, N=3:
  ``phi_N`` and the gradients of ``phi0``, the features and every hyperparameter, in float64,
  float32, and float32 on half-precision features under autocast; and the no-grad forward
  (a different code path);
* ``cv_upsampled``: :class:`~levelset_rcnn.levelset.UpsampledChanVese` (28x28 -> 112x112),
  the same quantities (but the no-grad path, which it does not have);
* ``tsdf``: :func:`~levelset_rcnn.levelset.masks_to_tsdf` on random masks (blobs, noise,
  empty and full masks, large 512x1024 ellipses; bool / uint8 / float inputs; truncations 12,
  3.5 and 300): an exact match is expected (tolerance 1e-6), and ``tsdf > 0`` must give the
  masks back;
* ``classic``: :func:`~levelset_rcnn.levelset.chan_vese` on four 256x256 images (scikit-image's
  samples): the share of pixels whose segmentation differs (at most 1%) and the iterations,
  eager in float32 and float64; ``classic_compiled``: the compiled (``torch.compile``) step
  in float32, run last (a cold compile can take a minute), not with ``--quick``;
* ``model``: a small LevelSet R-CNN (ResNet-18 FPN, widths of the tests' ``TINY`` config) with
  the same weights everywhere, made deterministic (no sampling of anchors or RoIs, no NMS, no
  top-k cut in the RPN) so that the CPU and the device see the same proposals: in training
  mode every loss and the gradient norm of each part; in eval mode the detections, matched
  by label and box (IoU >= 0.9, robust to near-ties at the top-k cut), their boxes, scores,
  level sets and masks (IoU). In float32 and under ``torch.autocast`` (float16 on CUDA).

Every check also requires all its outputs to be finite.

Performance (on the device; ratios against Mask R-CNN in the same run, models interleaved,
CUDA-synchronised, median of ``--repeats`` after ``--warmup``):

* ``paper_timing``: the paper's setting, ResNet-50 FPN on one 1024x2048 image with exactly
  100 detections (score threshold 0 and the cap, random weights shared by all models so that
  detections are identical): Mask R-CNN (:func:`~levelset_rcnn.modeling.mask_rcnn`),
  LevelSet R-CNN with the builder's defaults (``cv_features="learned"``) and with
  ``cv_features="interpolated"``; in float32 and under autocast; and the peak memory
  (``torch.cuda.max_memory_allocated``) of one eval forward. The paper: 182 / 145 ms =
  1.255x on a GTX 1080 Ti.
* ``train_step``: forward, backward and SGD step on 2 images of 1024x2048 with 15 ground-truth
  ellipses each, with AMP and GradScaler as the recipes' trainer does, 200 jittered
  ground-truth boxes added to each image's proposals (as ``bench_overhead.py``: a trained
  RPN's positives); its peak memory.
* ``bandwidth``: the no-grad forward of ``ChanVese`` on (R=100, C=64, 112, 112) float32
  features against a device-to-device copy of the same tensor
  (``torch.empty_like(x).copy_(x)``). Bytes the forward must move: the features read twice
  per step for N=3 steps, plus each step's level set read and written. Target: >= 50% of the
  copy's bandwidth.

All ResNet-50 models are built as the recipes build them from ImageNet weights (frozen
BatchNorm, three trainable stages), from a random ResNet-50 state dict saved to a temporary
file: no download.

Usage::

    python benchmarks/gpu_check.py --json bench_results/gpu_check.json
    python benchmarks/gpu_check.py --quick                  # smoke run, small sizes
    python benchmarks/gpu_check.py --sections model,paper_timing
    python benchmarks/gpu_check.py --device cpu --quick     # dry run of the checks on the CPU

Without CUDA (and without ``--device cpu``) it prints that it skipped and exits 0 (the JSON
then holds ``{"skipped": "no CUDA device"}``). ``--device cpu`` runs everything on the CPU,
comparing CPU float32 (and bfloat16 autocast) against CPU float64: a test of the comparison
code, not of a GPU. Each section is wrapped: an exception prints FAIL for that section and the
others still run; the JSON is rewritten after every section (a run cut short by ``timeout``
keeps what finished) and sections that would start after ``--budget`` seconds are skipped.
Exit status: 0 when every check passed, 1 when a correctness check failed or a correctness
section raised, 2 when only a performance section raised (missed performance targets are
reported, not failures).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from levelset_rcnn.levelset import ChanVese, UpsampledChanVese, chan_vese, masks_to_tsdf
from levelset_rcnn.modeling import levelset_rcnn, load_maskrcnn_weights, mask_rcnn

CORRECTNESS = ("cv_layer", "cv_upsampled", "tsdf", "classic", "model", "classic_compiled")
PERFORMANCE = ("paper_timing", "train_step", "bandwidth")
#: The order they run in: the compiled classic step last (a cold compile is slow).
SECTIONS = CORRECTNESS[:-1] + PERFORMANCE + CORRECTNESS[-1:]
#: The paper's timing (section 5): LevelSet R-CNN 182 ms, Mask R-CNN 145 ms, GTX 1080 Ti.
PAPER_MS = {"levelset": 182.0, "maskrcnn": 145.0}
BANDWIDTH_TARGET = 0.5

# ------------------------------------------------------------------------------------------
# sizes


def sizes(quick: bool) -> dict[str, Any]:
    """Every problem size; ``--quick`` shrinks them for a smoke run (or a CPU dry run)."""
    if quick:
        return dict(
            cv=dict(R=6, C=16, M=32, N=3), up=dict(R=6, C=16, s=8, M=32, N=3),
            tsdf=dict(B=8, S=32, large=(2, 64, 128)),
            classic=dict(B=2, S=64, iters=100),
            model=dict(S=64, objects=1, radius=(8, 14), K=10, fg_iou=0.7),
            paper=dict(H=128, W=256, dets=10), train=dict(H=128, W=256, objects=3, jitter=20,
                                                          radius=(8, 30)),
            bandwidth=dict(R=10, C=16, M=56, N=3),
        )
    return dict(
        cv=dict(R=50, C=64, M=112, N=3), up=dict(R=50, C=64, s=28, M=112, N=3),
        tsdf=dict(B=64, S=112, large=(4, 512, 1024)),
        classic=dict(B=4, S=256, iters=500),
        model=dict(S=96, objects=3, radius=(10, 24), K=30, fg_iou=0.5),
        paper=dict(H=1024, W=2048, dets=100), train=dict(H=1024, W=2048, objects=15, jitter=200,
                                                         radius=(20, 120)),
        bandwidth=dict(R=100, C=64, M=112, N=3),
    )


# ------------------------------------------------------------------------------------------
# the record: checks, results, JSON


class Record:
    """Collects checks and results, prints each check as it is made, rewrites the JSON."""

    def __init__(self, json_path: Path | None, header: dict[str, Any]) -> None:
        self.json_path = json_path
        self.data: dict[str, Any] = {**header, "sections": {}, "checks": []}

    def check(self, section: str, name: str, passed: bool, metrics: dict[str, Any], *,
              tol: str, worst: str = "", baseline: bool = False) -> None:
        """One PASS / FAIL line (``baseline``: an INFO line, e.g. CPU float32 against CPU
        float64 as a yardstick for a device's float32 error; it is not a check)."""
        entry = {"section": section, "name": name, "passed": None if baseline else passed,
                 "tol": tol, **metrics}
        self.data["checks"].append(entry)
        status = "INFO" if baseline else ("PASS" if passed else "FAIL")
        max_abs, max_rel = metrics.get("max_abs"), metrics.get("max_rel")
        nums = (f"max abs {_fmt(max_abs)}  rel {_fmt(max_rel)}" if max_abs is not None
                else metrics.get("summary", ""))
        extra = f"  [{worst}]" if worst else ""
        print(f"{status:4}  {name:<50} {nums}  (tol {tol}){extra}", flush=True)

    def failed_checks(self) -> list[str]:
        return [c["name"] for c in self.data["checks"] if c["passed"] is False]

    def dump(self) -> None:
        if self.json_path is None:
            return
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.data, indent=2, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, torch.dtype | torch.device):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:9.2e}"
    return str(x)


# ------------------------------------------------------------------------------------------
# comparisons


def tensor_diff(out: Tensor, ref: Tensor) -> dict[str, Any]:
    """Max abs difference, the same relative to the reference's largest magnitude (robust to
    entries near zero), and whether ``out`` is finite."""
    a = out.detach().to("cpu", torch.float64)
    r = ref.detach().to("cpu", torch.float64)
    fin = bool(torch.isfinite(a).all())
    if a.shape != r.shape:
        return {"max_abs": math.inf, "max_rel": math.inf, "finite": fin,
                "shape": [list(a.shape), list(r.shape)]}
    if a.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "finite": fin}
    d = float((a - r).abs().max())
    scale = float(r.abs().max())
    rel = d / scale if scale > 0 else (0.0 if d == 0 else math.inf)
    return {"max_abs": d if math.isfinite(d) else math.inf,
            "max_rel": rel if math.isfinite(rel) else math.inf, "finite": fin}


def compare_named(rec: Record, section: str, name: str, outs: dict[str, Tensor],
                  refs: dict[str, Tensor], rtol: float, *, baseline: bool = False) -> bool:
    """One check over several named tensors: passes when all are finite and each one's
    max |out - ref| / max |ref| is at most ``rtol``."""
    per = {k: tensor_diff(outs[k], refs[k]) for k in refs}
    worst = max(per, key=lambda k: per[k]["max_rel"])
    finite = all(p["finite"] for p in per.values())
    passed = finite and all(p["max_rel"] <= rtol for p in per.values())
    note = f"worst: {worst}" + ("" if finite else "; NOT FINITE")
    rec.check(section, name, passed, {"max_abs": per[worst]["max_abs"],
                                      "max_rel": per[worst]["max_rel"], "finite": finite,
                                      "per_tensor": per},
              tol=f"rel {rtol:.0e}", worst=note, baseline=baseline)
    return passed


# ------------------------------------------------------------------------------------------
# devices


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, int] | None:
    """``max_memory_allocated`` during ``fn()`` and the same above what was allocated before
    (CUDA only; ``None`` on the CPU)."""
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_bytes": int(peak), "extra_bytes": int(peak - base)}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off (cuDNN convolutions default to TF32 on Ampere and later), restored after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


AMP_DTYPE = {"cuda": torch.float16, "cpu": torch.bfloat16}


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """The recipes' AMP: float16 autocast on CUDA; bfloat16 on the CPU (dry runs)."""
    return torch.autocast(device.type, dtype=AMP_DTYPE[device.type], enabled=enabled)


def candidates(device: torch.device, quick: bool) -> list[tuple[str, torch.device, torch.dtype,
                                                                 bool]]:
    """``(label, device, dtype, baseline)`` runs compared against the CPU float64 reference:
    the device in float64 and float32, and (on a GPU, full size) CPU float32 as a yardstick."""
    runs = [(f"{device.type} float64", device, torch.float64, False),
            (f"{device.type} float32", device, torch.float32, False)]
    if device.type != "cpu" and not quick:
        runs.append(("cpu float32", torch.device("cpu"), torch.float32, True))
    return runs


# ------------------------------------------------------------------------------------------
# correctness: the Chan-Vese layers

#: Relative tolerances (of max |ref|) of phi_N and the gradients against CPU float64; for the
#: half-precision dtypes (features under autocast, evolution in float32), dominated by the
#: features' gradient being returned in their dtype (2^-11 and 2^-8 relative rounding).
CV_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-3,
           torch.bfloat16: 1e-2}


def cv_inputs(R: int, C: int, M: int, N: int, *, feature_size: int | None = None, seed: int = 0
              ) -> tuple[dict[str, Tensor], Tensor]:
    """Level sets like the model's (a clamped signed distance to a random disk, plus noise),
    ReLU features (``feature_size`` x ``feature_size``, default ``M``), hyperparameters per RoI
    and per step as the hyperparameter head makes them, and the weights of the loss whose
    gradients are compared."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(M) + 0.5, torch.arange(M) + 0.5, indexing="ij")
    cy, cx = (M * (0.3 + 0.4 * torch.rand(2, R, 1, 1, generator=g))).unbind(0)
    r = M * (0.15 + 0.2 * torch.rand(R, 1, 1, generator=g))
    dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    phi0 = ((r - dist) / 12.0).clamp(-1, 1) + 0.05 * torch.randn(R, M, M, generator=g)
    s = feature_size or M
    inputs = {
        "phi0": phi0[:, None].double(),
        "features": torch.relu(torch.randn(R, C, s, s, generator=g)).double(),
        "lambda1": (0.5 + torch.rand(R, generator=g)).double(),
        "lambda2": (0.5 + torch.rand(R, generator=g)).double(),
        "mu": (0.5 + torch.rand(R, generator=g)).double(),
        "eps": (0.2 + torch.rand(R, N, generator=g)).double(),
        "dt": (0.5 + torch.rand(R, N, generator=g)).double(),
    }
    return inputs, torch.randn(R, 1, M, M, generator=g).double()


def run_cv(module: nn.Module, inputs: dict[str, Tensor], weights: Tensor, device: torch.device,
           dtype: torch.dtype, *, grad: bool, amp: bool = False) -> dict[str, Tensor]:
    """``phi_N`` and (with ``grad``) the gradients of ``sum(weights * phi_N)`` with respect to
    every input, as float64 on the CPU. ``amp``: under autocast, with half-precision features
    (as the model's feature head makes them there)."""
    leaves = {k: v.to(device, dtype, copy=True).requires_grad_(grad) for k, v in inputs.items()}
    if amp:
        leaves["features"] = inputs["features"].to(device, AMP_DTYPE[device.type],
                                                   copy=True).requires_grad_(grad)
    hp = {k: leaves[k] for k in ("lambda1", "lambda2", "mu", "eps", "dt")}
    with torch.set_grad_enabled(grad), autocast(device, enabled=amp):
        out = module(leaves["phi0"], leaves["features"], **hp)
    res = {"phi_N": out}
    if grad:
        grads = torch.autograd.grad((out * weights.to(out)).sum(), list(leaves.values()))
        res.update({f"grad {k}": g for k, g in zip(leaves, grads, strict=True)})
    sync(device)
    return {k: v.detach().to("cpu", torch.float64) for k, v in res.items()}


def check_cv_module(rec: Record, section: str, title: str, module: nn.Module,
                    inputs: dict[str, Tensor], weights: Tensor, device: torch.device,
                    quick: bool, *, no_grad_path: bool) -> None:
    cpu = torch.device("cpu")
    ref = run_cv(module, inputs, weights, cpu, torch.float64, grad=True)
    for label, dev, dtype, baseline in candidates(device, quick):
        out = run_cv(module, inputs, weights, dev, dtype, grad=True)
        compare_named(rec, section, f"{title} fwd+bwd {label}", out, ref, CV_RTOL[dtype],
                      baseline=baseline)
    # Autocast: the reference sees the same half-precision features (rounding them is the
    # feature head's business); what is left is the layer's float32 arithmetic and the
    # rounding of the features' gradient to their dtype.
    half = AMP_DTYPE[device.type]
    rounded = {**inputs, "features": inputs["features"].to(half).double()}
    ref_half = run_cv(module, rounded, weights, cpu, torch.float64, grad=True)
    out = run_cv(module, inputs, weights, device, torch.float32, grad=True, amp=True)
    compare_named(rec, section, f"{title} fwd+bwd {device.type} autocast "
                  f"{str(half).replace('torch.', '')} features", out, ref_half, CV_RTOL[half])
    if no_grad_path:
        out = run_cv(module, inputs, weights, device, torch.float32, grad=False)
        compare_named(rec, section, f"{title} no-grad fwd {device.type} float32", out,
                      {"phi_N": ref["phi_N"]}, CV_RTOL[torch.float32])


def section_cv_layer(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    c = sz["cv"]
    inputs, weights = cv_inputs(c["R"], c["C"], c["M"], c["N"], seed=args.seed)
    rec.data["cv_layer_shape"] = [c["R"], c["C"], c["M"], c["M"], c["N"]]
    check_cv_module(rec, "cv_layer", f"ChanVese R={c['R']} C={c['C']} {c['M']}^2",
                    ChanVese(num_steps=c["N"]), inputs, weights, device, args.quick,
                    no_grad_path=True)


def section_cv_upsampled(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    c = sz["up"]
    inputs, weights = cv_inputs(c["R"], c["C"], c["M"], c["N"], feature_size=c["s"],
                                seed=args.seed + 1)
    check_cv_module(rec, "cv_upsampled",
                    f"UpsampledChanVese R={c['R']} C={c['C']} {c['s']}->{c['M']}",
                    UpsampledChanVese(num_steps=c["N"]), inputs, weights, device, args.quick,
                    no_grad_path=False)


# ------------------------------------------------------------------------------------------
# correctness: TSDF targets


def tsdf_mask_sets(sz: dict[str, Any], seed: int) -> dict[str, Tensor]:
    """Bool masks: smooth blobs, pixel noise, empty and full masks, large ellipses."""
    g = torch.Generator().manual_seed(seed)
    B, S = sz["B"], sz["S"]
    coarse = torch.rand(B, 1, max(2, S // 8), max(2, S // 8), generator=g)
    blobs = torch.nn.functional.interpolate(coarse, size=(S, S), mode="bilinear",
                                            align_corners=False)[:, 0] > 0.5
    noise = torch.rand(max(2, B // 8), S, S, generator=g) > 0.5
    edge = torch.stack([torch.zeros(S, S, dtype=torch.bool), torch.ones(S, S, dtype=torch.bool)])
    nl, H, W = sz["large"]
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    large = []
    for _ in range(nl):
        ry, rx = (H * (0.05 + 0.3 * torch.rand(2, generator=g))).tolist()
        cy, cx = (H * torch.rand(1, generator=g)).item(), (W * torch.rand(1, generator=g)).item()
        large.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return {"blobs": blobs, "noise": noise, "empty+full": edge, "large": torch.stack(large)}


def section_tsdf(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    tol = 1e-6
    for set_name, masks in tsdf_mask_sets(sz["tsdf"], args.seed).items():
        truncs = (12.0, 3.5) if set_name == "large" else (12.0, 3.5, 300.0)
        for trunc in truncs:
            for as_type in ((torch.bool, torch.uint8, torch.float32) if trunc == 12.0
                            else (torch.bool,)):
                m = masks.to(as_type)
                ref = masks_to_tsdf(m, trunc)
                out = masks_to_tsdf(m.to(device), trunc)
                sync(device)
                out = out.cpu()
                d = tensor_diff(out, ref)
                exact = bool(torch.equal(out, ref))
                gives_masks = bool(torch.equal(out > 0, masks))
                in_range = bool((out.abs() <= 1).all())
                passed = d["finite"] and d["max_abs"] <= tol and gives_masks and in_range
                notes = ["exact" if exact else f"{int((out != ref).sum())} values differ"]
                if not gives_masks:
                    notes.append("tsdf > 0 != masks")
                if not in_range:
                    notes.append("outside [-1, 1]")
                rec.check("tsdf", f"masks_to_tsdf {set_name} {tuple(masks.shape)} T={trunc:g} "
                          f"{str(as_type).replace('torch.', '')}", passed,
                          {**d, "exact": exact, "gives_masks": gives_masks,
                           "in_range": in_range}, tol=f"abs {tol:.0e}", worst="; ".join(notes))


# ------------------------------------------------------------------------------------------
# correctness: classic Chan-Vese


def classic_images(B: int, S: int) -> tuple[Tensor, list[str]]:
    """``(B, S, S)`` float64: scikit-image's samples (grey), or smooth shapes on noise when
    scikit-image's data cannot be read."""
    names = ["camera", "coins", "moon", "astronaut", "coffee", "chelsea"][:B]
    try:
        import numpy as np
        from skimage import color, data
        from skimage.transform import resize

        out = []
        for n in names:
            img = getattr(data, n)()
            if img.ndim == 3:
                img = color.rgb2gray(img[..., :3])
            out.append(resize(img.astype(np.float64), (S, S), anti_aliasing=True))
        return torch.from_numpy(np.stack(out)), names
    except Exception as err:  # noqa: BLE001 - any failure: fall back to synthetic images
        print(f"      (scikit-image samples unavailable: {err}; synthetic images instead)")
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
        imgs = []
        for _ in range(B):
            cy, cx, r = (S * (0.3 + 0.4 * torch.rand(3, generator=g))).tolist()
            disk = (((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() <= 0.5 * r).double()
            imgs.append(0.3 + 0.4 * disk + 0.1 * torch.randn(S, S, generator=g).double())
        return torch.stack(imgs), [f"synthetic{i}" for i in range(B)]


_CLASSIC_REFERENCE: dict[tuple[int, int, int], tuple[Tensor, list[str], Tensor, Tensor]] = {}


def classic_reference(c: dict[str, Any]) -> tuple[Tensor, list[str], Tensor, Tensor]:
    """The images, their names, and the CPU float64 segmentations and iteration counts."""
    key = (c["B"], c["S"], c["iters"])
    if key not in _CLASSIC_REFERENCE:
        images, names = classic_images(c["B"], c["S"])
        _, ref_mask, ref_n = chan_vese(images, num_iters=c["iters"], compile=False,
                                       return_num_iters=True)
        _CLASSIC_REFERENCE[key] = images, names, ref_mask, ref_n
    return _CLASSIC_REFERENCE[key]


def section_classic(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    runs = [("eager float32", torch.float32, False), ("eager float64", torch.float64, False)]
    classic_runs(rec, "classic", device, sz["classic"], runs)


def section_classic_compiled(rec: Record, device: torch.device, sz: dict[str, Any], args
                             ) -> None:
    """The compiled step (``torch.compile``: Triton on CUDA, C++ on the CPU). Last, as a cold
    compile can take a minute; skipped with ``--quick``."""
    if args.quick:
        print("      skipped with --quick (compiling takes tens of seconds)")
        return
    classic_runs(rec, "classic_compiled", device, sz["classic"],
                 [("compiled float32", torch.float32, True)])


def classic_runs(rec: Record, section: str, device: torch.device, c: dict[str, Any],
                 runs: list[tuple[str, torch.dtype, bool]]) -> None:
    images, names, ref_mask, ref_n = classic_reference(c)
    rec.data["classic_images"] = names
    tol = 1.0  # percent of an image's pixels
    for label, dtype, compiled in runs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            phi, mask, n = chan_vese(images.to(device, dtype), num_iters=c["iters"],
                                     compile=compiled, return_num_iters=True)
            sync(device)
        per_image = 100.0 * (mask.cpu() != ref_mask).flatten(1).double().mean(1)
        same_iters = int((n.cpu() == ref_n).sum())
        finite = bool(torch.isfinite(phi).all())
        worst = float(per_image.max())
        passed = finite and worst <= tol
        fallback = [str(w.message) for w in caught if "compile" in str(w.message).lower()]
        note = f"iterations equal on {same_iters}/{len(names)}"
        if fallback:
            note += f"; compile fell back: {fallback[0][:80]}"
        if not finite:
            note += "; NOT FINITE"
        rec.check(section, f"chan_vese {len(names)}x{c['S']}^2 {device.type} {label}", passed,
                  {"summary": f"max {worst:.3f}% pixels differ", "max_pixel_percent": worst,
                   "pixel_percent": per_image.tolist(), "iterations": n.tolist(),
                   "reference_iterations": ref_n.tolist(), "finite": finite,
                   "compile_fallback": fallback},
                  tol=f"{tol:g}% pixels", worst=note)


# ------------------------------------------------------------------------------------------
# correctness: the whole model

#: Tolerances of the model checks, float32 (TF32 off) and autocast, against CPU float64.
MODEL_TOL = {
    "fp32": dict(loss=1e-3, grad=1e-3, box=1e-2, score=1e-4, tsdf=1e-3, mask_iou_min=0.99,
                 mask_iou_mean=0.999, matched=1.0),
    "amp": dict(loss=5e-2, grad=1e-1, box=1.0, score=2e-2, tsdf=0.1, mask_iou_min=0.5,
                mask_iou_mean=0.95, matched=0.9),
}
#: Parameter groups whose gradient norms are compared (prefix of the parameter name).
GRAD_GROUPS = {"backbone": "backbone.", "rpn": "rpn.", "box head": "roi_heads.box_",
               "mask trunk": "roi_heads.mask_head.", "mask branch": "roi_heads.mask_branch."}


def small_model_kwargs(m: dict[str, Any]) -> dict[str, Any]:
    """The tests' TINY widths (tests/modeling/common.py) on ResNet-18, made deterministic:
    every anchor is a proposal (no top-k, NMS threshold 1), every anchor and proposal is
    sampled (batch sizes above their number), no NMS among detections; the device and the
    CPU then differ only by arithmetic."""
    big = 10**6
    return dict(
        backbone="resnet18", weights_backbone=None, num_classes=9, fpn_channels=32,
        box_representation_size=64, mask_layers=(32, 32), predictor_channels=32,
        cv_channels=16, cv_hidden_channels=16, min_size=m["S"], max_size=m["S"],
        rpn_pre_nms_top_n_train=big, rpn_post_nms_top_n_train=big, rpn_pre_nms_top_n_test=big,
        rpn_post_nms_top_n_test=big, rpn_nms_thresh=1.0, rpn_batch_size_per_image=big,
        box_batch_size_per_image=big, box_score_thresh=0.0, box_nms_thresh=1.0,
        box_fg_iou_thresh=m["fg_iou"], box_detections_per_img=m["K"] + 10,
    )


def ellipse_targets(batch: int, objects: int, H: int, W: int, radius: tuple[float, float],
                    gen: torch.Generator) -> list[dict[str, Tensor]]:
    """Ellipses with random centres and radii in ``radius``, classes in 1..8 (CPU tensors)."""
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    lo, hi = radius
    out = []
    for _ in range(batch):
        masks, boxes = [], []
        for _ in range(objects):
            ry = min(lo + (hi - lo) * torch.rand(1, generator=gen).item(), H / 2 - 1)
            rx = min(lo + (hi - lo) * torch.rand(1, generator=gen).item(), W / 2 - 1)
            cy = ry + (H - 2 * ry) * torch.rand(1, generator=gen).item()
            cx = rx + (W - 2 * rx) * torch.rand(1, generator=gen).item()
            mk = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            ys, xs = torch.where(mk)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(mk)
        out.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                    "labels": torch.randint(1, 9, (objects,), generator=gen),
                    "masks": torch.stack(masks).to(torch.uint8)})
    return out


def _to(obj: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, dtype) if dtype is not None and obj.is_floating_point() \
            else obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to(v, device, dtype) for v in obj)
    return obj


def run_model_train(master: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]],
                    device: torch.device, dtype: torch.dtype, amp: bool
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Losses and per-group gradient norms of one training forward + backward."""
    model = copy.deepcopy(master).to(device, dtype).train()
    scale = 2.0**10 if amp else 1.0  # as GradScaler: keep float16 gradients from underflowing
    with autocast(device, enabled=amp):
        losses = model(_to(images, device, dtype), _to(targets, device))
    (sum(losses.values()) * scale).backward()
    norms = {}
    for group, prefix in GRAD_GROUPS.items():
        grads = [p.grad.double().square().sum() for n, p in model.named_parameters()
                 if n.startswith(prefix) and p.grad is not None]
        norms[group] = (torch.stack(grads).sum().sqrt() / scale) if grads else torch.zeros(())
    sync(device)
    return ({k: v.detach().to("cpu", torch.float64) for k, v in losses.items()},
            {k: v.detach().cpu() for k, v in norms.items()})


def run_model_eval(master: nn.Module, images: list[Tensor], device: torch.device,
                   dtype: torch.dtype, amp: bool) -> list[dict[str, Tensor]]:
    model = copy.deepcopy(master).to(device, dtype).eval()
    with torch.no_grad(), autocast(device, enabled=amp):
        outs = model(_to(images, device, dtype), return_tsdf=True)
    sync(device)
    return [{k: v.detach().cpu() for k, v in o.items()} for o in outs]


def match_detections(query: dict[str, Tensor], pool: dict[str, Tensor], k: int
                     ) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``: each of the first ``k`` query detections (in score order) takes the
    unmatched pool detection of its label with the highest box IoU, if that is >= 0.9."""
    from torchvision.ops import box_iou

    qb = query["boxes"][:k].double()
    if qb.shape[0] == 0 or pool["boxes"].shape[0] == 0:
        return []
    iou = box_iou(qb, pool["boxes"].double())
    iou = torch.where(query["labels"][:k, None] == pool["labels"][None, :], iou, -1.0)
    taken: set[int] = set()
    pairs = []
    for i in range(qb.shape[0]):
        for j in iou[i].argsort(descending=True).tolist():
            if iou[i, j] < 0.9:
                break
            if j not in taken:
                taken.add(j)
                pairs.append((i, j))
                break
    return pairs


def compare_detections(outs: list[dict[str, Tensor]], refs: list[dict[str, Tensor]], K: int
                       ) -> dict[str, Any]:
    """Both directions matched among the top ``K`` (each side's top ``K`` against the other's
    top ``K + 10``); differences over the matched pairs."""
    matched, box, score, tsdf, mask_iou, finite, counts = [], [0.0], [0.0], [0.0], [], True, []
    for o, r in zip(outs, refs, strict=True):
        k = min(K, o["boxes"].shape[0], r["boxes"].shape[0])
        counts.append([int(o["boxes"].shape[0]), int(r["boxes"].shape[0])])
        finite &= all(bool(torch.isfinite(v.double()).all()) for v in o.values()
                      if v.is_floating_point())
        pairs = match_detections(o, r, k)
        back = match_detections(r, o, k)
        matched.append(min(len(pairs), len(back)) / k if k else 1.0)
        for i, j in pairs:
            box.append(float((o["boxes"][i].double() - r["boxes"][j].double()).abs().max()))
            score.append(abs(float(o["scores"][i]) - float(r["scores"][j])))
            if "tsdf" in o:
                tsdf.append(float((o["tsdf"][i].double() - r["tsdf"][j].double()).abs().max()))
            a, b = o["masks"][i] >= 0.5, r["masks"][j] >= 0.5
            union = int((a | b).sum())
            mask_iou.append(int((a & b).sum()) / union if union else 1.0)
    return {"matched": min(matched) if matched else 1.0, "box_max_abs": max(box),
            "score_max_abs": max(score), "tsdf_max_abs": max(tsdf),
            "mask_iou_min": min(mask_iou) if mask_iou else 1.0,
            "mask_iou_mean": statistics.fmean(mask_iou) if mask_iou else 1.0,
            "finite": finite, "detections": counts}


def section_model(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    m = sz["model"]
    torch.manual_seed(args.seed)
    master = levelset_rcnn(**small_model_kwargs(m))
    gen = torch.Generator().manual_seed(args.seed)
    S = m["S"]
    targets = ellipse_targets(2, m["objects"], S, S, m["radius"], gen)
    images = [torch.rand(3, S, S, generator=gen) for _ in targets]
    for t, img in zip(targets, images, strict=True):  # brighter objects than background
        img[:, t["masks"].any(0).bool()] += 0.5
    cpu = torch.device("cpu")
    n_rois: list[int] = []
    hook = master.roi_heads.mask_roi_pool.register_forward_hook(
        lambda mod, inp, out: n_rois.append(int(out.shape[0])))
    ref_losses, ref_norms = run_model_train(master, images, targets, cpu, torch.float64, False)
    ref_eval = run_model_eval(master, images, cpu, torch.float64, False)
    hook.remove()
    rec.data["model_positive_rois"] = n_rois[0]
    print(f"      small model: {S}x{S}, 2 images x {m['objects']} objects, {n_rois[0]} positive "
          f"RoIs in training, top {m['K']} detections compared")

    runs = [(f"{device.type} float32", device, torch.float32, False, "fp32", False)]
    if device.type != "cpu" and not args.quick:
        runs.append(("cpu float32", cpu, torch.float32, False, "fp32", True))
    amp_name = "autocast float16" if device.type == "cuda" else "autocast bfloat16"
    runs.append((f"{device.type} {amp_name}", device, torch.float32, True, "amp", False))
    for label, dev, dtype, amp, tol_key, baseline in runs:
        tol = MODEL_TOL[tol_key]
        losses, norms = run_model_train(master, images, targets, dev, dtype, amp)
        per_loss = {k: abs(float(losses[k]) - float(ref_losses[k])) / max(abs(float(
            ref_losses[k])), 1e-2) for k in ref_losses}
        per_grad = {k: abs(float(norms[k]) - float(ref_norms[k])) / max(float(ref_norms[k]),
                                                                        1e-12)
                    for k in ref_norms}
        fin = all(math.isfinite(float(v)) for v in (*losses.values(), *norms.values()))
        wl = max(per_loss, key=per_loss.get)
        wg = max(per_grad, key=per_grad.get)
        rec.check("model", f"model train losses {label}", fin and per_loss[wl] <= tol["loss"],
                  {"max_abs": abs(float(losses[wl]) - float(ref_losses[wl])),
                   "max_rel": per_loss[wl], "finite": fin, "rel": per_loss,
                   "losses": {k: float(v) for k, v in losses.items()},
                   "reference": {k: float(v) for k, v in ref_losses.items()}},
                  tol=f"rel {tol['loss']:.0e}", worst=f"worst: {wl}", baseline=baseline)
        rec.check("model", f"model train grad norms {label}", fin and per_grad[wg] <= tol["grad"],
                  {"max_abs": abs(float(norms[wg]) - float(ref_norms[wg])),
                   "max_rel": per_grad[wg], "finite": fin, "rel": per_grad,
                   "norms": {k: float(v) for k, v in norms.items()},
                   "reference": {k: float(v) for k, v in ref_norms.items()}},
                  tol=f"rel {tol['grad']:.0e}", worst=f"worst: {wg}", baseline=baseline)
        ev = compare_detections(run_model_eval(master, images, dev, dtype, amp), ref_eval,
                                m["K"])
        ok = (ev["finite"] and ev["matched"] >= tol["matched"] and ev["box_max_abs"] <= tol["box"]
              and ev["score_max_abs"] <= tol["score"] and ev["tsdf_max_abs"] <= tol["tsdf"]
              and ev["mask_iou_min"] >= tol["mask_iou_min"]
              and ev["mask_iou_mean"] >= tol["mask_iou_mean"])
        rec.check("model", f"model eval detections {label}", ok,
                  {"summary": f"matched {100 * ev['matched']:.0f}%, box {ev['box_max_abs']:.1e}px"
                   f", score {ev['score_max_abs']:.1e}, tsdf {ev['tsdf_max_abs']:.1e}, mask IoU "
                   f"min {ev['mask_iou_min']:.3f} mean {ev['mask_iou_mean']:.4f}", **ev},
                  tol=f"matched >= {tol['matched']:g}, box {tol['box']:g}px, score "
                  f"{tol['score']:g}, tsdf {tol['tsdf']:g}, IoU min >= {tol['mask_iou_min']:g} "
                  f"mean >= {tol['mask_iou_mean']:g}",
                  worst="" if ev["finite"] else "NOT FINITE", baseline=baseline)


# ------------------------------------------------------------------------------------------
# performance


def random_backbone_file(directory: str) -> str:
    """A random torchvision ResNet-50 state dict on disk: given as ``weights_backbone`` it makes
    the builders build as the recipes do from ImageNet (frozen BatchNorm, 3 trainable stages)
    without downloading anything."""
    from torchvision.models import resnet50

    path = str(Path(directory) / "random_resnet50.pth")
    if not Path(path).exists():
        torch.manual_seed(1234)
        torch.save(resnet50().state_dict(), path)
    return path


def paper_models(device: torch.device, H: int, W: int, dets: int, backbone_file: str
                 ) -> dict[str, nn.Module]:
    """Mask R-CNN, LevelSet R-CNN (builder defaults: learned features) and LevelSet R-CNN with
    interpolated features; the LevelSet models take Mask R-CNN's weights wherever they fit
    (backbone, RPN, box head, mask trunk), so all three make the same detections."""
    kw = dict(backbone="resnet50", weights_backbone=backbone_file, num_classes=9, min_size=H,
              max_size=W, box_score_thresh=0.0, box_detections_per_img=dets)
    torch.manual_seed(0)
    models = {"maskrcnn": mask_rcnn(**kw), "levelset": levelset_rcnn(**kw),
              "levelset_interp": levelset_rcnn(cv_features="interpolated", **kw)}
    sd = models["maskrcnn"].state_dict()
    for name in ("levelset", "levelset_interp"):
        load_maskrcnn_weights(models[name], sd)
    return {n: m.to(device) for n, m in models.items()}


LABELS = {"maskrcnn": "Mask R-CNN", "levelset": "LevelSet R-CNN (learned)",
          "levelset_interp": "LevelSet R-CNN (interpolated)"}


def interleaved(models: dict[str, nn.Module], step: Callable[[str, nn.Module], Any],
                device: torch.device, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Each model's times over ``repeats`` rounds after ``warmup``; in each round every model
    runs once, in a rotating order, so that drifts in clocks and load hit all alike."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        for n in names[i % len(names):] + names[:i % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            step(n, models[n])
            sync(device)
            if i >= warmup:
                times[n].append(time.perf_counter() - t0)
    return times


def section_paper_timing(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    p = sz["paper"]
    H, W, dets = p["H"], p["W"], p["dets"]
    with tempfile.TemporaryDirectory() as tmp:
        models = paper_models(device, H, W, dets, random_backbone_file(tmp))
    for m in models.values():
        m.eval()
    gen = torch.Generator().manual_seed(args.seed)
    image = [torch.rand(3, H, W, generator=gen).to(device)]
    counts: dict[str, int] = {}
    res: dict[str, Any] = {"input": [H, W], "detections_wanted": dets,
                           "warmup": args.warmup, "repeats": args.repeats}
    modes = [("fp32", False)] + ([("amp", True)] if device.type == "cuda" else [])
    for mode, amp in modes:
        def step(n: str, m: nn.Module, amp: bool = amp) -> None:
            with torch.inference_mode(), autocast(device, enabled=amp):
                counts[n] = int(m(image)[0]["boxes"].shape[0])

        times = interleaved(models, step, device, args.warmup, args.repeats)
        med = {n: statistics.median(v) for n, v in times.items()}
        res[mode] = {"median_ms": {n: 1e3 * v for n, v in med.items()},
                     "ratio": {n: med[n] / med["maskrcnn"] for n in med},
                     "times_ms": {n: [1e3 * t for t in v] for n, v in times.items()},
                     "detections": dict(counts)}
        if any(c != dets for c in counts.values()):
            print(f"      warning: wanted {dets} detections, got {counts}")
    memory = {}
    for n, m in models.items():
        def once(m: nn.Module = m) -> None:
            with torch.inference_mode():
                m(image)
        memory[n] = peak_memory(once, device)
    res["memory"] = memory
    res["paper"] = {"levelset_ms": PAPER_MS["levelset"], "maskrcnn_ms": PAPER_MS["maskrcnn"],
                    "ratio": PAPER_MS["levelset"] / PAPER_MS["maskrcnn"], "gpu": "GTX 1080 Ti"}
    rec.data["paper_timing"] = res
    for mode, _ in modes:
        for n in models:
            mem = memory[n]
            mem_s = f", peak {mem['peak_bytes'] / 2**20:.0f} MB" if mem and mode == "fp32" else ""
            print(f"      eval {mode:4} {LABELS[n]:<30} {res[mode]['median_ms'][n]:8.1f} ms  "
                  f"{res[mode]['ratio'][n]:.3f}x{mem_s}", flush=True)


def section_train_step(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    from bench_overhead import add_jittered_proposals

    t = sz["train"]
    H, W = t["H"], t["W"]
    with tempfile.TemporaryDirectory() as tmp:
        models = paper_models(device, H, W, 100, random_backbone_file(tmp))
    gen = torch.Generator().manual_seed(args.seed)
    images = [torch.rand(3, H, W, generator=gen).to(device) for _ in range(2)]
    targets = [_to(x, device) for x in ellipse_targets(2, t["objects"], H, W, t["radius"], gen)]
    rois: dict[str, int] = {}
    state = gen.get_state()
    for n, m in models.items():
        gen.set_state(state)  # the same extra proposals for every model
        add_jittered_proposals(m, targets, t["jitter"], gen)
        m.roi_heads.mask_roi_pool.register_forward_hook(
            lambda mod, inp, out, n=n: rois.__setitem__(n, int(out.shape[0])))
        m.train()
    amp = device.type == "cuda"  # as the trainer: solver.amp is CUDA only
    opts = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4,
                               momentum=0.9) for n, m in models.items()}
    scalers = {n: torch.amp.GradScaler(device.type, enabled=amp) for n in models}
    finite: dict[str, bool] = {}

    def step(n: str, m: nn.Module) -> None:
        with autocast(device, enabled=amp):
            loss = sum(m(images, targets).values())
        opts[n].zero_grad(set_to_none=True)
        scalers[n].scale(loss).backward()
        scalers[n].step(opts[n])
        scalers[n].update()
        finite[n] = bool(torch.isfinite(loss.detach()))

    repeats = max(1, args.repeats // 2)
    times = interleaved(models, step, device, args.warmup, repeats)
    med = {n: statistics.median(v) for n, v in times.items()}
    memory = {n: peak_memory(lambda n=n, m=m: step(n, m), device) for n, m in models.items()}
    res = {"input": [H, W], "images": 2, "objects_per_image": t["objects"],
           "jittered_proposals_per_image": t["jitter"], "amp": amp, "warmup": args.warmup,
           "repeats": repeats, "median_ms": {n: 1e3 * v for n, v in med.items()},
           "ratio": {n: med[n] / med["maskrcnn"] for n in med},
           "times_ms": {n: [1e3 * x for x in v] for n, v in times.items()},
           "positive_rois": rois, "loss_finite": finite, "memory": memory}
    rec.data["train_step"] = res
    for n in models:
        mem = memory[n]
        mem_s = f", peak {mem['peak_bytes'] / 2**20:.0f} MB" if mem else ""
        print(f"      train step {'AMP' if amp else 'fp32'} {LABELS[n]:<30} {1e3 * med[n]:8.1f} ms"
              f"  {res['ratio'][n]:.3f}x  ({rois.get(n)} positive RoIs{mem_s})", flush=True)
    if not all(finite.values()):
        raise FloatingPointError(f"training loss not finite: {finite}")


def section_bandwidth(rec: Record, device: torch.device, sz: dict[str, Any], args) -> None:
    b = sz["bandwidth"]
    R, C, M, N = b["R"], b["C"], b["M"], b["N"]
    inputs, _ = cv_inputs(R, C, M, N, seed=args.seed + 2)
    x = {k: v.to(device, torch.float32) for k, v in inputs.items()}
    cv = ChanVese(num_steps=N)
    hp = {k: x[k] for k in ("lambda1", "lambda2", "mu", "eps", "dt")}
    feats, phi0 = x["features"], x["phi0"]

    def forward() -> None:
        with torch.no_grad():
            cv(phi0, feats, **hp)

    t_cv = median_time(forward, device, args.warmup, args.repeats)
    t_copy = median_time(lambda: torch.empty_like(feats).copy_(feats), device, args.warmup,
                         args.repeats)
    f_bytes = feats.numel() * feats.element_size()
    phi_bytes = phi0.numel() * phi0.element_size()
    must_move = 2 * N * f_bytes + 2 * N * phi_bytes
    copy_gbs = 2 * f_bytes / t_copy / 1e9  # read + write
    achieved = must_move / t_cv / 1e9
    res = {"shape": [R, C, M, M], "steps": N, "feature_bytes": f_bytes, "must_move_bytes":
           must_move, "forward_ms": 1e3 * t_cv, "copy_ms": 1e3 * t_copy,
           "achieved_gbs": achieved, "copy_gbs": copy_gbs, "fraction_of_copy": achieved / copy_gbs,
           "target": BANDWIDTH_TARGET, "met": achieved / copy_gbs >= BANDWIDTH_TARGET,
           # With the forward's extra pass for the per-RoI sums and ||F - m||^2 counted too:
           "fraction_of_copy_2n_plus_1": (2 * N + 1) * f_bytes / t_cv / 1e9 / copy_gbs}
    rec.data["bandwidth"] = res
    print(f"      ChanVese no-grad fwd {R}x{C}x{M}x{M} N={N}: {1e3 * t_cv:.2f} ms, "
          f"{achieved:.0f} GB/s of {must_move / 2**20:.0f} MB; copy {1e3 * t_copy:.2f} ms = "
          f"{copy_gbs:.0f} GB/s; {100 * res['fraction_of_copy']:.0f}% "
          f"({'met' if res['met'] else 'NOT met'}: target >= {100 * BANDWIDTH_TARGET:.0f}%)",
          flush=True)


RUNNERS: dict[str, Callable[..., None]] = {
    "cv_layer": section_cv_layer, "cv_upsampled": section_cv_upsampled, "tsdf": section_tsdf,
    "classic": section_classic, "model": section_model, "paper_timing": section_paper_timing,
    "train_step": section_train_step, "bandwidth": section_bandwidth,
    "classic_compiled": section_classic_compiled,
}

# ------------------------------------------------------------------------------------------
# summary


def print_summary(rec: Record) -> None:
    d = rec.data
    checks = [c for c in d["checks"] if c["passed"] is not None]
    n_fail = sum(not c["passed"] for c in checks)
    print(f"\n=== summary: {d['device_name']}, torch {d['torch']}"
          f"{', quick' if d['quick'] else ''} ===")
    print(f"{'section':<18}{'status':<9}{'time':>7}  result")
    for name, s in d["sections"].items():
        sec_checks = [c for c in checks if c["section"] == name]
        if name in CORRECTNESS and sec_checks:
            bad = sum(not c["passed"] for c in sec_checks)
            result = f"{len(sec_checks) - bad}/{len(sec_checks)} checks pass"
        else:
            result = ""
        if s["status"] == "error":
            result = f"{s['error'][:70]}"
        secs = f"{s['seconds']:.1f}s" if "seconds" in s else ""
        print(f"{name:<18}{s['status']:<9}{secs:>7}  {result}")
    if "paper_timing" in d:
        p = d["paper_timing"]
        print(f"\neval, {p['input'][0]}x{p['input'][1]}, {p['detections_wanted']} detections "
              f"(median of {p['repeats']}):")
        print(f"  {'model':<31}{'fp32 ms':>9}{'ratio':>8}{'AMP ms':>9}{'ratio':>8}{'peak MB':>9}")
        for n, label in LABELS.items():
            fp = p["fp32"]
            amp = p.get("amp")
            mem = p["memory"].get(n)
            print(f"  {label:<31}{fp['median_ms'][n]:>9.1f}{fp['ratio'][n]:>8.3f}"
                  + (f"{amp['median_ms'][n]:>9.1f}{amp['ratio'][n]:>8.3f}" if amp else
                     f"{'-':>9}{'-':>8}")
                  + (f"{mem['peak_bytes'] / 2**20:>9.0f}" if mem else f"{'-':>9}"))
        print(f"  paper (GTX 1080 Ti): {PAPER_MS['levelset']:.0f} / {PAPER_MS['maskrcnn']:.0f} ms"
              f" = {p['paper']['ratio']:.3f}x")
    if "train_step" in d:
        t = d["train_step"]
        print(f"\ntrain step, 2 x {t['input'][0]}x{t['input'][1]}, {t['objects_per_image']} "
              f"objects each, {'AMP' if t['amp'] else 'fp32'} (median of {t['repeats']}):")
        print(f"  {'model':<31}{'ms':>9}{'ratio':>8}{'pos RoIs':>10}{'peak MB':>9}")
        for n, label in LABELS.items():
            mem = t["memory"].get(n)
            print(f"  {label:<31}{t['median_ms'][n]:>9.1f}{t['ratio'][n]:>8.3f}"
                  f"{t['positive_rois'].get(n, 0):>10}"
                  + (f"{mem['peak_bytes'] / 2**20:>9.0f}" if mem else f"{'-':>9}"))
    if "bandwidth" in d:
        b = d["bandwidth"]
        print(f"\nChan-Vese forward bandwidth: {b['achieved_gbs']:.1f} GB/s vs copy "
              f"{b['copy_gbs']:.1f} GB/s = {100 * b['fraction_of_copy']:.0f}% (target >= "
              f"{100 * b['target']:.0f}%: {'met' if b['met'] else 'NOT met'})")
    errors = [s for s, v in d["sections"].items() if v["status"] == "error"]
    print(f"\ncorrectness: {len(checks) - n_fail}/{len(checks)} checks pass"
          + (f"; FAILED: {', '.join(rec.failed_checks())}" if n_fail else "")
          + (f"; sections that raised: {', '.join(errors)}" if errors else ""))


# ------------------------------------------------------------------------------------------
# entry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a dry run on the CPU (CPU float32 against CPU float64)")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {', '.join(SECTIONS)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per model (default 10; 2 with --quick); training steps "
                    "use half as many")
    ap.add_argument("--warmup", type=int, default=None, help="default 3; 1 with --quick")
    ap.add_argument("--budget", type=float, default=450.0,
                    help="seconds: a section that would start later is skipped")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: skipped: no CUDA device (torch {torch.__version__}); "
              "--device cpu runs the checks on the CPU as a dry run")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"skipped": "no CUDA device",
                                             "torch": torch.__version__}, indent=2))
        return 0
    device = torch.device(args.device)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_overhead's helpers
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        extra = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "capability": list(torch.cuda.get_device_capability(device)),
                 "memory_bytes": int(props.total_memory)}
    else:
        name = f"cpu ({platform.processor() or platform.machine()})"
        extra = {}
    header = {"device": device.type, "device_name": name, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "quick": args.quick,
              "tf32_default": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                               "cudnn": torch.backends.cudnn.allow_tf32},
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              **extra}
    rec = Record(args.json, header)
    print(f"gpu_check on {name}, torch {torch.__version__}"
          + (f", CUDA {extra['cuda']}, cuDNN {extra['cudnn']}" if extra else "")
          + (" (quick)" if args.quick else ""), flush=True)
    sz = sizes(args.quick)
    start = time.perf_counter()
    for section in SECTIONS:
        if section not in args.sections:
            continue
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            rec.data["sections"][section] = {"status": "skipped",
                                             "reason": f"time budget ({args.budget:g} s) spent"}
            print(f"SKIP  {section}: time budget spent ({elapsed:.0f} s)")
            rec.dump()
            continue
        print(f"\n--- {section} ---", flush=True)
        t0 = time.perf_counter()
        ctx = strict_fp32() if section in CORRECTNESS else contextlib.nullcontext()
        try:
            with ctx:
                RUNNERS[section](rec, device, sz, args)
            status: dict[str, Any] = {"status": "ok"}
        except Exception as err:  # noqa: BLE001 - one section's failure must not stop the rest
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            print(f"FAIL  section {section} raised {type(err).__name__}: {err}", flush=True)
            status = {"status": "error", "error": f"{type(err).__name__}: {err}",
                      "traceback": tb}
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        status["seconds"] = time.perf_counter() - t0
        rec.data["sections"][section] = status
        rec.dump()
    failed = rec.failed_checks()
    errors = [s for s, v in rec.data["sections"].items() if v["status"] == "error"]
    code = 1 if failed or any(s in CORRECTNESS for s in errors) else (2 if errors else 0)
    rec.data.update({"failed_checks": failed, "errored_sections": errors,
                     "all_checks_passed": not failed and not errors, "exit_code": code,
                     "seconds": time.perf_counter() - start})
    print_summary(rec)
    rec.dump()
    if args.json:
        print(f"wrote {args.json}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
