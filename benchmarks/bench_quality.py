"""Mask quality: LevelSet R-CNN (phi_0 and phi_N) against the Mask R-CNN baseline.

Both models share the backbone, FPN, RPN, box head, data, seed and training budget (the
baseline is built through the same builder with ``model.arch=mask_rcnn``). Datasets:

* ``synthetic``: the embedded textured-shapes data (``configs/synthetic_cpu.yaml``);
* ``dsb2018``: DSB2018 nuclei (``configs/dsb2018_cpu.yaml``), the first 200 images by sorted
  id for training and the last 50 for validation.

Reports mask AP, AP50 (pycocotools, percent) and the boundary AF1 / AF2 of Mask R-CNN,
LevelSet phi_0 and LevelSet phi_N, with the budget and wall time, and writes JSON shaped
``{dataset: {model: {"AP", "AP50", "AF1", "AF2", ...}}}``::

    python benchmarks/bench_quality.py --json bench_results/quality.json            # full
    python benchmarks/bench_quality.py --iters 200 --datasets synthetic --json q.json  # short

This is a benchmark, not a test: on a 2-core CPU the default budget takes hours.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DSB_DEFAULT = REPO.parent / "shared" / "data" / "dsb2018_nuclei" / "stage1_train"
MODELS = ("maskrcnn", "levelset_phi0", "levelset_phiN")
METRICS = ("AP", "AP50", "AF1", "AF2")


def _recipe(dataset: str, args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    common = [f"solver.max_iter={args.iters}", f"solver.steps=[{int(args.iters * 0.8)}]",
              f"solver.warmup_iters={min(50, max(1, args.iters // 10))}",
              f"model.backbone={args.backbone}", f"train.seed={args.seed}",
              f"train.checkpoint_period={args.iters}", "train.log_period=20",
              "train.eval_at_end=true", "train.eval_period=0"]
    if dataset == "synthetic":
        return REPO / "configs" / "synthetic_cpu.yaml", common + [
            f"data.root={work / 'synthetic_data'}",
            f"data.synthetic_train_images={args.synthetic_train}",
            f"data.synthetic_val_images={args.synthetic_val}"]
    from levelset_rcnn.data.converters import convert_dsb2018

    ann = work / "dsb2018" / "nuclei_all.json"
    if not ann.is_file():
        convert_dsb2018(args.dsb_src, ann, split="all", progress=False)
    return REPO / "configs" / "dsb2018_cpu.yaml", common + [
        f"data.train_images={args.dsb_src}", f"data.val_images={args.dsb_src}",
        f"data.train_ann={ann}", f"data.val_ann={ann}"]


def run_one(dataset: str, arch: str, args: argparse.Namespace, work: Path) -> dict:
    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import Trainer

    path, overrides = _recipe(dataset, args, work)
    out = work / dataset / arch
    cfg = load_config(path, overrides + list(args.set) + [f"model.arch={arch}",
                                                          f"train.output_dir={out}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=not args.quiet, tensorboard=False)
    result = trainer.train()
    return {"results": result["metrics"], "wall_s": time.perf_counter() - t0,
            "eval_s": trainer.eval_time, "iterations": cfg.solver.max_iter,
            "ims_per_batch": cfg.solver.ims_per_batch}


def _row(segm: dict, run: dict) -> dict:
    row = {k: float(segm.get(k, math.nan)) for k in METRICS}
    row.update(iterations=run["iterations"], ims_per_batch=run["ims_per_batch"],
               wall_s=round(run["wall_s"], 1))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic", "dsb2018"],
                   choices=["synthetic", "dsb2018"])
    p.add_argument("--iters", type=int, default=3000,
                   help="training iterations per model (default: %(default)s)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-train", type=int, default=400)
    p.add_argument("--synthetic-val", type=int, default=50)
    p.add_argument("--dsb-src", type=Path, default=DSB_DEFAULT,
                   help="DSB2018 stage1_train folder (default: %(default)s)")
    p.add_argument("--work", type=Path, default=REPO / "bench_results" / "quality_work")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides for both models, e.g. model.loss_weights=[1,5]")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    report: dict[str, dict[str, dict]] = {}
    for dataset in args.datasets:
        mrcnn = run_one(dataset, "mask_rcnn", args, args.work)
        level = run_one(dataset, "levelset_rcnn", args, args.work)
        report[dataset] = {
            "maskrcnn": _row(mrcnn["results"]["segm/masks"], mrcnn),
            "levelset_phi0": _row(level["results"]["segm/masks_phi0"], level),
            "levelset_phiN": _row(level["results"]["segm/masks"], level),
        }
        print(f"\n{dataset}: {args.iters} iterations x {mrcnn['ims_per_batch']} images, "
              f"{args.backbone} FPN, wall {mrcnn['wall_s']:.0f} s (Mask R-CNN) / "
              f"{level['wall_s']:.0f} s (LevelSet R-CNN)")
        print(f"| model | {' | '.join(METRICS)} |\n| --- |" + " ---: |" * len(METRICS))
        for name in MODELS:
            r = report[dataset][name]
            print(f"| {name} | " + " | ".join(f"{r[m]:.1f}" for m in METRICS) + " |")
        d = report[dataset]
        print(f"phi_N - Mask R-CNN: AP {d['levelset_phiN']['AP'] - d['maskrcnn']['AP']:+.1f} "
              f"(target +2), AF1 {d['levelset_phiN']['AF1'] - d['maskrcnn']['AF1']:+.1f} "
              "(target +4)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
