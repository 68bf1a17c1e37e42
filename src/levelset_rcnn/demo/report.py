"""The demo's ``report.md``: Mask R-CNN's 28x28 head, phi_0 and phi_N on the same detections
(AP / AF / Boundary AP), the figure of what phi_N fixes, the phi_0 -> phi_N iterates,
prediction overlays, loss curve, budget and wall time."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ..comm import unwrap
from ..engine.data import base_dataset
from ..engine.predict import run_predict
from ..engine.tables import format_metrics, metrics_table
from .figures import (
    capture_evolution,
    compare_instances,
    comparison_figure,
    evolution_figure,
    loss_figure,
)

__all__ = ["write_report"]

ROW_NAMES = {"masks_phi0": "LevelSet R-CNN, phi_0 (initial)",
             "masks": "LevelSet R-CNN, phi_N (final)"}
BASELINE_ROW = "Mask R-CNN 28x28, same frozen detector"
COLUMNS = ("AP", "AP50", "AP75", "AF1", "AF2", "boundary_AP")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def write_report(trainer: Any, result: dict[str, Any], out: Path, *, progress: bool = True,
                 showcase: bool = False, t_train: float, t_start: float,
                 baseline: Any = None, baseline_result: dict[str, Any] | None = None,
                 num_figure_images: int = 3, num_overlays: int = 4,
                 num_compare_images: int = 12) -> Path:
    """Write figures, overlays, ``demo_results.json`` and ``report.md`` under ``out``;
    ``baseline`` (a trainer of Mask R-CNN's head on the same frozen detector) and its
    ``baseline_result`` add its row and the comparison figure."""
    cfg = trainer.cfg
    model = unwrap(trainer.model).eval()
    val = trainer.datasets["val"]
    base = base_dataset(val)
    metrics = result["metrics"]
    table = metrics_table(metrics)
    rows = {}
    if baseline_result is not None:
        table["maskrcnn"] = metrics_table(baseline_result["metrics"])["masks"]
        rows[BASELINE_ROW] = table["maskrcnn"]
    rows.update({ROW_NAMES[k]: table[k] for k in ("masks_phi0", "masks") if k in table})

    compare = None
    if baseline is not None:
        bmodel = unwrap(baseline.model).eval()
        pairs = [compare_instances(model, bmodel, *val[i])
                 for i in range(min(num_compare_images, len(val)))]
        compare = comparison_figure(pairs, out / "same_detections.png")
    samples = [capture_evolution(model, val[i][0], max_instances=2)
               for i in range(min(num_figure_images, len(val)))]
    evo = evolution_figure(samples, out / "phi0_to_phiN.png", class_names=base.class_names)
    loss_png = loss_figure(result["history"], out / "losses.png") if result["history"] else None
    files = [base.image_dir / base.coco.imgs[base.ids[i]]["file_name"]
             for i in range(min(num_overlays, len(base)))]
    run_predict(model, files, out / "predictions", device=trainer.device,
                class_names=base.class_names, label_to_cat_id=base.label_to_cat_id,
                score_thresh=0.5, polygons=True, progress=progress)
    show = None
    if showcase:
        from .showcase import run_showcase

        show = run_showcase(out, num_iters=300)
    wall = time.perf_counter() - t_start
    box_base = (baseline_result or {}).get("metrics", {}).get("bbox", {}).get("AP")
    summary = {"table": {k: _clean(v) for k, v in table.items()},
               "bbox": _clean(metrics.get("bbox", {})), "iterations": cfg.solver.max_iter,
               "baseline_bbox_AP": _clean(box_base),
               "baseline_iterations": baseline.cfg.solver.max_iter if baseline else None,
               "ims_per_batch": cfg.solver.ims_per_batch,
               "train_images": cfg.data.synthetic_train_images,
               "val_images": cfg.data.synthetic_val_images,
               "train_and_eval_time_s": t_train, "wall_time_s": wall}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=2))

    box_ap = metrics.get("bbox", {}).get("AP", float("nan"))
    lines = [
        "# LevelSet R-CNN demo report", "",
        f"A LevelSet R-CNN ({cfg.model.backbone} FPN, {cfg.model.fpn_channels} FPN channels, "
        f"N = {cfg.model.num_steps} Chan-Vese steps, C = {cfg.model.cv_channels} features) "
        f"trained from scratch on the CPU for {cfg.solver.max_iter} iterations of "
        f"{cfg.solver.ims_per_batch} images ({cfg.data.synthetic_train_images} synthetic "
        f"{cfg.data.synthetic_image_size}x{cfg.data.synthetic_image_size} training images), "
        f"evaluated on {cfg.data.synthetic_val_images} validation images.", "",
        "## Mask quality on the same detections", "",
        "COCO mask AP (pycocotools), the paper's boundary F-measure AF1 / AF2 (DAVIS's "
        "boundary) and Boundary AP (Cheng et al. 2021), in percent. "
        + (f"Mask R-CNN's 28x28 mask head was trained for {baseline.cfg.solver.max_iter} "
           "iterations on the LevelSet model's frozen backbone, RPN and box head "
           "(`train.init_from` + `train.freeze`), so all three rows score the same boxes."
           if baseline is not None else "Both rows share the same detections."), "",
        format_metrics(rows, columns=COLUMNS), "",
        f"Box AP: {box_ap:.1f}" + (f" (Mask R-CNN head on the frozen detector: {box_base:.1f})."
                                   if box_base is not None else "."), "",
    ]
    if compare:
        lines += ["## What phi_N fixes", "", f"![same detections]({compare.name})", "",
                  "The validation instances where phi_N gains most over both the 28x28 mask and "
                  "phi_0 (IoU with the ground truth on the 112x112 RoI grid in the titles).", ""]
    lines += ["## phi_0 evolving into phi_N", ""]
    lines += ([f"![phi_0 to phi_N]({evo.name})", "",
               "Left: the image inside the box with the zero level set of phi_0 (dashed) and "
               "of phi_N (solid). Then every Chan-Vese iterate, red inside, blue outside."]
              if evo else ["No detection to draw (the model found nothing)."])
    lines += ["", "## Predictions", "",
              "Masks, sub-pixel contours (zero level set of phi_N) and boxes, score >= 0.5. "
              "COCO results and polygons: `predictions/results.json`, "
              "`predictions/polygons.json`.", ""]
    lines += [f"![{p.stem}](predictions/overlays/{p.stem}.png)" for p in files]
    if loss_png:
        lines += ["", "## Training losses", "", f"![losses]({loss_png.name})"]
    if show:
        lines += ["", "## Classic Chan-Vese (intensity) showcase", "", f"![showcase]({show.name})"]
    lines += ["", "## Budget", "",
              f"- training and evaluation: {t_train:.0f} s; whole demo: {wall:.0f} s",
              f"- checkpoint: `train/model_final.pth`; TensorBoard: `tensorboard --logdir "
              f"{out}/train/tb`",
              "- reproduce: `levelset-rcnn demo` (see `--help` for `--max-iter`, `--quick`)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
