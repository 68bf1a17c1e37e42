"""Initialisation from torchvision's COCO Mask R-CNN weights (enum or local state-dict file).

Keys that exist in the model with the same shape are loaded (backbone, RPN, box head, and the
mask trunk); the LevelSet heads start fresh; keys whose shapes differ (e.g. the box predictor
for another number of classes) are skipped. What happened is logged and returned as a
:class:`LoadReport`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum
from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights

__all__ = ["LoadReport", "WeightsUnavailableError", "load_maskrcnn_weights", "resolve_weights"]

logger = logging.getLogger(__name__)

_OLD_MASK_FCN = re.compile(r"^(.*mask_head\.)mask_fcn(\d+)\.(weight|bias)$")
_OLD_RPN_CONV = re.compile(r"^(.*rpn\.head\.conv)\.(weight|bias)$")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


@dataclass
class LoadReport:
    """What :func:`load_maskrcnn_weights` did."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def top(keys: list[str]) -> str:
            groups = sorted({".".join(k.split(".")[:2]) for k in keys})
            return ", ".join(groups) if groups else "-"

        return (
            f"weights from {self.source}: loaded {len(self.loaded)} tensors ({top(self.loaded)}); "
            f"missing (start fresh) {len(self.missing)} ({top(self.missing)}); "
            f"unexpected (ignored) {len(self.unexpected)} ({top(self.unexpected)}); "
            f"shape mismatch (skipped) {len(self.mismatched)} ({top(self.mismatched)})"
        )


def expected_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (or would keep) the file of a torchvision weights enum."""
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def resolve_weights(weights: WeightsEnum | str | os.PathLike, *, progress: bool = True
                    ) -> tuple[dict[str, Tensor], str]:
    """Load a state dict from a weights enum (cached file, else download) or a local file.

    ``weights`` may be a ``MaskRCNN_ResNet50_FPN_Weights`` member, its name (``"COCO_V1"``,
    ``"DEFAULT"``) or a path. Raises :class:`WeightsUnavailableError` naming the file to place
    when the enum's file is not cached and cannot be downloaded.
    """
    if isinstance(weights, str) and not os.path.exists(weights) and weights in (
        "DEFAULT", "COCO_V1"
    ):
        weights = MaskRCNN_ResNet50_FPN_Weights[weights]
    if isinstance(weights, WeightsEnum):
        path = expected_path(weights)
        if path.is_file():
            return _load_file(path), str(path)
        try:
            sd = torch.hub.load_state_dict_from_url(
                weights.url, progress=progress, check_hash=True, map_location="cpu",
                weights_only=True,
            )
        except Exception as err:  # no network, proxy, hash mismatch...
            raise WeightsUnavailableError(
                f"could not download {weights} from {weights.url} ({type(err).__name__}: {err}). "
                f"Place the file at {path} (torch hub's checkpoint directory), or pass a local "
                f'state-dict file instead: weights="path/to/{path.name}"'
            ) from err
        return sd, weights.url
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    return _load_file(path), str(path)


def _load_file(path: Path) -> dict[str, Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):  # training checkpoints wrap the state dict
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def _into_branch(key: str, own: dict[str, Tensor]) -> str:
    """``roi_heads.<part>.*`` -> ``roi_heads.mask_branch.<part>.*`` where the model has it."""
    if key.startswith("roi_heads.") and not key.startswith("roi_heads.mask_branch."):
        moved = "roi_heads.mask_branch." + key[len("roi_heads."):]
        if key not in own and moved in own:
            return moved
    return key


def load_maskrcnn_weights(
    model: nn.Module, weights: WeightsEnum | str | os.PathLike | dict[str, Tensor], *,
    progress: bool = True,
) -> LoadReport:
    """Load every compatible tensor of a (torchvision) Mask R-CNN state dict into ``model``.

    Returns a :class:`LoadReport` (also logged at INFO level).
    """
    if isinstance(weights, dict):
        sd, source = weights, "state dict"
    else:
        sd, source = resolve_weights(weights, progress=progress)
    # torchvision's COCO file predates MaskRCNNHeads v2 and RPNHead v2: it names the trunk
    # mask_fcn1..4 and the RPN's 3x3 conv rpn.head.conv (now rpn.head.conv.0.0).
    renamed = {}
    for k, v in sd.items():
        m, r = _OLD_MASK_FCN.match(k), _OLD_RPN_CONV.match(k)
        renamed[f"{m[1]}{int(m[2]) - 1}.0.{m[3]}" if m else f"{r[1]}.0.0.{r[2]}" if r else k] = v
    own = model.state_dict()
    # torchvision's mask predictor is the binary mask branch's, and our files written before
    # the mask branch existed name its heads roi_heads.<head>.*: both now live under
    # roi_heads.mask_branch.*.
    renamed = {_into_branch(k, own): v for k, v in renamed.items()}
    report = LoadReport(source=source)
    to_load = {}
    for k, v in renamed.items():
        if k not in own and k.endswith("num_batches_tracked"):
            continue  # BatchNorm counter; the model uses FrozenBatchNorm2d, which has none
        if k not in own:
            report.unexpected.append(k)
        elif own[k].shape != v.shape:
            report.mismatched.append(k)
        else:
            to_load[k] = v
    result = model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = sorted(result.missing_keys)
    logger.info(report.summary())
    return report
