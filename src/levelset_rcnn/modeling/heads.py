"""The three RoI heads that LevelSet R-CNN adds to Mask R-CNN (paper, section 4.1).

All three read the output of the *mask trunk*: Mask R-CNN's own mask head (four 3x3 convs of
256 channels on 14x14 RoIAlign features, :class:`torchvision.models.detection.mask_rcnn.
MaskRCNNHeads`), kept unchanged so that it can be initialised from COCO Mask R-CNN weights and
so that the baseline and LevelSet R-CNN spend exactly the same compute up to that point. The
paper's supplement (not available to us) gives its exact layouts; ours are chosen to keep the
added cost small (the overhead target is 1.10x Mask R-CNN at inference):

* :class:`TSDFPredictor` (initial TSDF head): Mask R-CNN's predictor with a TSDF output,
  ``ConvTranspose 2x2/2 (256 -> 256) -> ReLU -> 1x1 conv (-> K) -> tanh`` giving a 28x28 TSDF
  in [-1, 1] per class (``K = num_classes``) or class-agnostic (``K = 1``), which the RoI heads
  upsample bilinearly to 112x112 as ``phi_0``.
* :class:`HyperParameterHead`: ``3x3 conv stride 2 (-> 64) -> ReLU -> 3x3 conv (64) -> ReLU``
  at 7x7, global average pooling, ``FC (64 -> 128) -> ReLU -> FC (128 -> 2N+3)`` and
  ``2 * sigmoid``: ``lambda_1, lambda_2, mu, eps_1..eps_N, dt_1..dt_N``. The last layer starts
  with tiny weights and biases set so that every instance starts near :data:`DEFAULT_INIT`.
  :class:`GlobalHyperParameters` is the ablation with one learned set for the whole dataset.
* :class:`ChanVeseFeatureHead`: ``ConvTranspose 2x2/2 (256 -> 64) -> ReLU -> 1x1 conv
  (64 -> C)`` at 28x28, then bilinear upsampling to 112x112. All convolutions run at 14x14 or
  28x28; the 112x112 map is made by interpolation only, because a single 3x3 conv of 64
  channels at 112x112 costs ~0.9 GFLOP per RoI, as much as the whole mask trunk. By default
  the RoI heads do not even materialise the 112x112 map: :class:`.upsampled_cv.
  UpsampledChanVese` runs the Chan-Vese steps on the 28x28 map and the (exact, linear)
  bilinear upsampling operator, with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_INIT",
    "ChanVeseFeatureHead",
    "GlobalHyperParameters",
    "HyperParameterHead",
    "HighResMaskPredictor",
    "HyperParameters",
    "ImageFeatureHead",
    "LearnedFeatureHead",
    "TSDFPredictor",
    "hyperparameter_bias",
]

#: Initial hyperparameters (all in (0, 2), the range of ``2 * sigmoid``). With the default
#: truncation of 12 px, ``eps = 0.1`` puts the Heaviside transition and the Dirac band about
#: 1.2 px either side of the contour; ``delta_eps`` peaks at ``1 / pi``, so ``dt = 0.05`` moves a
#: normalised level set by ``~0.016 |V|`` per step near the contour, i.e. ``~0.2 |V|`` px. With
#: the ResNet-50 FPN model at initialisation (``|V|`` of a few units) three steps started from
#: a ground-truth TSDF move the contour by 1.4 px on average (at most ~5 px): a visible but
#: bounded correction. ``mu = 0.2`` keeps the length term (curvature ``~1 / radius``) small
#: next to the data term until it is learned.
DEFAULT_INIT: Mapping[str, float] = {
    "lambda1": 1.0,
    "lambda2": 1.0,
    "mu": 0.2,
    "eps": 0.1,
    "dt": 0.05,
}


@dataclass
class HyperParameters:
    """Per-RoI Chan-Vese hyperparameters: ``lambda1, lambda2, mu: (R,)``, ``eps, dt: (R, N)``."""

    lambda1: Tensor
    lambda2: Tensor
    mu: Tensor
    eps: Tensor
    dt: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor, num_steps: int) -> HyperParameters:
        """Split ``raw: (R, 2N + 3)`` (already in (0, 2)) into named parts."""
        N = num_steps
        return cls(raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3 : 3 + N], raw[:, 3 + N : 3 + 2 * N])


def hyperparameter_bias(num_steps: int, init: Mapping[str, float] | None = None) -> Tensor:
    """Pre-activation values ``(2N + 3,)`` whose ``2 * sigmoid`` equals ``init``."""
    values = dict(DEFAULT_INIT)
    values.update(init or {})
    for name, v in values.items():
        if not 0.0 < v < 2.0:
            raise ValueError(f"initial {name}={v} is outside (0, 2), the range of 2*sigmoid")
    order = [values["lambda1"], values["lambda2"], values["mu"]]
    order += [values["eps"]] * num_steps + [values["dt"]] * num_steps
    return torch.tensor([math.log((v / 2) / (1 - v / 2)) for v in order], dtype=torch.float32)


#: About how many values of the 112x112 maps :meth:`LearnedFeatureHead.compact` makes at once
#: on the CPU (4 MB in float32: five RoIs of 16 channels).
CPU_HEAD_CHUNK_ELEMENTS = 1 << 20


def _init_relu_convs(modules: Iterable[nn.Module]) -> None:
    """He initialisation (fan-out, ReLU) and zero bias for the (transposed) convolutions among
    ``modules``, in order."""
    for m in modules:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TSDFPredictor(nn.Module):
    """Initial TSDF head: ``(R, in_channels, 14, 14)`` trunk features -> ``(R, K, 28, 28)``
    TSDF in [-1, 1] (``K = num_classes``, or 1 when ``class_agnostic``).

    Layout: ``ConvTranspose2d(in, hidden, 2, stride 2) -> ReLU -> Conv2d(hidden, K, 1) -> tanh``
    (Mask R-CNN's predictor with a bounded, signed output instead of logits).
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, hidden_channels: int = 256,
        class_agnostic: bool = False,
    ) -> None:
        super().__init__()
        self.num_outputs = 1 if class_agnostic else num_classes
        self.upsample = nn.ConvTranspose2d(in_channels, hidden_channels, 2, stride=2)
        self.predict = nn.Conv2d(hidden_channels, self.num_outputs, 1)
        _init_relu_convs([self.upsample])
        # Small output weights: tanh starts in its linear range instead of saturated at +-1.
        nn.init.normal_(self.predict.weight, std=0.01)
        nn.init.zeros_(self.predict.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.predict(F.relu(self.upsample(x))))


