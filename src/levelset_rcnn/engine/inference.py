"""Inference and COCO evaluation loops (phi_0 and phi_N side by side), optionally with
test-time augmentation (:class:`~levelset_rcnn.modeling.tta.TTAWrapper`: flip / multi-scale)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..comm import is_main_process, unwrap
from ..config import ConfigError, EvalConfig
from ..evaluation import CityscapesEvaluator, COCOEvaluator, DatasetEvaluator, LVISEvaluator
from ..modeling import mask_probabilities
from ..modeling.transform import paste_masks
from ..modeling.tta import TTAWrapper

__all__ = ["add_phi0_masks", "build_evaluator", "evaluate_model", "has_phi0", "make_evaluator",
           "predict_batch", "tta_kwargs"]


def has_phi0(model: nn.Module) -> bool:
    """Whether the model refines an initial TSDF (its ``refines_initial_tsdf``; models
    without the attribute do not)."""
    return bool(getattr(unwrap(model), "refines_initial_tsdf", False))


def add_phi0_masks(output: dict[str, Any], *, mode: str = "exact") -> dict[str, Any]:
    """Add ``masks_phi0``: the mask probabilities of ``phi_0`` pasted into the image as the
    model pastes ``masks`` (``mode``: its ``transform.mask_paste``, see
    :func:`~levelset_rcnn.modeling.transform.paste_masks`).

    Needs ``tsdf_init: (K, 1, M, M)`` (``model(images, return_tsdf=True)``); boxes are in
    original image coordinates, the image size is read from ``masks: (K, 1, H, W)``.
    """
    h, w = output["masks"].shape[-2:]
    phi0 = output["tsdf_init"]
    if len(phi0):
        output["masks_phi0"] = paste_masks(
            {"masks": mask_probabilities(phi0), "tsdf": phi0}, output["boxes"], (h, w),
            mode=mode)
    else:
        output["masks_phi0"] = output["masks"].new_zeros((0, 1, h, w))
    return output


def _paste_mode(model: nn.Module) -> str:
    """The mask pasting of a model (or of the model inside a TTA wrapper)."""
    inner = getattr(model, "model", model)
    return getattr(getattr(inner, "transform", None), "mask_paste", "torchvision")


def tta_kwargs(cfg: EvalConfig) -> dict[str, Any]:
    """The ``tta``, ``tta_flip`` and ``tta_min_sizes`` keywords of :func:`predict_batch` /
    :func:`evaluate_model` from a recipe's ``eval`` section.

    Raises:
        ConfigError: ``eval.tta_min_sizes`` holds a size that is not a positive integer.
    """
    sizes = list(cfg.tta_min_sizes)
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s <= 0]
    if bad:
        raise ConfigError(f"eval.tta_min_sizes must be positive integers (shorter image "
                          f"edges), got {sizes}")
    return {"tta": bool(cfg.tta), "tta_flip": bool(cfg.tta_flip), "tta_min_sizes": sizes}


@torch.inference_mode()
def predict_batch(model: nn.Module, images: Iterable[Tensor], device: torch.device, *,
                  phi0: bool = False, tsdf: bool = False, tta: bool = False,
                  tta_flip: bool = True, tta_min_sizes: Sequence[int] = ()
                  ) -> list[dict[str, Any]]:
    """Run the model in eval mode on a list of ``(3, H, W)`` images; results on the CPU.

    ``phi0`` adds ``masks_phi0`` (:func:`add_phi0_masks`) and ``tsdf`` the level sets ``tsdf``
    / ``tsdf_init`` (for contours; ``phi0`` keeps them too); both are asked of level-set
    models only. With
    ``tta`` the model runs through :class:`~levelset_rcnn.modeling.tta.TTAWrapper` (views:
    ``tta_min_sizes`` (empty: the model's test size) x {as is, mirrored when ``tta_flip``});
    the results keep the same keys.
    """
    m = unwrap(model)
    was_training = m.training
    level = has_phi0(m)
    runner = TTAWrapper(m, list(tta_min_sizes), flip=tta_flip) if tta else m
    try:
        m.eval()
        outs = runner([img.to(device) for img in images], return_tsdf=level and (phi0 or tsdf))
    finally:
        m.train(was_training)
    results = []
    for o in outs:
        o = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in o.items()}
        if level and phi0:
            add_phi0_masks(o, mode=_paste_mode(m))
        results.append(o)
    return results


def evaluate_model(model: nn.Module, loader: Iterable, evaluator: DatasetEvaluator,
                   device: torch.device, *, progress: bool = True, tta: bool = False,
                   tta_flip: bool = True, tta_min_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """Run ``model`` over ``loader`` (batches of ``(images, targets)``) and evaluate.

    Under DDP each rank sees its share of the images; :meth:`COCOEvaluator.evaluate`
    gathers them (results on rank 0). ``tta*``: test-time augmentation, as in
    :func:`predict_batch` (:func:`tta_kwargs` reads them from a recipe).
    """
    evaluator.reset()
    want_phi0 = "masks_phi0" in evaluator.mask_keys
    bar = tqdm(loader, desc="eval", unit="img", disable=not (progress and is_main_process()),
               dynamic_ncols=True)
    for images, targets in bar:
        outs = predict_batch(model, images, device, phi0=want_phi0, tta=tta, tta_flip=tta_flip,
                             tta_min_sizes=tta_min_sizes)
        evaluator.process(targets, outs)
    return evaluator.evaluate()


def make_evaluator(dataset: Any, model: nn.Module, *, boundary: bool = True,
                   boundary_mode: str = "davis", boundary_ap: bool = True,
                   mask_threshold: float = 0.5, max_dets: int = 100) -> COCOEvaluator:
    """A :class:`COCOEvaluator` for ``dataset`` with ``masks`` (phi_N / Mask R-CNN) and, for
    LevelSet R-CNN, ``masks_phi0`` (AF1 / AF2 on ``boundary_mode``'s boundary, Boundary AP
    when ``boundary_ap``)."""
    from .data import base_dataset

    base = base_dataset(dataset)
    keys = ("masks", "masks_phi0") if has_phi0(model) else ("masks",)
    return COCOEvaluator(base.coco, label_to_cat_id=base.label_to_cat_id, mask_keys=keys,
                         boundary=boundary, boundary_mode=boundary_mode,  # type: ignore[arg-type]
                         boundary_ap=boundary_ap, mask_threshold=mask_threshold,
                         max_dets=max_dets)


def build_evaluator(dataset: Any, model: nn.Module, cfg: EvalConfig, *,
                    output_dir: str | Path | None = None) -> DatasetEvaluator:
    """The evaluator a recipe's ``eval`` section asks for (``eval.evaluator``):

    * ``coco``: :func:`make_evaluator` (box / mask AP, AF1 / AF2);
    * ``cityscapes``: the official Cityscapes instance-level AP / AP50, overall and per class,
      against ``eval.cityscapes_gt`` (prediction files kept under ``output_dir/cityscapes``
      when ``output_dir`` is given);
    * ``lvis``: LVIS AP* (federated, COCO classes) against ``eval.lvis_ann``.

    LevelSet R-CNN is scored twice in every case: ``masks`` (phi_N) and ``masks_phi0``.
    """
    from .data import base_dataset

    if cfg.evaluator == "coco":
        return make_evaluator(dataset, model, boundary=cfg.boundary,
                              boundary_mode=cfg.boundary_mode, boundary_ap=cfg.boundary_ap,
                              mask_threshold=cfg.mask_threshold, max_dets=cfg.max_dets)
    base = base_dataset(dataset)
    keys = ("masks", "masks_phi0") if has_phi0(model) else ("masks",)
    if cfg.evaluator == "cityscapes":
        if not cfg.cityscapes_gt:
            raise ConfigError("eval.evaluator=cityscapes needs eval.cityscapes_gt (the "
                              "gtFine/<split> folder)")
        out = Path(output_dir) / "cityscapes" if output_dir is not None else None
        return CityscapesEvaluator(base.coco, base.label_to_cat_id, cfg.cityscapes_gt,
                                   mask_keys=keys, mask_threshold=cfg.mask_threshold,
                                   output_dir=out)
    if cfg.evaluator == "lvis":
        if not cfg.lvis_ann:
            raise ConfigError("eval.evaluator=lvis needs eval.lvis_ann (the LVIS val JSON)")
        # LVIS's protocol keeps 300 detections per image (eval.max_dets is COCO's 100).
        return LVISEvaluator(cfg.lvis_ann, label_to_cat_id=base.label_to_cat_id,
                             dataset_categories=base.coco.dataset["categories"], mask_keys=keys,
                             mask_threshold=cfg.mask_threshold,
                             drop_missing=cfg.lvis_drop_missing)
    raise ConfigError(f"eval.evaluator must be coco, cityscapes or lvis, got {cfg.evaluator!r}")
