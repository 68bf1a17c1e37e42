"""Export a LevelSet R-CNN (or the Mask R-CNN baseline) to ONNX or TorchScript.

Both formats are made by tracing one inference pass at a fixed input size, as torchvision's
Mask R-CNN is exported: batch 1, ``(1, 3, H, W)`` float32 RGB in ``[0, 1]`` (the model's own
resizing to its test size and normalisation are inside the graph). The graph is valid for any
number of detections, zero included.

Inputs and outputs (ONNX names; the TorchScript module returns a dict with the same keys)::

    images     (1, 3, H, W)   float32   RGB in [0, 1], H x W as exported
    boxes      (K, 4)         float32   x0, y0, x1, y1 in the input's pixels
    labels     (K,)           int64     classes (1..num_classes-1; 0 is the background)
    scores     (K,)           float32   above the model's box_score_thresh, descending
    masks      (K, 1, H, W)   float32   mask probabilities pasted into the full image,
                                        as in eager mode (threshold at 0.5)
    tsdf       (K, 1, M, M)   float32   with return_tsdf: phi_N in RoI coordinates (M = 112)
    tsdf_init  (K, 1, M, M)   float32   with return_tsdf: phi_0

``K`` is dynamic (at most ``box_detections_per_img``); the score threshold, the number of
Chan-Vese steps and every other setting are baked into the graph.

The exporters are the TorchScript-based ones: ``torch.onnx.export(..., dynamo=False)`` (the
dynamo exporter fails on Mask R-CNN's data-dependent shapes) and ``torch.jit.trace``.

**Why TorchScript is traced, not scripted**: ``torch.jit.script`` rejects the model's Python
API: keyword-only arguments with defaults (``LevelSetRCNN.forward(..., *, return_tsdf)``, the
mask branches' ``return_all``, the Chan-Vese modules' hyperparameter keywords), union return
types (``Tensor | list[Tensor]``), dataclasses (``MaskTargets``, ``HyperParameters``),
``isinstance`` / ``hasattr`` dispatch on sub-modules and ``Any``. Scripting would mean
rewriting those signatures for TorchScript, so the traced graph is shipped, wrapped in a small
scripted module that checks the input size (a traced graph at another size would silently
return wrong boxes) and returns the output dict.

What tracing needs, and where it is done:

* The Chan-Vese layers split RoIs into CPU cache-sized chunks with Python loops, which a trace
  would bake to the trace-time count. :class:`~levelset_rcnn.levelset.UpsampledChanVese` runs
  one chunk itself when traced; for the core :class:`~levelset_rcnn.levelset.ChanVese`
  (:mod:`levelset_rcnn.levelset.chan_vese`) :func:`traceable` swaps in the one-chunk policy
  and the vectorised ``||F - m||^2`` (its GPU code path) for the time of the export.
* ``LearnedFeatureHead.compact`` factorises a weight with ``torch.linalg.qr``, which ONNX
  lacks: :func:`traceable` evaluates a QR of weights outside the trace (a graph constant).
* The RoI heads split the detections per image by ``b.shape[0]`` (a traced size).
* Level-set layers return early for zero RoIs, which a trace made on an image without
  detections would bake in. :func:`traceable` therefore evolves one extra dummy RoI
  alongside the detections (dropped before the outputs), so no traced layer sees zero RoIs.
* torchvision's RoI poolers merge their FPN levels for ONNX with ``expand`` to each level's
  RoI count, which the exporter freezes to the trace-time count (the values come out of a
  sequence op, whose shape ONNX cannot infer, so the traced shape is used): an image whose
  RoIs fall into the levels differently fails in onnxruntime ("invalid expand shape").
  :func:`traceable` merges them by a gather with no count in the graph instead.
* torchvision's RoI poolers infer the FPN levels' scales at their first call and keep them;
  :func:`traceable` has them inferred again at the exported size (as a fresh model would).
* torchvision pastes masks with its ONNX loop (``_onnx_paste_masks_in_image_loop``) when
  tracing; the exact pasting (:mod:`levelset_rcnn.modeling.paste`) samples the whole image.

Example::

    from levelset_rcnn.export import export_onnx
    export_onnx(model, "model.onnx", height=800, width=1216)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.ops.poolers
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "TSDF_NAMES",
    "ExportWrapper",
    "example_input",
    "export_onnx",
    "export_torchscript",
    "output_names",
    "trace_model",
    "traceable",
]

#: Name of the ONNX input.
INPUT_NAME = "images"
#: The outputs, in order (torchvision's Mask R-CNN result dict).
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")
#: The extra outputs with ``return_tsdf=True``.
TSDF_NAMES = ("tsdf", "tsdf_init")
#: ONNX opset used by default (torchvision's RoIAlign and the exporter support 16+).
DEFAULT_OPSET = 17


def output_names(return_tsdf: bool = False) -> tuple[str, ...]:
    """The exported outputs' names, in order."""
    return OUTPUT_NAMES + (TSDF_NAMES if return_tsdf else ())


