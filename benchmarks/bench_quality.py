"""Mask quality: LevelSet R-CNN (phi_0 and phi_N) against the Mask R-CNN baseline and the
paper's Table 3 competitors (level-set loss, DELSE, DELSE with the hyperparameter head).

All models share the backbone, FPN, RPN, box head, data, seed and training budget (the
baseline is built through the same builder with ``model.arch=mask_rcnn``, the competitors
with ``model.mask_head_type=lsloss|delse|delse_hp``). ``--models`` picks among:

* ``maskrcnn`` -> row ``maskrcnn``; ``levelset`` -> ``levelset_phi0``, ``levelset_phiN``;
* ``lsloss`` -> ``lsloss`` (Mask R-CNN at inference: no initial mask);
* ``delse`` -> ``delse_phi0``, ``delse_phiN``; ``delse_hp`` -> ``delse_hp_phi0``,
  ``delse_hp_phiN`` (initial and final masks, as in Table 3).

Datasets:

* ``synthetic``: the embedded textured-shapes data (the packaged recipe ``synthetic_cpu``);
* ``dsb2018``: DSB2018 nuclei (the packaged recipe ``dsb2018_cpu``), the first 200 images by sorted
  id for training and the last 50 for validation.

Reports mask AP, AP50 (pycocotools, percent), the boundary AF1 / AF2 and the box AP of each
row, with the budget and wall time (train + eval, per model), and writes JSON shaped
``{dataset: {row: {"AP", "AP50", "AF1", "AF2", "box_AP", ...}}}``::

    python benchmarks/bench_quality.py --json bench_results/quality.json            # full
    python benchmarks/bench_quality.py --iters 200 --datasets synthetic --json q.json  # short
    python benchmarks/bench_quality.py --models lsloss delse delse_hp ...             # Table 3

``--protocol joint`` (the default) is the paper's: every model trains its own detector, so box
AP differs between rows. ``--protocol shared-detector`` runs :mod:`bench_shared_detector`
instead: one detector, every mask branch trained on it frozen, scored on identical detections
and on ground-truth boxes (its own options follow).

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
METRICS = ("AP", "AP50", "AF1", "AF2")
#: ``--models`` name -> (model.arch, extra overrides, output folder, {row: results key}).
MODEL_SPECS: dict[str, tuple[str, tuple[str, ...], str, dict[str, str]]] = {
    "maskrcnn": ("mask_rcnn", (), "mask_rcnn", {"maskrcnn": "segm/masks"}),
    "levelset": ("levelset_rcnn", (), "levelset_rcnn",
                 {"levelset_phi0": "segm/masks_phi0", "levelset_phiN": "segm/masks"}),
    "lsloss": ("levelset_rcnn", ("model.mask_head_type=lsloss",), "lsloss",
               {"lsloss": "segm/masks"}),
    "delse": ("levelset_rcnn", ("model.mask_head_type=delse",), "delse",
              {"delse_phi0": "segm/masks_phi0", "delse_phiN": "segm/masks"}),
    "delse_hp": ("levelset_rcnn", ("model.mask_head_type=delse_hp",), "delse_hp",
                 {"delse_hp_phi0": "segm/masks_phi0", "delse_hp_phiN": "segm/masks"}),
}


def dataset_recipe(dataset: str, work: Path, *, dsb_src: Path | None = None,
                   synthetic_train: int = 400, synthetic_val: int = 50) -> tuple[str, list[str]]:
    """The packaged recipe of ``dataset`` and the overrides that point it at the data under
    ``work`` (the DSB2018 annotations are converted there once; the synthetic images are
    made there). Shared with :mod:`bench_shared_detector`."""
    if dataset == "synthetic":
        return "synthetic_cpu", [f"data.root={work / 'synthetic_data'}",
                                 f"data.synthetic_train_images={synthetic_train}",
                                 f"data.synthetic_val_images={synthetic_val}"]
    from levelset_rcnn.data.converters import convert_dsb2018

    src = dsb_src or DSB_DEFAULT
    ann = work / "dsb2018" / "nuclei_all.json"
    if not ann.is_file():
        convert_dsb2018(src, ann, split="all", progress=False)
    return "dsb2018_cpu", [f"data.train_images={src}", f"data.val_images={src}",
                           f"data.train_ann={ann}", f"data.val_ann={ann}"]


def _recipe(dataset: str, args: argparse.Namespace, work: Path) -> tuple[str, list[str]]:
    recipe, data = dataset_recipe(dataset, work, dsb_src=args.dsb_src,
                                  synthetic_train=args.synthetic_train,
                                  synthetic_val=args.synthetic_val)
    return recipe, data + [
        f"solver.max_iter={args.iters}", f"solver.steps=[{int(args.iters * 0.8)}]",
        f"solver.warmup_iters={min(50, max(1, args.iters // 10))}",
        f"model.backbone={args.backbone}", f"train.seed={args.seed}",
        f"train.checkpoint_period={args.iters}", "train.log_period=20",
        "train.eval_at_end=true", "train.eval_period=0"]


def run_one(dataset: str, name: str, args: argparse.Namespace, work: Path) -> dict:
    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import Trainer

    arch, extra, folder, _ = MODEL_SPECS[name]
    recipe, overrides = _recipe(dataset, args, work)
    out = work / dataset / folder
    cfg = load_config(recipe, overrides + list(args.set) + list(extra) + [
        f"model.arch={arch}", f"train.output_dir={out}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=not args.quiet, tensorboard=False)
    result = trainer.train()
    return {"results": result["metrics"], "wall_s": time.perf_counter() - t0,
            "eval_s": trainer.eval_time, "iterations": cfg.solver.max_iter,
            "ims_per_batch": cfg.solver.ims_per_batch}


def _row(segm: dict, run: dict) -> dict:
    row = {k: float(segm.get(k, math.nan)) for k in METRICS}
    row["box_AP"] = float(run["results"].get("bbox", {}).get("AP", math.nan))
    row.update(iterations=run["iterations"], ims_per_batch=run["ims_per_batch"],
               wall_s=round(run["wall_s"], 1))
    return row


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--protocol" in argv:
        i = argv.index("--protocol")
        protocol = argv[i + 1] if i + 1 < len(argv) else ""
        rest = argv[:i] + argv[i + 2:]
        if protocol == "shared-detector":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from bench_shared_detector import main as shared

            return shared(rest)
        if protocol != "joint":
            raise SystemExit(f"--protocol must be joint or shared-detector, got {protocol!r}")
        argv = rest
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic", "dsb2018"],
                   choices=["synthetic", "dsb2018"])
    p.add_argument("--models", nargs="+", default=list(MODEL_SPECS), choices=list(MODEL_SPECS),
                   help="models to train and evaluate (default: all)")
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

    models = list(dict.fromkeys(args.models))
    report: dict[str, dict[str, dict]] = {}
    for dataset in args.datasets:
        d: dict[str, dict] = {}
        runs = {}
        for name in models:
            run = runs[name] = run_one(dataset, name, args, args.work)
            for row, key in MODEL_SPECS[name][3].items():
                d[row] = _row(run["results"][key], run)
        report[dataset] = d
        ims = next(iter(runs.values()))["ims_per_batch"]
        walls = ", ".join(f"{n} {r['wall_s']:.0f} s" for n, r in runs.items())
        print(f"\n{dataset}: {args.iters} iterations x {ims} images, {args.backbone} FPN, "
              f"wall (train + eval) {walls}")
        cols = (*METRICS, "box_AP")
        print(f"| model | {' | '.join(cols)} |\n| --- |" + " ---: |" * len(cols))
        for row, r in d.items():
            print(f"| {row} | " + " | ".join(f"{r[m]:.1f}" for m in cols) + " |")
        if "maskrcnn" in d and "levelset_phiN" in d:
            print(f"phi_N - Mask R-CNN: AP {d['levelset_phiN']['AP'] - d['maskrcnn']['AP']:+.1f}"
                  f" (target +2), AF1 {d['levelset_phiN']['AF1'] - d['maskrcnn']['AF1']:+.1f} "
                  "(target +4)")
        for name in ("levelset", "delse", "delse_hp"):
            if f"{name}_phiN" in d:
                a0, aN = d[f"{name}_phi0"]["AP"], d[f"{name}_phiN"]["AP"]
                print(f"{name}: initial mask AP {a0:.1f}, final {aN:.1f} ({aN - a0:+.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
