"""``"levelset"``: the full LevelSet R-CNN mask branch (paper, section 4).

On trunk features ``x: (R, C_t, 14, 14)``::

    phi_0  = up_112(tsdf_predictor(x)[label])        # (R, 1, 112, 112) in [-1, 1]
    hp     = hyper_head(x)                           # lambda1, lambda2, mu, eps_n, dt_n
    F      = feature_head(x)                         # (R, C, 112, 112)
    phi_N  = ChanVese(phi_0, F, hp)                  # N unrolled steps of eq. 7-9

Losses ``loss_tsdf_init`` (weight ``w_0``) on ``phi_0`` and ``loss_tsdf_final`` (``w_N``) on
``phi_N``; masks ``H_0.1(phi_N)``.

Two feature heads (``cv_features``):

* ``"learned"`` (the paper's, the default): :class:`~levelset_rcnn.modeling.heads.
  LearnedFeatureHead` learns its way to 112x112 with transposed convolutions; the core
  :class:`~levelset_rcnn.levelset.ChanVese` evolves on its :meth:`~levelset_rcnn.modeling.
  heads.LearnedFeatureHead.compact` map (the same evolution as on the ``C``-channel
  embedding, with fewer channels).
* ``"interpolated"``: :class:`~levelset_rcnn.modeling.heads.ChanVeseFeatureHead` stops at
  28x28 and reaches 112 by bilinear interpolation. With
  :class:`~levelset_rcnn.levelset.UpsampledChanVese` (``cv_upsampling="implicit"``) the branch
  hands it the 28x28 map (:meth:`~levelset_rcnn.modeling.heads.ChanVeseFeatureHead.low_res`)
  and the 112x112 map is never made (same result to float round-off, several times cheaper);
  with :class:`~levelset_rcnn.levelset.ChanVese` (``"explicit"``) it gets ``feature_head(x)``.

Which map the Chan-Vese module reads follows from the parts given: ``low_res`` for an
upsampling module, else ``compact`` when the head has it, else the head's output.

Beyond the paper, ``cv_image_channels > 0`` appends the image itself to the features: an
:class:`~levelset_rcnn.modeling.heads.ImageFeatureHead` mixes the pixels inside each box at
``M x M`` (which the RoI heads pass as ``image``, see ``reads_image``) into that many
channels, the classic Chan-Vese data term at the image's own resolution.

``detach_phi0`` (Table 4's ablation, "phi_0 does not take supervision from phi_N"):
``phi_N``'s loss reaches no parameter that ``phi_0`` depends on, neither the TSDF head nor the
shared mask trunk (nor, through it, the backbone): the evolution starts from
``phi_0.detach()`` and the hyperparameter and feature heads read the trunk's features
detached. Those two heads still learn from ``phi_N``; ``phi_0`` learns from its own loss only.
Detaching costs nothing at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...levelset import ChanVese, UpsampledChanVese
from ..heads import (
    ChanVeseFeatureHead,
    GlobalHyperParameters,
    HyperParameterHead,
    HyperParameters,
    ImageFeatureHead,
    LearnedFeatureHead,
    TSDFPredictor,
)
from ..losses import DEFAULT_TRUNCATION, tsdf_loss
from .tsdf import TSDFBranch

__all__ = ["LevelSetBranch"]


class LevelSetBranch(TSDFBranch):
    """The level-set mask branch.

    Args:
        tsdf_predictor: initial TSDF head ``(R, C_t, 14, 14) -> (R, K, 28, 28)``.
        hyper_head: ``(R, C_t, 14, 14) -> (R, 2N + 3)`` hyperparameters in (0, 2).
        feature_head: Chan-Vese features; with an implicit ``chan_vese`` it needs a
            ``low_res(x)`` method (:class:`~levelset_rcnn.modeling.heads.ChanVeseFeatureHead`).
        chan_vese: :class:`~levelset_rcnn.levelset.UpsampledChanVese` (implicit upsampling) or
            :class:`~levelset_rcnn.levelset.ChanVese`; its ``num_steps`` is ``N``.
        resolution, truncation, loss_weights: as :class:`~.tsdf.TSDFBranch`.
        detach_phi0: Table 4 ablation (see the module docstring).
        image_head: features from the image inside each box
            (:class:`~levelset_rcnn.modeling.heads.ImageFeatureHead`), appended to the
            feature head's; ``None``: none (the paper).
    """

    refines_initial_tsdf = True

    def __init__(self, tsdf_predictor: nn.Module, hyper_head: nn.Module, feature_head: nn.Module,
                 chan_vese: ChanVese | UpsampledChanVese, *, resolution: int = 112,
                 truncation: float = DEFAULT_TRUNCATION,
                 loss_weights: Sequence[float] = (1.0, 5.0), detach_phi0: bool = False,
                 image_head: nn.Module | None = None) -> None:
        super().__init__(tsdf_predictor, resolution=resolution, truncation=truncation,
                         loss_weights=loss_weights)
        if not isinstance(chan_vese, ChanVese | UpsampledChanVese):
            raise TypeError(f"chan_vese must be a ChanVese or UpsampledChanVese, got "
                            f"{type(chan_vese).__name__}")
        if isinstance(chan_vese, UpsampledChanVese) and not hasattr(feature_head, "low_res"):
            raise TypeError(f"UpsampledChanVese reads a low-resolution map: "
                            f"{type(feature_head).__name__} has no low_res(); use ChanVese")
        self.hyper_head = hyper_head
        self.feature_head = feature_head
        self.chan_vese = chan_vese
        self.detach_phi0 = bool(detach_phi0)
        if image_head is not None and isinstance(chan_vese, UpsampledChanVese):
            raise ValueError("image features are 112x112 maps: UpsampledChanVese reads 28x28 "
                             "ones; use ChanVese (cv_upsampling='explicit')")
        self.image_head = image_head

    @property
    def reads_image(self) -> bool:
        """The RoI heads pass ``image``, the pixels inside each box at ``M x M``."""
        return self.image_head is not None

    @property
    def num_steps(self) -> int:
        return self.chan_vese.num_steps

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,  # type: ignore[override]
              class_agnostic: bool = False, hyperparams: str = "head",
              hyper_init: Mapping[str, float] | None = None, num_steps: int = 3,
              cv_channels: int = 64, cv_hidden_channels: int = 64,
              cv_features: str = "learned", cv_fine_channels: int = 16,
              cv_upsampling: str = "implicit", resolution: int = 112,
              truncation: float = DEFAULT_TRUNCATION,
              loss_weights: Sequence[float] = (1.0, 5.0),
              detach_phi0: bool = False, cv_image_channels: int = 0) -> LevelSetBranch:
        """The branch with the default heads of :mod:`~levelset_rcnn.modeling.heads`.

        Args:
            in_channels: channels of the mask trunk's output.
            num_classes: classes including background (one initial TSDF each, unless
                ``class_agnostic``).
            predictor_channels: hidden channels of the 28x28 TSDF head.
            hyperparams: ``"head"`` (per instance, the paper) or ``"global"`` (one learned
                set, the ablation).
            hyper_init: initial hyperparameters (:data:`~levelset_rcnn.modeling.heads.
                DEFAULT_INIT` for what is not given).
            num_steps: ``N`` unrolled Chan-Vese steps.
            cv_channels, cv_hidden_channels: ``C`` and the feature head's 28x28 width.
            cv_features: ``"learned"`` or ``"interpolated"`` (module docstring).
            cv_fine_channels: the learned head's width at 112x112 (twice that at 56x56).
            cv_upsampling: ``"implicit"`` or ``"explicit"``, for interpolated features.
            cv_image_channels: channels of features made from the image inside each box and
                appended to the learned ones (beyond the paper; 0: none). Interpolated
                features then need ``cv_upsampling="explicit"``.
        """
        if hyperparams not in ("head", "global"):
            raise ValueError(f"hyperparams must be 'head' or 'global', got {hyperparams!r}")
        if cv_upsampling not in ("implicit", "explicit"):
            raise ValueError(f"cv_upsampling must be implicit or explicit, got "
                             f"{cv_upsampling!r}")
        if cv_features not in ("learned", "interpolated"):
            raise ValueError(f"cv_features must be learned or interpolated, got "
                             f"{cv_features!r}")
        tsdf = TSDFPredictor(in_channels, num_classes, hidden_channels=predictor_channels,
                             class_agnostic=class_agnostic)
        hyper = (HyperParameterHead(in_channels, num_steps, init=hyper_init)
                 if hyperparams == "head" else GlobalHyperParameters(num_steps, init=hyper_init))
        if cv_features == "learned":
            features: nn.Module = LearnedFeatureHead(
                in_channels, out_channels=cv_channels, channels_28=cv_hidden_channels,
                channels_56=2 * cv_fine_channels, channels_112=cv_fine_channels,
                out_size=resolution)
            cv: ChanVese | UpsampledChanVese = ChanVese(num_steps)
        else:
            features = ChanVeseFeatureHead(in_channels, out_channels=cv_channels,
                                           hidden_channels=cv_hidden_channels,
                                           out_size=resolution)
            cv = (UpsampledChanVese(num_steps) if cv_upsampling == "implicit"
                  else ChanVese(num_steps))
        if cv_image_channels < 0:
            raise ValueError(f"cv_image_channels must be >= 0, got {cv_image_channels}")
        image = ImageFeatureHead(3, cv_image_channels) if cv_image_channels else None
        return cls(tsdf, hyper, features, cv, resolution=resolution, truncation=truncation,
                   loss_weights=loss_weights, detach_phi0=detach_phi0, image_head=image)

    def forward(self, x: Tensor, labels: Tensor, *, image: Tensor | None = None,
                return_all: bool = False) -> dict[str, Tensor]:
        """``phi0, phiN: (R, 1, M, M)``, ``hyper: (R, 2N + 3)`` and ``features`` (the map the
        Chan-Vese module reads); with ``return_all`` also ``phis``, the list
        ``[phi_0, ..., phi_N]`` (for figures). ``image``: ``(R, 3, M, M)``, the pixels inside
        each box, needed when the branch ``reads_image``."""
        out = super().forward(x, labels)
        # detach_phi0: the Chan-Vese heads read the trunk's features but send phi_N's gradient
        # no further, so nothing phi_0 depends on learns from phi_N.
        xc = x.detach() if self.detach_phi0 else x
        raw = self.hyper_head(xc)
        hp = HyperParameters.from_raw(raw, self.num_steps)
        if isinstance(self.chan_vese, UpsampledChanVese):
            features = self.feature_head.low_res(xc)  # upsampled implicitly
        elif hasattr(self.feature_head, "compact"):
            features = self.feature_head.compact(xc)  # same evolution, fewer channels
        else:
            features = self.feature_head(xc)
        if self.image_head is not None:
            if image is None:
                raise ValueError("this branch reads the image inside each box: pass image=(R, "
                                 "3, M, M) (LevelSetRoIHeads.branch_outputs does)")
            features = torch.cat([features, self.image_head(image.to(features.dtype))], dim=1)
        phi0 = out["phi0"]
        start = phi0.detach() if self.detach_phi0 else phi0
        phis = self.chan_vese(start, features, lambda1=hp.lambda1, lambda2=hp.lambda2, mu=hp.mu,
                              eps=hp.eps, dt=hp.dt, return_all=return_all)
        if return_all:
            out["phis"] = list(phis)
            phis = phis[-1]
        out.update(phiN=phis, hyper=raw, features=features)
        return out

    def tsdf_losses(self, out: dict[str, Tensor], mask_t: Tensor,
                    tsdf_t: Tensor) -> dict[str, Tensor]:
        """``loss_tsdf_init`` and ``loss_tsdf_final``."""
        losses = super().tsdf_losses(out, mask_t, tsdf_t)
        final = tsdf_loss(out["phiN"][:, 0], tsdf_t, mask_t)
        if out["phiN"].shape[0] == 0:
            # Keep every head in the graph (DDP) when a batch has no positive RoI.
            final = final + 0.0 * (out["hyper"].sum() + out["features"].sum())
        losses["loss_tsdf_final"] = self.loss_weights[1] * final
        return losses

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"tsdf": out["phiN"].float(), "tsdf_init": out["phi0"].float()}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach_phi0={self.detach_phi0}"
