"""Mask heads compared on ONE detector: every row is a mask branch trained on the same frozen
backbone, RPN and box head, and scored on identical detections and on ground-truth boxes.

Protocol (``bench_quality.py --protocol shared-detector`` runs this):

1. train one joint Mask R-CNN (``--detector-iters``, seed 0): the shared detector;
2. for every row and seed, train only its mask part from that checkpoint in frozen-detector
   mode (``train.init_from`` + ``train.freeze=[backbone,rpn,box_head]``), same data, budget
   (``--iters``) and seeds;
3. evaluate every row twice with the COCO evaluator (mask AP, AP75, AF1, AF2 on DAVIS's
   boundary, Boundary AP):

   * ``detections``: the frozen detector's own detections; the boxes and scores are checked to
     be identical across rows (a digest per image);
   * ``gt_boxes``: the mask head alone, on the ground-truth boxes (score 1).

Rows: ``maskrcnn`` (28x28), ``maskrcnn_112``, ``tsdf`` (Mask R-CNN on a TSDF target),
``levelset_phi0`` / ``levelset_phiN`` (learned 112x112 features), ``levelset_image_phiN``
(beyond the paper: the image inside each box as one more Chan-Vese feature channel,
``model.cv_image_channels=1``), ``levelset_steps_*`` and ``levelset_image_steps_*`` (the
same two with the evolution started at ``dt = eps = 1``, :data:`STEPS`),
``levelset_interp_phiN`` (the interpolated head), ``lsloss``, ``delse_phiN``,
``delse_hp_phiN``. Mean and standard deviation over the seeds; JSON shaped
``{dataset: {protocol: {row: {metric: {"mean", "std"}}}}}``::

    python benchmarks/bench_shared_detector.py --json bench_results/shared_detector.json
    python benchmarks/bench_shared_detector.py --datasets dsb2018 --seeds 0 --iters 100 \\
        --detector-iters 300 --rows maskrcnn levelset --json /tmp/q.json        # a short run

Nothing finished is lost when a run is cut short: the JSON is rewritten after every run, each
(row, seed) run leaves its scores (``bench_scores.json``) in its folder under ``--work``, and a
rerun with the same budget reuses them (and the saved detector), scoring a finished training
that has no scores yet instead of training it again. Datasets, and rows of the same budget,
run separately merge into one ``--json`` (a row group can be added to a finished table).

This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

METRICS = ("AP", "AP75", "AF1", "AF2", "boundary_AP")
#: The evolution started with large steps (dt = eps = 1; the model default is 0.05 / 0.1).
STEPS = "model.hyper_init={dt: 1.0, eps: 1.0}"
#: row group -> (model.arch, overrides, {row: mask key of the evaluation}).
ROWS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "maskrcnn": ("mask_rcnn", (), {"maskrcnn": "masks"}),
    "levelset": ("levelset_rcnn", (), {"levelset_phi0": "masks_phi0",
                                        "levelset_phiN": "masks"}),
    "levelset_image": ("levelset_rcnn", ("model.cv_image_channels=1",),
                       {"levelset_image_phi0": "masks_phi0", "levelset_image_phiN": "masks"}),
    "levelset_steps": ("levelset_rcnn", (STEPS,), {"levelset_steps_phi0": "masks_phi0",
                                                   "levelset_steps_phiN": "masks"}),
    "levelset_image_steps": ("levelset_rcnn", ("model.cv_image_channels=1", STEPS),
                             {"levelset_image_steps_phi0": "masks_phi0",
                              "levelset_image_steps_phiN": "masks"}),
    "maskrcnn_112": ("mask_rcnn", ("model.mask_resolution=112",), {"maskrcnn_112": "masks"}),
    "tsdf": ("levelset_rcnn", ("model.mask_head_type=tsdf",), {"tsdf": "masks"}),
    "levelset_interp": ("levelset_rcnn", ("model.cv_features=interpolated",),
                        {"levelset_interp_phi0": "masks_phi0",
                         "levelset_interp_phiN": "masks"}),
    "lsloss": ("levelset_rcnn", ("model.mask_head_type=lsloss",), {"lsloss": "masks"}),
    "delse": ("levelset_rcnn", ("model.mask_head_type=delse",), {"delse_phi0": "masks_phi0",
                                                                 "delse_phiN": "masks"}),
    "delse_hp": ("levelset_rcnn", ("model.mask_head_type=delse_hp",),
                 {"delse_hp_phi0": "masks_phi0", "delse_hp_phiN": "masks"}),
}
#: Row names in the printed tables.
LABELS = {
    "maskrcnn": "Mask R-CNN 28x28", "maskrcnn_112": "Mask R-CNN 112x112",
    "tsdf": "Mask R-CNN on a TSDF target",
    "levelset_phi0": "LevelSet phi_0", "levelset_phiN": "LevelSet phi_N",
    "levelset_image_phi0": "LevelSet + image features phi_0",
    "levelset_image_phiN": "LevelSet + image features phi_N",
    "levelset_steps_phi0": "LevelSet, large initial steps, phi_0",
    "levelset_steps_phiN": "LevelSet, large initial steps, phi_N",
    "levelset_image_steps_phi0": "LevelSet + image features, large initial steps, phi_0",
    "levelset_image_steps_phiN": "LevelSet + image features, large initial steps, phi_N",
    "levelset_interp_phi0": "LevelSet, interpolated features, phi_0",
    "levelset_interp_phiN": "LevelSet, interpolated features, phi_N",
    "lsloss": "LS loss", "delse_phi0": "DELSE phi_0", "delse_phiN": "DELSE phi_N",
    "delse_hp_phi0": "DELSE + HP phi_0", "delse_hp_phiN": "DELSE + HP phi_N",
}
COLUMNS = {"AP": "mask AP", "AP75": "AP75", "AF1": "AF1", "AF2": "AF2",
           "boundary_AP": "Boundary AP", "box_AP": "box AP"}
FROZEN = "train.freeze=[backbone,rpn,box_head]"


def _recipe(dataset: str, args: argparse.Namespace, work: Path) -> tuple[str, list[str]]:
    from bench_quality import dataset_recipe

    recipe, data = dataset_recipe(dataset, work, dsb_src=args.dsb_src,
                                  synthetic_train=args.synthetic_train,
                                  synthetic_val=args.synthetic_val)
    common = ["train.log_period=20", "train.eval_period=0", "train.eval_at_end=false",
              f"model.backbone={args.backbone}"]
    if args.paste == "exact":
        common.append("model.mask_paste=exact")
    return recipe, data + common


def _budget(iters: int) -> list[str]:
    return [f"solver.max_iter={iters}", f"solver.steps=[{max(1, int(iters * 0.8))}]",
            f"solver.warmup_iters={min(50, max(1, iters // 10))}",
            f"train.checkpoint_period={iters}"]


def _train(recipe: str, overrides: list[str], quiet: bool) -> tuple[Any, float]:
    from levelset_rcnn.config import load_config
    from levelset_rcnn.engine import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(load_config(recipe, overrides), progress=not quiet, tensorboard=False)
    trainer.train()
    return trainer, time.perf_counter() - t0


def _strip_mask_part(src: Path, dst: Path) -> None:
    """The detector alone (backbone, FPN, RPN, box head) as a plain state dict, so that every
    row's mask part (trunk and head) starts fresh: none inherits the joint run's mask head."""
    import torch

    from levelset_rcnn.engine.checkpoint import load_checkpoint, model_state

    state = model_state(load_checkpoint(src))
    keep = {k: v for k, v in state.items()
            if not k.startswith(("roi_heads.mask_head.", "roi_heads.mask_branch."))}
    torch.save(keep, dst)


def _digest(outs: list[dict]) -> str:
    h = hashlib.sha256()
    for o in outs:
        for k in ("boxes", "scores", "labels"):
            h.update(o[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _gt_box_outputs(model: Any, images: list, targets: list) -> list[dict]:
    """The mask head alone: each ground-truth box as a detection of score 1."""
    import torch
    from torchvision.models.detection.transform import resize_boxes

    from levelset_rcnn.engine.inference import add_phi0_masks
    from levelset_rcnn.modeling.mask_branches import masks_from_maps
    from levelset_rcnn.modeling.transform import paste_masks

    outs = []
    with torch.inference_mode():
        for img, t in zip(images, targets, strict=True):
            il, _ = model.transform([img])
            feats = model.head_features(model.backbone(il.tensors), il)
            size = il.image_sizes[0]
            boxes = t["boxes"].float()
            rois = resize_boxes(boxes, list(img.shape[-2:]), list(size))
            maps = model.roi_heads.mask_maps(feats, [rois], [size], [t["labels"]])
            res = {**maps, "masks": masks_from_maps(maps)}
            o = {"boxes": boxes, "labels": t["labels"], "scores": torch.ones(len(boxes)),
                 "masks": paste_masks(res, boxes, tuple(img.shape[-2:]),
                                      mode=model.transform.mask_paste)}
            if "tsdf_init" in maps:
                o["tsdf_init"] = maps["tsdf_init"]
                add_phi0_masks(o, mode=model.transform.mask_paste)
            outs.append(o)
    return outs


def _evaluate(trainer: Any) -> tuple[dict[str, dict], list[str]]:
    """Both protocols for one trained model: {protocol: evaluator results}, and the digests of
    its detections (per image)."""
    import torch

    from levelset_rcnn.data import collate_fn
    from levelset_rcnn.engine.data import build_datasets
    from levelset_rcnn.engine.inference import make_evaluator, predict_batch

    model = trainer.model.eval()
    ds = build_datasets(trainer.cfg, splits=("val",))["val"]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate_fn)
    evs = {p: make_evaluator(ds, model) for p in ("detections", "gt_boxes")}
    for ev in evs.values():
        ev.reset()
    digests = []
    phi0 = "masks_phi0" in evs["detections"].mask_keys
    for images, targets in loader:
        outs = predict_batch(model, images, torch.device("cpu"), phi0=phi0)
        digests.append(_digest(outs))
        evs["detections"].process(targets, outs)
        evs["gt_boxes"].process(targets, _gt_box_outputs(model, images, targets))
    return {p: ev.evaluate() for p, ev in evs.items()}, digests


#: Each finished (row, seed) run's scores, in its output folder: a rerun of the benchmark
#: reuses them (same budget and detector) instead of training again.
SCORES = "bench_scores.json"


def _load_scores(path: Path, iters: int, detector: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except ValueError:
        return None  # cut short while writing: run again
    if done.get("iters") != iters or done.get("detector") != str(detector.resolve()):
        return None
    return done


def _trained(out: Path, iters: int, detector: Path) -> Any | None:
    """A finished training of this run (``model_final.pth`` of the same budget and detector)
    whose scores were not written (cut short while evaluating): scored without training."""
    final = out / "model_final.pth"
    if not final.is_file():
        return None
    from types import SimpleNamespace

    from levelset_rcnn.engine.build import load_trained_model

    model, cfg, _ = load_trained_model(final)
    same_detector = Path(str(cfg.train.init_from)).resolve() == detector.resolve()
    if cfg.solver.max_iter != iters or not same_detector:
        return None
    print(f"{out}: scoring the finished training in {final}")
    return SimpleNamespace(model=model, cfg=cfg)


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    """``{protocol: {row: {metric: [one value per seed]}}}`` -> mean and standard deviation."""
    return {proto: {row: {m: _stats(v) for m, v in cells.items()} for row, cells in rows.items()}
            for proto, rows in raw.items()}


def _write_report(args: argparse.Namespace, report: dict[str, Any], timing: dict[str, Any], *,
                  complete: bool) -> None:
    """The JSON: written after every finished run (``complete=False``), so that a long run cut
    short keeps its rows, and at the end."""
    if not args.json:
        return
    out = dict(report)
    out["_meta"] = {"seeds": args.seeds, "iters": args.iters,
                    "detector_iters": args.detector_iters, "backbone": args.backbone,
                    "timing": timing, "identical_detections": True, "complete": complete}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))


def _previous(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any],
                                               dict[str, dict[str, Any]]]:
    """What ``--json`` already holds and this run keeps: the other datasets' results and
    timing, and, per dataset of this run measured with the same budget (``--iters``,
    ``--detector-iters``, ``--seeds``), the rows of the groups this run leaves out (rows can
    be added to a finished table one group at a time)."""
    if not args.json or not args.json.is_file():
        return {}, {}, {}
    try:
        old = json.loads(args.json.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{args.json}: not a results file of this benchmark ({e}); pass "
                         "another --json or remove it") from e
    old_timing = old.get("_meta", {}).get("timing", {})
    keep = {k: v for k, v in old.items() if k != "_meta" and k not in args.datasets}
    timing = {k: v for k, v in old_timing.items() if k in keep}
    produced = {row for group in args.rows for row in ROWS[group][2]}
    rows: dict[str, dict[str, Any]] = {}
    for dataset in args.datasets:
        t = old_timing.get(dataset, {})
        same = (t.get("iters"), t.get("detector_iters"), t.get("seeds")) == (
            args.iters, args.detector_iters, args.seeds)
        if not same or dataset not in old:
            continue
        rows[dataset] = {
            "results": {proto: {r: v for r, v in cells.items() if r not in produced}
                        for proto, cells in old[dataset].items()},
            "timing": {g: v for g, v in t.get("rows", {}).items() if g not in args.rows},
            "detector_s": t.get("detector_s")}
    return keep, timing, rows


def print_tables(report: dict[str, Any], baseline: str = "maskrcnn") -> None:
    """Markdown tables of a report (mean ± std per metric), with each row's difference to
    ``baseline`` in mask AP, AF1 and Boundary AP; ``*`` marks a difference larger than twice
    the larger standard deviation (the only ones that count; none with a single seed)."""
    cols = METRICS + ("box_AP",)
    for dataset, protocols in report.items():
        if dataset.startswith("_"):
            continue
        for proto, rows in protocols.items():
            print(f"\n{dataset}, {proto}")
            print("| row | " + " | ".join(COLUMNS[c] for c in cols)
                  + " | Δ AP | Δ AF1 | Δ BAP |\n| --- |" + " ---: |" * (len(cols) + 3))
            base = rows.get(baseline)
            for row, r in rows.items():
                diffs = []
                for m in ("AP", "AF1", "boundary_AP"):
                    if base is None or row == baseline:
                        diffs.append("")
                        continue
                    d = r[m]["mean"] - base[m]["mean"]
                    spread = max(r[m]["std"], base[m]["std"])  # 0: one seed, nothing counts
                    sig = spread > 0 and abs(d) > 2 * spread
                    diffs.append(f"{d:+.1f}{'*' if sig else ''}")
                print(f"| {LABELS.get(row, row)} | " + " | ".join(
                    f"{r[m]['mean']:.1f} ± {r[m]['std']:.1f}" for m in cols) + " | "
                    + " | ".join(diffs) + " |")


def _stats(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["dsb2018", "synthetic"],
                   choices=["synthetic", "dsb2018"])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=300, help="mask-branch iterations per row")
    p.add_argument("--detector-iters", type=int, default=1500,
                   help="iterations of the shared joint Mask R-CNN")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--synthetic-train", type=int, default=200)
    p.add_argument("--synthetic-val", type=int, default=50)
    p.add_argument("--dsb-src", type=Path, default=None,
                   help="DSB2018 stage1_train folder (default: ../shared/data's copy)")
    p.add_argument("--work", type=Path, default=REPO / "bench_results" / "shared_detector_work")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--paste", choices=["default", "exact"], default="default",
                   help="mask pasting: each model's default (exact for level sets, "
                        "torchvision's for binary masks) or exact for every row")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--show", action="store_true",
                   help="only print the tables of the results already in --json")
    args = p.parse_args(argv)
    if args.show:
        if not args.json or not args.json.is_file():
            raise SystemExit("--show needs --json naming a results file")
        print_tables(json.loads(args.json.read_text()))
        return 0

    report, timing, kept = _previous(args)
    for dataset in args.datasets:
        work = args.work / dataset
        recipe, common = _recipe(dataset, args, args.work)
        det_dir = work / "detector"
        detector = det_dir / "detector_only.pth"
        old = kept.get(dataset, {"results": {}, "timing": {}})
        detector_s = old.get("detector_s")  # a reused detector keeps its recorded time
        if not detector.is_file():
            t0 = time.perf_counter()
            _train(recipe, common + _budget(args.detector_iters) + [
                "model.arch=mask_rcnn", "train.seed=0", f"train.output_dir={det_dir}"],
                args.quiet)
            _strip_mask_part(det_dir / "model_final.pth", detector)
            detector_s = round(time.perf_counter() - t0, 1)
        timing[dataset] = {"detector_s": detector_s,
                           "rows": dict(old["timing"]),
                           "seeds": args.seeds, "iters": args.iters,
                           "detector_iters": args.detector_iters}
        raw: dict[str, dict[str, dict[str, list[float]]]] = {"detections": {}, "gt_boxes": {}}
        ref_digest = None
        # seed-major: a run cut short still has every row for its first seeds
        for seed in args.seeds:
            for group in args.rows:
                arch, extra, keys = ROWS[group]
                out = work / group / f"seed{seed}"
                done = _load_scores(out / SCORES, args.iters, detector)
                trainer = None if done else _trained(out, args.iters, detector)
                wall = math.nan
                if done is None and trainer is None:
                    trainer, wall = _train(recipe, common + _budget(args.iters) + list(extra) + [
                        f"model.arch={arch}", f"train.seed={seed}", f"train.output_dir={out}",
                        f"train.init_from={detector}", FROZEN], args.quiet)
                if done is None:
                    t_eval = time.perf_counter()
                    results, digests = _evaluate(trainer)
                    done = {"results": results, "digests": digests, "iters": args.iters,
                            "detector": str(detector.resolve()), "train_s": round(wall, 1),
                            "eval_s": round(time.perf_counter() - t_eval, 1)}
                    (out / SCORES).write_text(json.dumps(done, default=float))
                else:
                    print(f"{dataset}/{group}/seed{seed}: reusing {out / SCORES} (delete it to "
                          "train and score this run again)")
                results, digests = done["results"], done["digests"]
                timing[dataset]["rows"].setdefault(group, []).append(
                    {"train_s": done["train_s"], "eval_s": done["eval_s"]})
                if ref_digest is None:
                    ref_digest = digests
                elif digests != ref_digest:
                    raise SystemExit(f"{dataset}/{group}/seed{seed}: the detections differ from "
                                     "the first row's: the detector is not shared")
                for protocol, res in results.items():
                    for row, key in keys.items():
                        segm = res.get(f"segm/{key}", {})
                        cell = raw[protocol].setdefault(row, {m: [] for m in METRICS + ("box_AP",)})
                        for m in METRICS:
                            cell[m].append(float(segm.get(m, math.nan)))
                        cell["box_AP"].append(float(res.get("bbox", {}).get("AP", math.nan)))
                report[dataset] = {proto: {**old["results"].get(proto, {}), **cells}
                                   for proto, cells in _summary(raw).items()}
                _write_report(args, report, timing, complete=False)
        print_tables({dataset: report[dataset]})
    _write_report(args, report, timing, complete=True)
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