class ExportWrapper(nn.Module):
    """``(1, 3, H, W)`` images -> the tuple of :func:`output_names` of one eager inference.

    Args:
        model: a :class:`~levelset_rcnn.modeling.LevelSetRCNN` (any mask branch).
        return_tsdf: also return ``tsdf`` and ``tsdf_init`` (level-set branches only).
    """

    def __init__(self, model: nn.Module, *, return_tsdf: bool = False) -> None:
        super().__init__()
        self.model = model
        self.return_tsdf = bool(return_tsdf)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        kw = {"return_tsdf": True} if self.return_tsdf else {}
        result = self.model([images[0]], **kw)[0]
        return tuple(result[k] for k in output_names(self.return_tsdf))


def example_input(height: int, width: int, *, device: torch.device | str = "cpu") -> Tensor:
    """A fixed ``(1, 3, height, width)`` image to trace with (uniform noise, seed 0). Any
    image works: the graph does not depend on its detections."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, height, width, generator=g).to(device)


def _dummy_roi_mask_maps(original: Any) -> Any:
    """``LevelSetRoIHeads.mask_maps`` with one extra RoI (a 1-pixel box of class 1 on the
    last image) whose maps are dropped: no traced mask layer then sees zero RoIs."""

    def mask_maps(features: dict[str, Tensor], boxes: list[Tensor],
                  image_shapes: list[tuple[int, int]], labels: list[Tensor]
                  ) -> dict[str, Tensor]:
        last, lab = boxes[-1], labels[-1]
        boxes = [*boxes[:-1], torch.cat([last, last.new_tensor([[0.0, 0.0, 1.0, 1.0]])])]
        labels = [*labels[:-1], torch.cat([lab, lab.new_ones(1)])]
        return {k: v[:-1] for k, v in original(features, boxes, image_shapes, labels).items()}

    return mask_maps


def _one_chunk(R: int, P: int, device: torch.device) -> list[slice]:
    return [slice(None)]


def _centred_sq_norm_vectorised(Ff: Tensor, m: Tensor) -> Tensor:
    return (Ff - m.unsqueeze(-1)).square().sum(1)


def _merge_levels(levels: Tensor, per_level: list[Tensor]) -> Tensor:
    """The RoIAlign results of each FPN level back in RoI order (for torchvision's
    ``_onnx_merge_levels``), with no per-level RoI count in the graph: the levels'
    results are concatenated in level order and gathered back by the inverse permutation."""
    order = torch.cat([torch.nonzero(levels == k).flatten() for k in range(len(per_level))])
    return torch.cat(per_level)[torch.argsort(order)]


def _constant_of_weights(fn: Any, model: nn.Module) -> Any:
    """``fn`` evaluated outside the trace when its first argument is (a view of) a weight of
    ``model``: the result is a constant of the graph (exact, the weights being fixed). For
    functions that ONNX lacks, applied to weights only (``torch.linalg.qr`` in
    :meth:`~levelset_rcnn.modeling.heads.LearnedFeatureHead.compact`); on anything else
    ``fn`` is traced as usual."""
    weights = {t.untyped_storage().data_ptr()
               for t in (*model.parameters(), *model.buffers())}

    def wrapped(a: Tensor, *args: Any, **kwargs: Any) -> Any:
        state = torch._C._get_tracing_state()
        if state is None or a.untyped_storage().data_ptr() not in weights:
            return fn(a, *args, **kwargs)
        torch._C._set_tracing_state(None)
        try:
            return fn(a.detach().clone(), *args, **kwargs)
        finally:
            torch._C._set_tracing_state(state)

    return wrapped


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    if not hasattr(obj, name):  # the code was restructured: this exporter must follow it
        raise RuntimeError(f"{getattr(obj, '__name__', obj)} has no {name}: "
                           "levelset_rcnn.export.traceable needs updating")
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode, ready to be traced for any number of detections (module
    docstring); everything is restored on exit.

    The core Chan-Vese layer's chunking and ``torch.linalg.qr`` are module attributes, so
    they are replaced for the whole process meanwhile (eager inference in other threads stays
    correct: unchunked, and QR as before outside a trace).
    """
    # the module, not levelset_rcnn.levelset's classic chan_vese function of the same name
    chan_vese = importlib.import_module("levelset_rcnn.levelset.chan_vese")
    roi_heads = getattr(model, "roi_heads", None)
    was_training = model.training
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(chan_vese, "roi_chunks", _one_chunk))
        stack.enter_context(_patched(chan_vese, "_centred_sq_norm",
                                     _centred_sq_norm_vectorised))
        stack.enter_context(_patched(torch.linalg, "qr",
                                     _constant_of_weights(torch.linalg.qr, model)))
        stack.enter_context(_patched(torchvision.ops.poolers, "_onnx_merge_levels",
                                     _merge_levels))
        if roi_heads is not None and getattr(roi_heads, "mask_branch", None) is not None:
            roi_heads.mask_maps = _dummy_roi_mask_maps(roi_heads.mask_maps)
            stack.callback(delattr, roi_heads, "mask_maps")
        for pool in model.modules():
            if isinstance(pool, MultiScaleRoIAlign):
                # torchvision infers the FPN levels' scales at a pooler's first call and keeps
                # them: infer them again at the exported size, as a fresh model would
                stack.callback(setattr, pool, "map_levels", pool.map_levels)
                stack.callback(setattr, pool, "scales", pool.scales)
                pool.scales = pool.map_levels = None
        stack.callback(model.train, was_training)
        model.eval()
        yield model


