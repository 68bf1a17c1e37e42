"""Overhead of LevelSet R-CNN over torchvision Mask R-CNN (same ResNet-50 FPN, same input).

Both models come from the same builder (:func:`levelset_rcnn.modeling.levelset_rcnn`; the
baseline is ``mask_head_type="binary"``, i.e. torchvision's ``RoIHeads.forward`` unchanged) and
share backbone, RPN and box-head weights (random init, copied from the baseline), so they make
identical detections. Measured, interleaved in one run:

* eval-mode latency on one 512x1024 image with exactly 20 and 100 detections (score threshold 0,
  detection cap 20 / 100);
* one training step (forward, backward, SGD step) on a batch of 2 images of 512x1024 with 10
  ground-truth objects each.

Ratios are LevelSet R-CNN time over Mask R-CNN time (by default of the fastest of the repeats,
``--stat min``, as other jobs on a shared machine only ever add time; the ratio of medians is
printed and saved too). Usage::

    python benchmarks/bench_overhead.py [--device cpu|cuda] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from levelset_rcnn.modeling import levelset_rcnn, load_maskrcnn_weights, mask_rcnn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def make_targets(batch: int, objects: int, H: int, W: int, device: torch.device,
                 gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Ellipses with random centres and radii (20-120 px), one class in 1..8 each."""
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    targets = []
    for _ in range(batch):
        masks, boxes = [], []
        for _ in range(objects):
            ry, rx = (20 + 100 * torch.rand(2, generator=gen)).tolist()
            cy = ry + (H - 2 * ry) * torch.rand(1, generator=gen).item()
            cx = rx + (W - 2 * rx) * torch.rand(1, generator=gen).item()
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            ys, xs = torch.where(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(m)
        targets.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
            "labels": torch.randint(1, 9, (objects,), generator=gen).to(device),
            "masks": torch.stack(masks).to(torch.uint8).to(device),
        })
    return targets


def add_jittered_proposals(model: nn.Module, targets: list[dict[str, torch.Tensor]], k: int,
                           gen: torch.Generator) -> None:
    """Append ``k`` jittered copies of the ground-truth boxes to the RPN's proposals of each
    image, as a trained RPN would make: without them a randomly initialised RPN gives few
    positive RoIs and the mask branch would be measured on an unrealistically small batch.
    The same boxes go to both models (images are 512x1024 = the transform's size, so target
    coordinates are the RPN's coordinates)."""
    extra = []
    for t in targets:
        b = t["boxes"]
        idx = torch.randint(0, b.shape[0], (k,), generator=gen)
        wh = (b[idx, 2:] - b[idx, :2]).repeat(1, 2)
        extra.append(b[idx] + 0.08 * wh * (2 * torch.rand(k, 4, generator=gen) - 1))
    rpn_forward = model.rpn.forward

    def forward(images, features, targets=None):  # type: ignore[no-untyped-def]
        boxes, losses = rpn_forward(images, features, targets)
        if model.training:
            boxes = [torch.cat([p, e.to(p)]) for p, e in zip(boxes, extra, strict=True)]
        return boxes, losses

    model.rpn.forward = forward


def summarise(times: dict[str, list[float]], stat: str
              ) -> tuple[dict[str, float], float, float]:
    """Per-model statistic (``min`` or ``median``), its ratio, and the ratio of medians."""
    pick = min if stat == "min" else statistics.median
    best = {n: pick(v) for n, v in times.items()}
    med = {n: statistics.median(v) for n, v in times.items()}
    return best, best["levelset"] / best["maskrcnn"], med["levelset"] / med["maskrcnn"]


def order(models: dict[str, nn.Module], i: int) -> list[tuple[str, nn.Module]]:
    items = list(models.items())
    return items if i % 2 == 0 else items[::-1]


