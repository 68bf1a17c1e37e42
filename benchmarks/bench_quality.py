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

Reports mask AP, AP50, AP75 (pycocotools, percent), the boundary AF1 / AF2, Boundary AP and
the box AP of each row, as mean and standard deviation over ``--seeds`` (each model trains once
per seed), with the budget and wall time (train + eval, per run), and writes JSON shaped
``{dataset: {row: {metric: {"mean", "std"}, "per_seed": {metric: [...]}, ...}}}``. Each
finished (model, seed) run keeps its scores in its folder under ``--work``; a rerun reuses
them, so a long run cut short loses nothing::

    python benchmarks/bench_quality.py --json bench_results/quality.json            # full
    python benchmarks/bench_quality.py --iters 200 --datasets synthetic --json q.json  # short
    python benchmarks/bench_quality.py --models lsloss delse delse_hp ...             # Table 3
    python benchmarks/bench_quality.py --datasets dsb2018 --models maskrcnn levelset \\
        --iters 600 --seeds 0 1 2 --json bench_results/quality_dsb2018_joint.json

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
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DSB_DEFAULT = REPO.parent / "shared" / "data" / "dsb2018_nuclei" / "stage1_train"
METRICS = ("AP", "AP50", "AP75", "AF1", "AF2", "boundary_AP")
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


def _recipe(dataset: str, args: argparse.Namespace, work: Path, seed: int
            ) -> tuple[str, list[str]]:
    recipe, data = dataset_recipe(dataset, work, dsb_src=args.dsb_src,
                                  synthetic_train=args.synthetic_train,
                                  synthetic_val=args.synthetic_val)
    return recipe, data + [
        f"solver.max_iter={args.iters}", f"solver.steps=[{int(args.iters * 0.8)}]",
        f"solver.warmup_iters={min(50, max(1, args.iters // 10))}",
        f"model.backbone={args.backbone}", f"train.seed={seed}",
        f"train.checkpoint_period={args.iters}", "train.log_period=20",
        "train.eval_at_end=true", "train.eval_period=0"]


#: What decides a training's outcome: a finished run whose stored recipe agrees on these is
#: the run this benchmark would make (logging, checkpoints and folders may differ).
SAME_RUN = ("model", "data", "solver", "train.seed", "train.init_from", "train.freeze")


def _same_training(a: dict, b: dict) -> bool:
    for key in SAME_RUN:
        section, _, field = key.partition(".")
        va, vb = a.get(section, {}), b.get(section, {})
        if field:
            va, vb = va.get(field), vb.get(field)
        if va != vb:
            return False
    return True


def _score_finished(cfg: object, final: Path) -> dict | None:
    """The evaluation of a finished training in ``final`` (``model_final.pth``) when its recipe
    is the one ``cfg`` would train (:data:`SAME_RUN`), else None."""
    import torch

    from levelset_rcnn.engine.build import load_trained_model
    from levelset_rcnn.engine.data import build_datasets, build_val_loader
    from levelset_rcnn.engine.inference import build_evaluator, evaluate_model

    if not final.is_file():
        return None
    model, trained_cfg, _ = load_trained_model(final)
    if not _same_training(trained_cfg.to_dict(), cfg.to_dict()):  # type: ignore[attr-defined]
        print(f"{final}: another recipe than this run's; training again")
        return None
    print(f"{final}: scoring the finished training")
    ds = build_datasets(trained_cfg, splits=("val",))["val"]
    loader = build_val_loader(ds, rank=0, world_size=1, max_images=trained_cfg.eval.max_images)
    evaluator = build_evaluator(ds, model, trained_cfg.eval)
    return evaluate_model(model.eval(), loader, evaluator, torch.device("cpu"), progress=False)