#: Warnings of tracing and of the TorchScript-based ONNX exporter that were checked and say
#: nothing actionable: the tracer's notes on Python values (shape checks, constant settings
#: and the patterns :func:`traceable` handles), the exporter's deprecation (it is chosen on
#: purpose, see the module docstring), un-foldable strided slices, and advanced indexing
#: (the indices are ``arange`` and class labels, never negative).
_CHECKED_WARNINGS = (
    r".*torch\.jit\..* is deprecated",
    r".*copy construct from a tensor",
    r".*legacy TorchScript-based ONNX export",
    r".*The feature will be removed",
    r".*Only steps=1 can be constant folded",
    r".*aten::index operator of advanced indexing",
)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence :data:`_CHECKED_WARNINGS` and the tracer's warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        for message in _CHECKED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def _check_size(height: int, width: int) -> tuple[int, int]:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(f"height and width must be positive integers, got {height} x {width}")
    return int(height), int(width)


def _example(model: nn.Module, height: int, width: int, example: Tensor | None) -> Tensor:
    device = next(model.parameters()).device
    if example is None:
        return example_input(height, width, device=device)
    if example.dim() == 3:
        example = example[None]
    if tuple(example.shape) != (1, 3, height, width):
        raise ValueError(f"example must be (1, 3, {height}, {width}), got "
                         f"{tuple(example.shape)}")
    return example.to(device=device, dtype=torch.float32)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    height: int,
    width: int,
    return_tsdf: bool = False,
    opset_version: int = DEFAULT_OPSET,
    example: Tensor | None = None,
) -> Path:
    """Write ``model`` as an ONNX file for ``(1, 3, height, width)`` inputs.

    Args:
        model: a LevelSet R-CNN / Mask R-CNN from :mod:`levelset_rcnn.modeling` or
            :func:`~levelset_rcnn.engine.load_trained_model`; its mode is restored.
        path: the ``.onnx`` file to write.
        height, width: the fixed input size.
        return_tsdf: also output ``tsdf`` and ``tsdf_init`` (level-set branches).
        opset_version: ONNX opset (16 or later).
        example: the image to trace with (default: :func:`example_input`).

    Returns:
        ``path``. Input ``images``, outputs :func:`output_names` (module docstring).
    """
    height, width = _check_size(height, width)
    path = Path(path)
    names = list(output_names(return_tsdf))
    with traceable(model), torch.no_grad(), _quiet_tracing():
        x = _example(model, height, width, example)
        torch.onnx.export(
            ExportWrapper(model, return_tsdf=return_tsdf).eval(), (x,), str(path),
            dynamo=False, opset_version=opset_version, input_names=[INPUT_NAME],
            output_names=names, dynamic_axes={n: {0: "num_detections"} for n in names},
            do_constant_folding=True,
        )
    return path