class HyperParameterHead(nn.Module):
    """Per-instance hyperparameters: ``(R, in_channels, S, S)`` -> ``(R, 2N + 3)`` in (0, 2).

    Layout: ``Conv3x3/2(in, hidden) -> ReLU -> Conv3x3(hidden, hidden) -> ReLU -> avg pool ->
    Linear(hidden, fc) -> ReLU -> Linear(fc, 2N + 3) -> 2 * sigmoid``. The last layer has zero
    weights and biases from :func:`hyperparameter_bias`, so training starts from ``init``.
    """

    def __init__(
        self, in_channels: int, num_steps: int, *, hidden_channels: int = 64,
        fc_channels: int = 128, init: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.fc1 = nn.Linear(hidden_channels, fc_channels)
        self.fc2 = nn.Linear(fc_channels, 2 * num_steps + 3)
        _init_relu_convs(self.convs)
        # Small (not zero) weights: every instance starts near ``init`` and gradients reach
        # the convolutions from the first step.
        nn.init.normal_(self.fc2.weight, std=1e-3)
        with torch.no_grad():
            self.fc2.bias.copy_(hyperparameter_bias(num_steps, init))

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(x).mean(dim=(2, 3))
        return 2.0 * torch.sigmoid(self.fc2(F.relu(self.fc1(h))))


class GlobalHyperParameters(nn.Module):
    """Ablation: one learned set of ``2N + 3`` hyperparameters shared by every RoI.

    ``forward(x: (R, ...)) -> (R, 2N + 3)``; the input is only used for its batch size, dtype
    and device.
    """

    def __init__(self, num_steps: int, *, init: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.logits = nn.Parameter(hyperparameter_bias(num_steps, init))

    def forward(self, x: Tensor) -> Tensor:
        return (2.0 * torch.sigmoid(self.logits)).to(x.dtype).expand(x.shape[0], -1)


class ChanVeseFeatureHead(nn.Module):
    """Chan-Vese features: ``(R, in_channels, S, S)`` -> ``(R, C, out_size, out_size)``.

    Layout: ``ConvTranspose2d(in, hidden, 2, stride 2) -> ReLU -> Conv2d(hidden, C, 1)`` at
    ``2S`` (28x28), then bilinear upsampling to ``out_size`` (112). The 1x1 projection is done
    before upsampling (the two commute) so that no convolution ever runs at 112x112.
    """

    def __init__(
        self, in_channels: int, *, out_channels: int = 64, hidden_channels: int = 64,
        out_size: int = 112,
    ) -> None:
        super().__init__()
        self.out_size = out_size
        self.upsample = nn.ConvTranspose2d(in_channels, hidden_channels, 2, stride=2)
        self.project = nn.Conv2d(hidden_channels, out_channels, 1)
        _init_relu_convs([self.upsample])
        # Unit-variance-per-input init: ||F - c||^2 stays of order one at initialisation.
        nn.init.normal_(self.project.weight, std=1.0 / math.sqrt(hidden_channels * out_channels))
        nn.init.zeros_(self.project.bias)

    def low_res(self, x: Tensor) -> Tensor:
        """The features before the final upsampling: ``(R, C, 2S, 2S)``."""
        return self.project(F.relu(self.upsample(x)))

    def forward(self, x: Tensor) -> Tensor:
        f = self.low_res(x)
        if f.shape[-1] != self.out_size or f.shape[-2] != self.out_size:
            f = F.interpolate(f, size=(self.out_size, self.out_size), mode="bilinear",
                              align_corners=False)
        return f


class LearnedFeatureHead(nn.Module):
    """Chan-Vese features learned all the way to 112x112 (the paper, section 4.1: the RoI
    passes "through a sequence of convolutions and upsampling layers" to a ``C x 112 x 112``
    embedding): ``(R, in_channels, 14, 14) -> (R, C, 112, 112)``.

    Layout: ``ConvTranspose 2x2/2 (-> c28) -> ReLU -> 3x3 conv (c28) -> ReLU`` at 28x28,
    ``ConvTranspose 2x2/2 (-> c56) -> ReLU`` at 56x56, ``ConvTranspose 2x2/2 (-> c112) ->
    ReLU`` at 112x112, ``1x1 conv (-> C)``. Every layer past 28x28 is narrow (the cost of a
    layer grows with its area), and the last one is linear, which :meth:`compact` exploits.

    :meth:`compact` gives the map the Chan-Vese layer reads: ``R G`` with ``G`` the
    ``c112``-channel map before the 1x1 projection ``F = W G`` (no bias: the energy is
    invariant to a constant offset) and ``W = Q R`` its reduced QR factorisation. The
    Chan-Vese energy depends on the features only through distances
    ``||F(x) - F(y)|| = ||W (G(x) - G(y))|| = ||R (G(x) - G(y))||`` and region means (linear),
    so the evolution on ``R G`` (``min(C, c112)`` channels) equals the evolution on ``F``
    (``C`` channels) exactly, at a fraction of the cost.
    """

    def __init__(self, in_channels: int, *, out_channels: int = 64, channels_28: int = 64,
                 channels_56: int = 32, channels_112: int = 16, out_size: int = 112) -> None:
        super().__init__()
        if out_size != 112:
            raise ValueError(f"LearnedFeatureHead makes 112x112 features (3 doublings of the "
                             f"14x14 RoI), got out_size={out_size}")
        self.out_size = out_size
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_channels, channels_28, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_28, channels_28, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels_28, channels_56, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels_56, channels_112, 2, stride=2),
            nn.ReLU(inplace=True),
        )
        # No bias: the Chan-Vese energy is invariant to a constant offset of the features.
        self.project = nn.Conv2d(channels_112, out_channels, 1, bias=False)
        _init_relu_convs(self.layers)
        # As ChanVeseFeatureHead: ||F - c||^2 of order one at initialisation.
        nn.init.normal_(self.project.weight, std=1.0 / math.sqrt(channels_112 * out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.layers(x))

    def compact(self, x: Tensor) -> Tensor:
        """``(R, min(C, c112), 112, 112)``: the features the Chan-Vese layer needs (see the
        class docstring); the evolution on them equals the evolution on ``forward(x)``.

        On the CPU the RoIs go through in chunks of about :data:`CPU_HEAD_CHUNK_ELEMENTS`
        values at 112x112, so that a chunk's maps stay in cache between the layers (the
        layers past 28x28 are memory-bound; about twice as fast at 100 RoIs). RoIs are
        independent: the result is the same."""
        w = self.project.weight[:, :, 0, 0]  # (C, c112)
        _, r = torch.linalg.qr(w.float(), mode="reduced")  # (k, c112)
        per_roi = self.layers[-2].out_channels * self.out_size ** 2
        one_pass = (x.device.type != "cpu" or torch.jit.is_tracing()
                    or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())
        size = max(1, CPU_HEAD_CHUNK_ELEMENTS // per_roi)

        def rg(xs: Tensor) -> Tensor:
            g = self.layers(xs)
            return torch.einsum("kc,rchw->rkhw", r.to(g.dtype), g)

        if one_pass or x.shape[0] <= size:  # an exported graph serves any number of RoIs
            return rg(x)
        return torch.cat([rg(x[i : i + size]) for i in range(0, x.shape[0], size)])


class ImageFeatureHead(nn.Module):
    """Chan-Vese features from the image itself (beyond the paper): the pixels inside each box
    at ``M x M`` (``(R, in_channels, M, M)``, the normalised input RoIAligned by the RoI heads)
    mixed by a bias-free 1x1 convolution into ``out_channels`` maps that the branch appends to
    the learned features.

    The classic Chan-Vese data term is the image: a boundary where the intensity changes is
    one the evolution can find at the image's own resolution, whatever the trunk's 14x14 grid
    holds. The mix starts as the channel mean (grey level) in every output channel and learns
    the channels' weight against the learned features (the distances of eq. 7 add up over
    channels).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        self.mix = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.constant_(self.mix.weight, 1.0 / in_channels)

    def forward(self, image: Tensor) -> Tensor:
        return self.mix(image)


class HighResMaskPredictor(nn.Module):
    """Ablation "Mask R-CNN with a 112x112 mask head": binary mask logits at ``4 * 2S``.

    ``(R, in_channels, 14, 14)`` -> ``(R, num_classes, 112, 112)``. Layout: Mask R-CNN's
    ``ConvTranspose 2x2/2 (-> 256)`` to 28x28, then two ``ConvTranspose 2x2/2 (-> 64) -> ReLU``
    to 56 and 112, then ``1x1 conv`` to one logit per class.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, hidden_channels: int = 256,
        fine_channels: int = 64,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_channels, hidden_channels, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden_channels, fine_channels, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(fine_channels, fine_channels, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(fine_channels, num_classes, 1),
        )
        _init_relu_convs(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