def run_one(dataset: str, name: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """Train (or reuse) one model and seed: ``{"results", "wall_s", "iterations", ...}``.

    Each finished run leaves :data:`SCORES` in its folder; a rerun with the same budget reuses
    it, and scores a finished ``model_final.pth`` of the same recipe instead of training it
    again (a run cut short while evaluating, or one copied from another benchmark)."""
    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import Trainer

    arch, extra, folder, _ = MODEL_SPECS[name]
    recipe, overrides = _recipe(dataset, args, work, seed)
    out = work / dataset / folder / f"seed{seed}"
    cfg = load_config(recipe, overrides + list(args.set) + list(extra) + [
        f"model.arch={arch}", f"train.output_dir={out}"])
    scores = out / SCORES
    if scores.is_file():
        try:
            done = json.loads(scores.read_text())
        except ValueError:
            done = {}
        if _same_training(done.get("config", {}), cfg.to_dict()):
            print(f"{dataset}/{folder}/seed{seed}: reusing {scores} (delete it to run again)")
            return done
    t0 = time.perf_counter()
    results = _score_finished(cfg, out / "model_final.pth")
    if results is None:
        trainer = Trainer(cfg, progress=not args.quiet, tensorboard=False)
        results = trainer.train()["metrics"]
    done = {"results": results, "wall_s": time.perf_counter() - t0,
            "iterations": cfg.solver.max_iter, "ims_per_batch": cfg.solver.ims_per_batch,
            "seed": seed, "config": cfg.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    scores.write_text(json.dumps(done, default=str))
    return done


#: Each finished (model, seed) run's scores, in its folder under ``--work``.
SCORES = "bench_scores.json"


def _values(segm: dict, run: dict) -> dict[str, float]:
    row = {k: float(segm.get(k, math.nan)) for k in METRICS}
    row["box_AP"] = float(run["results"].get("bbox", {}).get("AP", math.nan))
    return row


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--protocol" in argv:
        i = argv.index("--protocol")
        protocol = argv[i + 1] if i + 1 < len(argv) else ""
        rest = argv[:i] + argv[i + 2:]
        if protocol == "shared-detector":
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
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="seeds: each model trains once per seed; mean and standard deviation "
                        "over them (default: %(default)s)")
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
    args.work = args.work.resolve()  # the recipes store absolute data paths

    from bench_shared_detector import _stats

    models = list(dict.fromkeys(args.models))
    report: dict[str, dict[str, dict]] = {}
    if args.json and args.json.is_file():  # datasets run one at a time share one file
        try:
            report = {k: v for k, v in json.loads(args.json.read_text()).items()
                      if k not in args.datasets}
        except ValueError as e:
            raise SystemExit(f"{args.json}: not a results file of this benchmark ({e})") from e
    cols = (*METRICS, "box_AP")
    for dataset in args.datasets:
        raw: dict[str, dict[str, list[float]]] = {}
        walls: dict[str, list[float]] = {}
        ims = 0
        for seed in args.seeds:  # seed-major: a run cut short has every model for its seeds
            for name in models:
                run = run_one(dataset, name, seed, args, args.work)
                ims = run["ims_per_batch"]
                walls.setdefault(name, []).append(run["wall_s"])
                for row, key in MODEL_SPECS[name][3].items():
                    cell = raw.setdefault(row, {m: [] for m in cols})
                    for m, v in _values(run["results"].get(key, {}), run).items():
                        cell[m].append(v)
                report[dataset] = {row: {**{m: _stats(v) for m, v in cells.items()},
                                         "per_seed": cells, "seeds": args.seeds,
                                         "iterations": args.iters, "ims_per_batch": ims}
                                   for row, cells in raw.items()}
                for name_, w in walls.items():
                    for row in MODEL_SPECS[name_][3]:
                        report[dataset][row]["wall_s"] = _stats(w)
                if args.json:  # after every run: nothing finished is lost
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(report, indent=2))
        d = report[dataset]
        wall = ", ".join(f"{n} {statistics.fmean(w):.0f} s" for n, w in walls.items())
        print(f"\n{dataset}: {args.iters} iterations x {ims} images, {args.backbone} FPN, "
              f"seeds {args.seeds}, wall per run (train + eval) {wall}")
        print(f"| model | {' | '.join(cols)} |\n| --- |" + " ---: |" * len(cols))
        for row, r in d.items():
            print(f"| {row} | " + " | ".join(
                f"{r[m]['mean']:.1f} ± {r[m]['std']:.1f}" for m in cols) + " |")
        if "maskrcnn" in d and "levelset_phiN" in d:
            da = d["levelset_phiN"]["AP"]["mean"] - d["maskrcnn"]["AP"]["mean"]
            df = d["levelset_phiN"]["AF1"]["mean"] - d["maskrcnn"]["AF1"]["mean"]
            print(f"phi_N - Mask R-CNN: AP {da:+.1f} (target +2), AF1 {df:+.1f} (target +4)")
        for name in ("levelset", "delse", "delse_hp"):
            if f"{name}_phiN" in d:
                a0, aN = d[f"{name}_phi0"]["AP"]["mean"], d[f"{name}_phiN"]["AP"]["mean"]
                print(f"{name}: initial mask AP {a0:.1f}, final {aN:.1f} ({aN - a0:+.1f})")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
