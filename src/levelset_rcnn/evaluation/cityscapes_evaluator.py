"""Cityscapes instance-level AP / AP50 through cityscapesscripts' official evaluation code.

Predictions are written in the official submission format (per image ``<name>_pred.txt`` with
lines ``<mask png> <label id> <score>``, one binary PNG per instance) and scored by
``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling.evaluateImgLists`` against the
``*_gtFine_instanceIds.png`` files. The official code keeps its settings in a module-level
``args`` object and caches the ground truth in a JSON file beside its own source; we hand it a
fresh settings object per run instead (so a previous evaluation in the process, or a script
that edited the module's ``args``, changes nothing) with the cache in our own folder, never in
the dataset, and run it in the prediction folder (it writes to the working directory). Two
shims make cityscapesscripts 2.3 run under NumPy 2.4 (see :func:`_official_code_compat`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval
from cityscapesscripts.helpers.labels import name2label
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .evaluator import RecordingEvaluator

__all__ = ["CityscapesEvaluator", "cityscapes_eval_args", "run_cityscapes_evaluation"]

_IMAGE_SUFFIX = "_leftImg8bit"
_GT_SUFFIX = "_gtFine_instanceIds.png"


def cityscapes_eval_args(*, gt_instances_file: str | Path, prediction_path: str | Path,
                         export_file: str | Path) -> Any:
    """A fresh settings object for the official evaluation, with its protocol values.

    The values are the defaults of ``evalInstanceLevelSemanticLabeling.args`` (overlaps
    0.5:0.05:0.95, minimum region 100 pixels, no distance-based variants); the three paths are
    absolute so that the run does not depend on the working directory.
    """
    args = cs_eval.CArgs()
    args.overlaps = np.arange(0.5, 1.0, 0.05)
    args.minRegionSizes = np.array([100, 1000, 1000])
    args.distanceThs = np.array([float("inf"), 100, 50])
    args.distanceConfs = np.array([-float("inf"), 0.5, 0.5])
    args.distanceAvailable = False
    args.gtInstancesFile = str(Path(gt_instances_file).resolve())
    args.predictionPath = str(Path(prediction_path).resolve())
    args.predictionWalk = None
    args.exportFile = str(Path(export_file).resolve())
    args.JSONOutput = True
    args.quiet = True
    args.csv = False
    args.colorized = False
    args.instLabels = []
    args.cityscapesPath = ""
    args.groundTruthSearch = ""
    return args


def _json_default(obj: Any) -> Any:
    return obj.item() if isinstance(obj, np.generic) else obj.__dict__


def _write_json(data: Any, file_name: str) -> None:
    """``csHelpers.writeDict2JSON`` that also takes NumPy scalars (NumPy 2 no longer hands
    back Python ints from the counts it stores); the per-prediction debug dump
    ``matches.json`` is skipped (large, and only ever written to the working directory)."""
    if file_name == "matches.json":
        return
    with open(file_name, "w") as f:
        f.write(json.dumps(data, default=_json_default, sort_keys=True, indent=4))


def _in1d(ar1: Any, ar2: Any, **kwargs: Any) -> np.ndarray:
    return np.isin(np.ravel(ar1), ar2, **kwargs)


@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` for Python 3.10."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _official_code_compat() -> Iterator[None]:
    """Run cityscapesscripts 2.3 under NumPy >= 2.4 for the duration of one evaluation:
    ``np.in1d`` (removed in NumPy 2.4) is provided, and its JSON writer accepts NumPy
    scalars. The matching and AP code is the official code, unchanged."""
    added_in1d = not hasattr(np, "in1d")
    if added_in1d:
        setattr(np, "in1d", _in1d)  # noqa: B010 (NumPy's __getattr__ hides removed names)
    saved_writer = cs_eval.writeDict2JSON
    cs_eval.writeDict2JSON = _write_json
    try:
        yield
    finally:
        cs_eval.writeDict2JSON = saved_writer
        if added_in1d:
            delattr(np, "in1d")


def run_cityscapes_evaluation(pred_files: Sequence[str | Path], gt_files: Sequence[str | Path],
                              *, prediction_path: str | Path, gt_instances_file: str | Path,
                              ) -> dict[str, Any]:
    """Run the official ``evaluateImgLists`` on matched lists of ``*_pred.txt`` / instanceIds
    files and return its result dict (``averages``: ``allAp``, ``allAp50%``, ``classes``).

    Every prediction PNG must lie under ``prediction_path`` (the official check). The gt
    instances are cached in ``gt_instances_file`` (read if it exists: name it after the gt
    list). ``resultInstanceLevelSemanticLabeling.json`` is written to ``prediction_path``.

    Raises:
        RuntimeError: the official code stopped (it calls ``sys.exit``); the message has its
            last words.
    """
    prediction_path = Path(prediction_path).resolve()
    args = cityscapes_eval_args(
        gt_instances_file=gt_instances_file, prediction_path=prediction_path,
        export_file=prediction_path / "resultInstanceLevelSemanticLabeling.json")
    preds = [str(Path(p).resolve()) for p in pred_files]
    gts = [str(Path(g).resolve()) for g in gt_files]
    out = io.StringIO()
    with (_official_code_compat(), _working_dir(prediction_path),
          contextlib.redirect_stdout(out), warnings.catch_warnings()):
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of classes without gt
        try:
            return cs_eval.evaluateImgLists(preds, gts, args)
        except SystemExit as exc:
            said = [line for line in out.getvalue().splitlines() if line.strip()]
            raise RuntimeError("cityscapesscripts' instance evaluation stopped: "
                               + (said[-1] if said else f"exit {exc.code}")) from None


def _gt_file(gt_dir: Path, file_name: str) -> Path:
    path = Path(file_name)
    stem = path.stem
    if not stem.endswith(_IMAGE_SUFFIX):
        raise ValueError(f"image {file_name!r} is not a Cityscapes image name "
                         f"(<city>_<seq>_<frame>{_IMAGE_SUFFIX}.png)")
    return gt_dir / path.parent.name / f"{stem[: -len(_IMAGE_SUFFIX)]}{_GT_SUFFIX}"


def _mask_image(mask: np.ndarray) -> Image.Image:
    """A 1-bit image of a binary ``(H, W)`` uint8 mask as pycocotools decodes it (Fortran
    order): its transpose is C-ordered, so pack that and let Pillow transpose (about 4x
    faster than a NumPy C-order copy or ``Image.fromarray`` of a bool array)."""
    h, w = mask.shape
    packed = np.packbits(np.asarray(mask.T, dtype=bool), axis=1)
    return Image.frombytes("1", (h, w), packed.tobytes()).transpose(Image.Transpose.TRANSPOSE)


def _percent(value: Any) -> float:
    value = float(value)
    return math.nan if math.isnan(value) else 100.0 * value


class CityscapesEvaluator(RecordingEvaluator):
    """Cityscapes AP and AP50 (overall and per class, in percent) by the official code.

    ``evaluate()`` returns, per mask key, ``{"cityscapes/<key>": {"AP", "AP50", "per_class":
    {name: {"AP", "AP50"}}}}``: ``AP`` averages IoU thresholds 0.5:0.05:0.95, the overall
    values average the classes that have ground truth (a class without ground truth is NaN).
    Only processed images are scored. Under DDP every rank's predictions are gathered (an
    image seen twice counts once) and scored on rank 0 (``{}`` elsewhere unless
    ``all_ranks``).

    Args:
        coco: the dataset's COCO ground truth (pycocotools ``COCO`` or JSON path), for the
            image file names (``<city>/<name>_leftImg8bit.png``) and category names.
        label_to_cat_id: contiguous model label -> COCO category id. Categories are matched
            to Cityscapes labels by name (``person``, ..., ``bicycle``), so any COCO
            conversion of Cityscapes works, not only ``levelset-rcnn convert cityscapes``.
        gt_dir: the ``gtFine/<split>`` folder with ``<city>/*_gtFine_instanceIds.png``.
        mask_keys: output keys holding ``(K, 1, H, W)`` mask probabilities in image
            coordinates (e.g. ``"masks"`` and ``"masks_phi0"``), each scored separately.
        mask_threshold: probabilities above it are inside.
        output_dir: keep the written predictions (``cityscapes_pred_<key>/``), the official
            result JSON and the gt cache there; ``None``: a temporary folder.
        all_ranks: return results on every rank.

    Raises:
        ValueError: a category that is not one of the 8 Cityscapes instance classes.
        FileNotFoundError: an image of ``coco`` without its instanceIds file in ``gt_dir``.
    """

    def __init__(self, coco: COCO | str | Path, label_to_cat_id: Mapping[int, int],
                 gt_dir: str | Path, *, mask_keys: Sequence[str] = ("masks",),
                 mask_threshold: float = 0.5, output_dir: str | Path | None = None,
                 all_ranks: bool = False) -> None:
        if not isinstance(coco, COCO):
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(coco))
        self.coco = coco
        self.gt_dir = Path(gt_dir)
        if not self.gt_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes ground-truth folder not found: {self.gt_dir} "
                                    "(expected gtFine/<split>)")
        self.label_to_cat_id = dict(label_to_cat_id)
        self.label_to_cs_id: dict[int, int] = {}
        for label, cat_id in self.label_to_cat_id.items():
            if cat_id not in coco.cats:
                raise ValueError(f"label_to_cat_id maps label {label} to category id {cat_id} "
                                 "that the ground truth does not have")
            name = coco.cats[cat_id]["name"]
            cs_label = name2label.get(name)
            if cs_label is None or not cs_label.hasInstances or cs_label.ignoreInEval:
                raise ValueError(f"category {cat_id} {name!r} is not a Cityscapes instance "
                                 "class (person, rider, car, truck, bus, train, motorcycle, "
                                 "bicycle)")
            self.label_to_cs_id[label] = cs_label.id
        self.record_category_ids = self.label_to_cs_id
        self.gt_images = coco.imgs
        self.gt_files = {i: _gt_file(self.gt_dir, info["file_name"])
                         for i, info in coco.imgs.items()}
        missing = [p for p in self.gt_files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} instanceIds file(s) missing under "
                                    f"{self.gt_dir}, e.g. {missing[0]}")
        self.mask_keys = tuple(mask_keys)
        self.mask_threshold = mask_threshold
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.all_ranks = all_ranks
        self._tmp: Path | None = None
        self.reset()

    def _work_dir(self) -> Path:
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return self.output_dir
        if self._tmp is None:  # one per evaluator, removed with it; keeps the gt cache
            self._tmp = Path(tempfile.mkdtemp(prefix="levelset_rcnn_cityscapes_"))
            weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        return self._tmp

    def _gt_cache(self, work: Path, gt_files: list[Path]) -> Path:
        """Cache file named after the gt list (paths, sizes, mtimes): never a stale one."""
        h = hashlib.sha1()
        for p in gt_files:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return work / f"gtInstances_{h.hexdigest()[:16]}.json"

    def _write_predictions(self, pred_dir: Path, image_id: int, key: str) -> Path:
        """``<city>/<name>_pred.txt`` and one PNG per non-empty mask of ``key``."""
        gt = self.gt_files[image_id]
        base = gt.name[: -len(_GT_SUFFIX)]
        city_dir = pred_dir / gt.parent.name
        city_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for k, rec in enumerate(self._merged[image_id]):
            if not mask_utils.area(rec[key]):  # the official code skips empty masks
                continue
            png = f"{base}_{k}.png"
            _mask_image(mask_utils.decode(rec[key])).save(city_dir / png, compress_level=1)
            lines.append(f"{png} {rec['category_id']} {rec['score']:.9g}\n")
        txt = city_dir / f"{base}_pred.txt"
        txt.write_text("".join(lines))
        return txt

    def evaluate(self) -> dict[str, Any]:
        merged = self.records_to_score()
        if merged is None:
            return {}
        self._merged = merged
        img_ids = sorted(merged)
        gt_files = [self.gt_files[i] for i in img_ids]
        work = self._work_dir()
        cache = self._gt_cache(work, gt_files)
        results: dict[str, Any] = {}
        try:
            for key in self.mask_keys:
                pred_dir = work / f"cityscapes_pred_{key}"
                if pred_dir.exists():
                    shutil.rmtree(pred_dir)
                pred_dir.mkdir(parents=True)
                preds = [self._write_predictions(pred_dir, i, key) for i in img_ids]
                res = run_cityscapes_evaluation(preds, gt_files, prediction_path=pred_dir,
                                                gt_instances_file=cache)
                results[f"cityscapes/{key}"] = self._metrics(res)
        finally:
            del self._merged
        if self.output_dir is not None:
            (self.output_dir / "cityscapes_metrics.json").write_text(
                json.dumps(results, indent=2))
        return results

    @staticmethod
    def _metrics(res: dict[str, Any]) -> dict[str, Any]:
        avg = res["averages"]
        per_class = {name: {"AP": _percent(v["ap"]), "AP50": _percent(v["ap50%"])}
                     for name, v in avg["classes"].items()}
        return {"AP": _percent(avg["allAp"]), "AP50": _percent(avg["allAp50%"]),
                "per_class": per_class}