def build(kind: str, num_classes: int, device: torch.device, *,
          cv_features: str = "learned") -> nn.Module:
    kw = dict(backbone="resnet50", weights_backbone=None, num_classes=num_classes,
              min_size=512, max_size=1024, box_score_thresh=0.0)
    model = (mask_rcnn(**kw) if kind == "maskrcnn"
             else levelset_rcnn(**kw, cv_features=cv_features))
    return model.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=5, help="timed eval runs per model")
    ap.add_argument("--train-repeats", type=int, default=3, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cv-features", default="learned", choices=["learned", "interpolated"],
                    help="LevelSet R-CNN's Chan-Vese feature head (default: the builder's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    ap.add_argument("--num-classes", type=int, default=9, help="9 = Cityscapes + background")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--stat", default="min", choices=["min", "median"],
                    help="statistic of the repeats used for the ratios: on a shared machine "
                    "other jobs only ever add time, so the minimum is the robust choice")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--jitter-proposals", type=int, default=200,
                    help="jittered ground-truth boxes added to the proposals per training image "
                    "(a trained RPN's positives); 0 = the random RPN's proposals only")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    H, W = args.height, args.width

    models = {"maskrcnn": build("maskrcnn", args.num_classes, device),
              "levelset": build("levelset", args.num_classes, device,
                                cv_features=args.cv_features)}
    # Same backbone / RPN / box weights: identical detections and proposals.
    load_maskrcnn_weights(models["levelset"], models["maskrcnn"].state_dict())
    rois: dict[str, int] = {}
    for name, m in models.items():
        m.roi_heads.mask_roi_pool.register_forward_hook(
            lambda mod, inp, out, name=name: rois.__setitem__(name, int(out.shape[0]))
        )

    rows: list[tuple[str, str, float, float, float]] = []
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "torch": torch.__version__, "input": [H, W], "repeats": args.repeats,
        "train_repeats": args.train_repeats,
        "num_classes": args.num_classes,
    }

    image = [torch.rand(3, H, W, generator=gen).to(device)]
    for dets in (20, 100):
        times: dict[str, list[float]] = {n: [] for n in models}
        counts = {}
        for m in models.values():
            m.eval()
            m.roi_heads.detections_per_img = dets
        with torch.inference_mode():
            for i in range(args.warmup + args.repeats):
                # Interleaved, alternating order (ABBA): drifts in load hit both models.
                for n, m in order(models, i):
                    out: list[dict[str, torch.Tensor]] = []
                    t = timed(lambda m=m, out=out: out.extend(m(image)), device)
                    counts[n] = int(out[0]["boxes"].shape[0])
                    if i >= args.warmup:
                        times[n].append(t)
        med, ratio, ratio_med = summarise(times, args.stat)
        results[f"inference_ratio_{dets}"] = ratio
        results[f"inference_{dets}"] = {f"{args.stat}_s": med, "times_s": times,
                                         "detections": counts, "ratio_of_medians": ratio_med}
        if counts["levelset"] != dets or counts["maskrcnn"] != dets:
            print(f"warning: wanted {dets} detections, got {counts}")
        rows.append(("Mask R-CNN", f"eval, {dets} dets", med["maskrcnn"], 1.0, 1.0))
        rows.append(("LevelSet R-CNN", f"eval, {dets} dets", med["levelset"], ratio, ratio_med))

    if not args.skip_train:
        images = [torch.rand(3, H, W, generator=gen).to(device) for _ in range(2)]
        targets = make_targets(2, 10, H, W, device, gen)
        if args.jitter_proposals:
            state = gen.get_state()
            for m in models.values():
                gen.set_state(state)  # identical extra proposals for both models
                add_jittered_proposals(m, targets, args.jitter_proposals, gen)
        times = {n: [] for n in models}
        opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
                for n, m in models.items()}
        for m in models.values():
            m.train()

        def step(m: nn.Module, opt: torch.optim.Optimizer) -> None:
            loss = sum(m(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        pos = {}
        for i in range(args.warmup + args.train_repeats):
            for n, m in order(models, i):
                t = timed(lambda m=m, n=n: step(m, opts[n]), device)
                pos[n] = rois.get(n)
                if i >= args.warmup:
                    times[n].append(t)
        med, ratio, ratio_med = summarise(times, args.stat)
        results["train_step_ratio"] = ratio
        results["train_step"] = {f"{args.stat}_s": med, "times_s": times, "positive_rois": pos,
                                 "ratio_of_medians": ratio_med}
        rows.append(("Mask R-CNN", "train step, 2x10 objects", med["maskrcnn"], 1.0, 1.0))
        rows.append(("LevelSet R-CNN", "train step, 2x10 objects", med["levelset"], ratio,
                     ratio_med))

    print(f"device: {results['device']}, torch {results['torch']}, input {H}x{W}, "
          f"{args.stat} of {args.repeats} (eval) / {args.train_repeats} (train) after "
          f"{args.warmup} warmup, models interleaved")
    print(f"{'model':<16} {'setting':<26} {args.stat + ' (ms)':>12} {'ratio':>7} "
          f"{'ratio of medians':>17}")
    for model, setting, t, r, rm in rows:
        print(f"{model:<16} {setting:<26} {1000 * t:>12.1f} {r:>7.3f} {rm:>17.3f}")
    # The targets of the learned-features issue (the paper: 1.255x on a GPU at 100).
    targets_ok = {"inference_ratio_100": results["inference_ratio_100"] <= 1.20}
    if "train_step_ratio" in results:
        targets_ok["train_step_ratio"] = results["train_step_ratio"] <= 1.35
    results["targets_met"] = targets_ok
    print("targets (inference at 100 detections <= 1.20x, train step <= 1.35x):", targets_ok)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
