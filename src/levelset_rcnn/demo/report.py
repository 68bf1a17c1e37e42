"""The demo's ``report.md``: AP / AF table (phi_0 vs phi_N), phi_0 -> phi_N figure,
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
from .figures import capture_evolution, evolution_figure, loss_figure

__all__ = ["write_report"]

ROW_NAMES = {"masks_phi0": "LevelSet R-CNN, phi_0 (initial)",
             "masks": "LevelSet R-CNN, phi_N (final)"}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def write_report(trainer: Any, result: dict[str, Any], out: Path, *, progress: bool = True,
                 showcase: bool = False, t_train: float, t_start: float,
                 num_figure_images: int = 3, num_overlays: int = 4) -> Path:
    """Write figures, overlays, ``demo_results.json`` and ``report.md`` under ``out``."""
    cfg = trainer.cfg
    model = unwrap(trainer.model).eval()
    val = trainer.datasets["val"]
    base = base_dataset(val)
    metrics = result["metrics"]
    table = metrics_table(metrics)
    rows = {ROW_NAMES[k]: table[k] for k in ("masks_phi0", "masks") if k in table}

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
    summary = {"table": {k: _clean(v) for k, v in table.items()},
               "bbox": _clean(metrics.get("bbox", {})), "iterations": cfg.solver.max_iter,
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
        "## Mask quality: initial phi_0 against refined phi_N", "",
        "COCO mask AP (pycocotools) and the paper's boundary F-measure AF1 / AF2, in percent "
        "(one evaluation pass; both rows share the same detections).", "",
        format_metrics(rows, columns=("AP", "AP50", "AP75", "AF1", "AF2")), "",
        f"Box AP: {box_ap:.1f}.", "",
        "## phi_0 evolving into phi_N", "",
    ]
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
