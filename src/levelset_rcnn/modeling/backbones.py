"""Backbone pieces beyond torchvision's ResNet + FPN: deformable 3x3 convolutions, PANet's
bottom-up path augmentation, and ImageNet weights from a local state-dict file.

* :class:`DeformConv2dPack`: a :class:`torchvision.ops.DeformConv2d` that predicts its own
  offsets with a zero-initialised 3x3 conv (``conv_offset``), as detectron2 / DCN do. Its
  ``weight`` has the shape and state-dict key of the conv it replaces, so ImageNet and COCO
  weights still load; with zero offsets it computes exactly that conv.
* :func:`make_deformable`: turns the 3x3 convs of chosen ResNet stages (``layer1``..``layer4``)
  into :class:`DeformConv2dPack` (weights, stride, padding, dilation and groups kept).
* :class:`PathAggregation`: PANet's bottom-up path (Liu et al., CVPR 2018, Sec. 3.1) as a
  torchvision ``ExtraFPNBlock``: ``N_2 = P_2``, ``N_{i+1} = ReLU(conv3x3(ReLU(conv3x3_s2(N_i))
  + P_{i+1}))``, then ``pool = N_top`` subsampled by 2 (as torchvision's ``LastLevelMaxPool``
  does on ``P_5``), so the RPN and RoI heads see the same names, strides and widths.
* :func:`load_backbone_state_dict`: loads a torchvision ResNet state dict from a file into a
  backbone body, refusing (with the file's name) missing, unexpected or mis-shaped tensors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d, deform_conv2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from .weights import resolve_weights

__all__ = [
    "DeformConv2dPack",
    "PathAggregation",
    "load_backbone_state_dict",
    "make_deformable",
]

logger = logging.getLogger(__name__)

# Keys a torchvision ResNet file may have that a detection body does not need or lacks.
_IGNORED_FILE_KEYS = ("fc.",)
_NEW_KEY_MARK = ".conv_offset."


class DeformConv2dPack(DeformConv2d):
    """Deformable convolution (DCN v1, Dai et al. 2017) with its own offset branch.

    ``conv_offset`` is a plain conv with the same kernel, stride, padding and dilation that
    maps the input ``(N, C_in, H, W)`` to ``2 * offset_groups * kh * kw`` offsets (``dy, dx``
    per kernel tap, torchvision's order) at the output resolution; it starts at zero, so a
    freshly converted layer equals the conv it replaced. Output: ``(N, C_out, H', W')``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False,
        offset_groups: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,  # type: ignore[arg-type]
                         padding=padding, dilation=dilation, groups=groups,  # type: ignore[arg-type]
                         bias=bias)
        kh, kw = self.kernel_size
        self.offset_groups = offset_groups
        self.conv_offset = nn.Conv2d(
            in_channels, 2 * offset_groups * kh * kw, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, offset_groups: int = 1) -> DeformConv2dPack:
        """The deformable twin of ``conv`` (same hyper-parameters, weight and bias copied)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"cannot make {conv} deformable: needs numeric zero padding")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
                  stride=conv.stride, padding=conv.padding,  # type: ignore[arg-type]
                  dilation=conv.dilation, groups=conv.groups,  # type: ignore[arg-type]
                  bias=conv.bias is not None, offset_groups=offset_groups)
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.weight.requires_grad_(conv.weight.requires_grad)
        return new

    def forward(self, input: Tensor, offset: Tensor | None = None,  # noqa: A002
                mask: Tensor | None = None) -> Tensor:
        """``input`` ``(N, C_in, H, W)``; ``offset`` defaults to ``conv_offset(input)``."""
        if offset is None:
            offset = self.conv_offset(input)
        return deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)


def make_deformable(body: nn.Module, stages: Sequence[int]) -> list[str]:
    """Replace every 3x3 ``nn.Conv2d`` of ResNet stages ``layer{k}``, ``k`` in ``stages``
    (1-4), by :class:`DeformConv2dPack` in place. For bottleneck ResNets (50/101, wide) that is
    each block's ``conv2``; for basic-block ones (18/34), ``conv1`` and ``conv2``.

    Returns the qualified names replaced (e.g. ``"layer3.0.conv2"``).
    """
    stages = tuple(int(k) for k in stages)
    bad = [k for k in stages if k not in (1, 2, 3, 4)]
    if bad or len(set(stages)) != len(stages):
        raise ValueError(f"deform_stages must be distinct ResNet stages in 1..4, got {stages}")
    replaced = []
    for k in stages:
        layer = getattr(body, f"layer{k}", None)
        if layer is None:
            raise ValueError(f"deform_stages={stages}: {type(body).__name__} has no layer{k} "
                             "(deformable convs need a ResNet backbone)")
        targets = [(name, m) for name, m in layer.named_modules()
                   if type(m) is nn.Conv2d and m.kernel_size == (3, 3)]
        for name, conv in targets:
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, DeformConv2dPack.from_conv(conv))
            replaced.append(f"layer{k}.{name}")
    return replaced


class PathAggregation(ExtraFPNBlock):
    """PANet bottom-up path augmentation after the FPN (an ``ExtraFPNBlock``).

    Given the FPN outputs ``P_2..P_top`` (``(N, C, H_i, W_i)``, strides doubling), returns
    ``N_2..N_top`` plus ``"pool"``:

    * ``N_2 = P_2``;
    * ``N_{i+1} = ReLU(conv3x3(ReLU(conv3x3_stride2(N_i)) + P_{i+1}))``: the form of the PANet
      paper (a stride-2 3x3 conv on ``N_i``, element-wise sum with ``P_{i+1}``, another 3x3
      conv; every conv followed by a ReLU), all ``C`` channels;
    * ``pool = max_pool2d(N_top, 1, stride=2)``, like torchvision's ``LastLevelMaxPool``.

    Names and shapes equal the plain FPN's, so torchvision's RPN and RoI poolers work unchanged.
    PANet's adaptive feature pooling and fully-connected mask fusion are not part of this.
    """

    def __init__(self, channels: int, num_levels: int) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"PathAggregation needs at least one level, got {num_levels}")
        self.channels = channels
        self.down = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(num_levels - 1)
        )
        self.fuse = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in range(num_levels - 1)
        )
        for m in self.modules():  # as torchvision initialises the FPN's convs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]
                ) -> tuple[list[Tensor], list[str]]:
        if len(results) != len(self.down) + 1:
            raise ValueError(f"PathAggregation built for {len(self.down) + 1} FPN levels, "
                             f"got {len(results)} ({names})")
        out = [results[0]]
        for i, (down, fuse) in enumerate(zip(self.down, self.fuse, strict=True)):
            d = F.relu(down(out[-1]))
            p = results[i + 1]
            if d.shape != p.shape:
                raise ValueError(f"PANet level {names[i + 1]}: downsampled {tuple(d.shape)} "
                                 f"does not match the FPN's {tuple(p.shape)}")
            out.append(F.relu(fuse(d + p)))
        out.append(F.max_pool2d(out[-1], kernel_size=1, stride=2, padding=0))
        return out, [*names, "pool"]


def load_backbone_state_dict(body: nn.Module, path: str | os.PathLike, *, name: str = ""
                             ) -> list[str]:
    """Load a torchvision classification state dict (e.g. ``resnet101().state_dict()`` saved
    with ``torch.save``) from ``path`` into ``body`` (the ResNet before it is wrapped).

    ``fc.*`` and ``num_batches_tracked`` entries of the file are ignored, and the deformable
    layers' ``conv_offset`` tensors may be absent (they keep their zero start). Anything else
    missing, unexpected or of another shape raises ``ValueError`` naming the file and keys.

    Returns the keys loaded.
    """
    sd, source = resolve_weights(Path(path))
    own = body.state_dict()
    sd = {k: v for k, v in sd.items()
          if not k.startswith(_IGNORED_FILE_KEYS) and not k.endswith("num_batches_tracked")}
    wanted = {k for k in own
              if not k.startswith(_IGNORED_FILE_KEYS) and not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in wanted - sd.keys() if _NEW_KEY_MARK not in k)
    unexpected = sorted(sd.keys() - wanted)
    shapes = sorted(f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                    for k in wanted & sd.keys() if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

        problems = [f"{label}: {few(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                    if keys]
        raise ValueError(f"backbone weights {source} do not match the {name or 'backbone'} "
                         f"body: " + "; ".join(problems))
    body.load_state_dict(sd, strict=False)
    logger.info("backbone weights from %s: loaded %d tensors", source, len(sd))
    return sorted(sd)
