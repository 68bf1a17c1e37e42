"""Peak memory of ``predict`` on large images with many detections.

Two ways of turning a model's detections into overlays and RLE results, each measured in a
fresh process (peak resident memory, ``ru_maxrss``) on one image of H x W with K detections:

- ``per_detection`` (``engine.predict.run_predict``, what ``levelset-rcnn predict`` does): masks
  stay on the model's RoI grid, each detection is pasted into a crop around its box and
  encoded from one reused image-sized buffer;
- ``full_masks`` (the previous code, rebuilt from the same functions): the model pastes all K
  masks into ``(K, 1, H, W)`` float32, the score filter copies them, the overlay and the RLE
  encoder read them.

The model is a tiny LevelSet R-CNN with random weights (its detections are what matters here:
``box_score_thresh=0`` and enough proposals give exactly K). "above start" is the peak minus
the resident memory once the model is built and the image is on disk, i.e. what prediction
itself adds. ``full_masks`` is skipped where its estimate (2 K H W float32) exceeds
``--max-full-gb``.

    .venv/bin/python benchmarks/bench_predict_memory.py --json bench_results/predict_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [(1000, 1500), (2000, 3000), (4000, 6000)]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(h: int, w: int, k: int, mode: str, work: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import build_model
    from levelset_rcnn.engine.inference import predict_batch
    from levelset_rcnn.engine.predict import _keep, contours_of, draw_overlay, run_predict
    from levelset_rcnn.evaluation import write_coco_results

    torch.set_num_threads(1)
    cfg = load_config(None, [
        "model.backbone=resnet18", "model.fpn_channels=16", "model.box_representation_size=32",
        "model.mask_layers=[16]", "model.predictor_channels=16", "model.cv_channels=8",
        "model.cv_hidden_channels=8", "model.min_size=128", "model.max_size=192",
        "model.rpn_pre_nms_top_n_test=2000", "model.rpn_post_nms_top_n_test=2000",
        "model.rpn_nms_thresh=1.0", "model.box_nms_thresh=1.0", "model.box_score_thresh=0",
        f"model.box_detections_per_img={k}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=5).eval()
    yy, xx = np.indices((h, w), dtype=np.float32)
    pixels = np.stack([(xx / w * 255), (yy / h * 255), ((xx + yy) % 256)], -1).astype(np.uint8)
    path = work / "big.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    del pixels, yy, xx
    start = _rss_mb()
    t0 = time.perf_counter()
    device = torch.device("cpu")
    if mode == "per_detection":
        run_predict(model, [path], work / "out", device=device, score_thresh=0.0,
                    progress=False)
        n = len(json.loads((work / "out" / "results.json").read_text()))
    else:
        from levelset_rcnn.data import read_image

        image = read_image(path)
        (output,) = predict_batch(model, [image], device, tsdf=True)
        output = _keep(output, 0.0)
        polys = contours_of(output)
        output.pop("tsdf", None)
        output.pop("tsdf_init", None)
        (work / "out").mkdir()
        draw_overlay(image, output, polys).save(work / "out" / "big.png")
        write_coco_results([output], [1], {i: i for i in range(1, 6)},
                           work / "out" / "results.json")
        n = len(output["labels"])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"height": h, "width": w, "detections": n, "mode": mode, "peak_mb": round(peak),
            "start_mb": round(start), "above_start_mb": round(peak - start),
            "seconds": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detections", type=int, default=100)
    p.add_argument("--sizes", nargs="+", default=None, metavar="HxW",
                   help="image sizes (default: 1000x1500 2000x3000 4000x6000)")
    p.add_argument("--modes", nargs="+", default=["per_detection", "full_masks"])
    p.add_argument("--max-full-gb", type=float, default=6.0,
                   help="skip full_masks where 2 K H W float32 exceeds this (default: 6)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        h, w, k, mode = args.child
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(child(int(h), int(w), int(k), mode, Path(work))))
        return
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] \
        if args.sizes else SIZES
    rows = []
    for h, w in sizes:
        for mode in args.modes:
            estimate = 2 * args.detections * h * w * 4 / 2**30
            if mode == "full_masks" and estimate > args.max_full_gb:
                rows.append({"height": h, "width": w, "detections": args.detections,
                             "mode": mode, "skipped": f"estimated > {estimate:.1f} GB"})
                continue
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "--child", str(h), str(w),
                                  str(args.detections), mode], capture_output=True, text=True,
                                 env=env, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| image | detections | mode | peak RSS | above start | time |\n"
          "| --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        if "skipped" in r:
            print(f"| {size} | {r['detections']} | {r['mode']} | skipped ({r['skipped']}) "
                  "| | |")
        else:
            print(f"| {size} | {r['detections']} | {r['mode']} | {r['peak_mb']} MB | "
                  f"{r['above_start_mb']} MB | {r['seconds']} s |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