class _CheckedModule(nn.Module):
    """The traced graph behind an input-size check, returning the output dict (scripted)."""

    def __init__(self, traced: nn.Module, height: int, width: int,
                 names: Sequence[str]) -> None:
        super().__init__()
        self.traced = traced
        self.height = height
        self.width = width
        self.names = list(names)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if (images.dim() != 4 or images.shape[0] != 1 or images.shape[1] != 3
                or images.shape[2] != self.height or images.shape[3] != self.width):
            raise ValueError("expected images of shape (1, 3, " + str(self.height) + ", "
                             + str(self.width) + ") (the exported size), got "
                             + str(images.shape))
        out: dict[str, Tensor] = {}
        i = 0
        for t in self.traced(images):
            out[self.names[i]] = t
            i += 1
        return out


def trace_model(
    model: nn.Module,
    *,
    height: int,
    width: int,
    return_tsdf: bool = False,
    example: Tensor | None = None,
) -> torch.jit.ScriptModule:
    """``model`` traced for ``(1, 3, height, width)`` inputs, as a TorchScript module that
    checks the input size and returns the dict of :func:`output_names`. It runs on the
    model's device (the device is baked into the trace)."""
    height, width = _check_size(height, width)
    names = output_names(return_tsdf)
    with traceable(model), torch.no_grad(), _quiet_tracing():
        x = _example(model, height, width, example)
        traced = torch.jit.trace(ExportWrapper(model, return_tsdf=return_tsdf).eval(), (x,),
                                 check_trace=False)
        return torch.jit.script(_CheckedModule(traced, height, width, names))


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    height: int,
    width: int,
    return_tsdf: bool = False,
    example: Tensor | None = None,
) -> Path:
    """Write :func:`trace_model`'s module to ``path``. Load it with ``torch.jit.load`` after
    ``import torchvision`` (which registers RoIAlign and NMS); ``levelset_rcnn`` is not
    needed to run it."""
    module = trace_model(model, height=height, width=width, return_tsdf=return_tsdf,
                         example=example)
    path = Path(path)
    with _quiet_tracing():
        module.save(str(path))
    return path
