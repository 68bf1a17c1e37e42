"""DELSE (Wang et al., "Object instance annotation with deep extreme level set evolution",
CVPR 2019; the paper's reference [65]) inside the RoI heads, for Table 3 of the paper.

DELSE evolves a level set with an *edge-based* update (geodesic active contours with learned
terms) instead of the region-based Chan-Vese energy. As the paper adapted it to instance
segmentation, the mask head becomes the TSDF head (``phi_0``, shared with LevelSet R-CNN) and
two heads are added on the same mask trunk, both :class:`.heads.ChanVeseFeatureHead` modules
(28x28 convolutions, bilinear upsampling to the ``M x M`` RoI grid):

* the velocity head, 2 channels ``(v_x, v_y)`` (x along columns, y along rows), normalised
  per pixel to a unit direction, trained to point towards the object boundary;
* the modulation head, 1 channel, ``g = sigmoid(.)`` in (0, 1), which weights the curvature
  term (DELSE uses a sigmoid too).

One step, on the ``M x M`` (112x112) grid (:func:`levelset_rcnn.levelset.delse_evolve`, with
the Sobel gradients and the curvature of :mod:`levelset_rcnn.levelset.functional`)::

    phi <- phi + dt_n * ( c * g * kappa(phi) * |grad phi|  -  a * v . grad phi )

``-v . grad phi`` is the advection of the level sets along ``v``: with ``v`` the direction to
the ground-truth boundary, every contour (whatever the sign convention of ``phi``) is carried
towards it at ``a * dt_n`` pixels per step. ``g kappa |grad phi|`` is mean-curvature motion,
the smoothing term of geodesic active contours. Both terms are invariant to the scale of
``phi`` (our ``phi`` is the TSDF divided by the truncation), so ``dt`` is in pixels of the
``M`` grid. DELSE's own code gates both terms with a compactly supported Dirac band of its
pixel-valued ``phi`` and adds DRLSE's distance-regularisation term; neither is used here:
the truncated TSDF is flat (zero gradient, no motion) outside its band already, and three
steps do not drift far from a distance function.

Settings (``mask_head_type``; this file is ``"delse"``, :mod:`.delse_hp` the other):

* ``"delse"``: hand-set ``dt_n = dt`` (:data:`DELSE_DT` = 2 px), ``a = 1``, ``c`` =
  :data:`DELSE_CURVATURE` = 0.5, and DELSE's losses: L2 on ``phi_0`` against the TSDF,
  class-balanced cross entropy (:func:`class_balanced_bce`, DEXTR / DELSE form, counts over the
  batch) on ``H_0.1(phi_N)``, and the angular L2 loss (:func:`angular_loss`) on the velocity.
  ``dt * c * max(g) <= 1`` keeps the explicit curvature step within its stability bound.
* ``"delse_hp"``: the paper's hyperparameter head (:class:`.heads.HyperParameterHead`,
  unchanged, ``2N + 3`` outputs in (0, 2)) supplies per-instance multipliers of the hand-set
  values: ``a = lambda_1``, ``c = DELSE_CURVATURE * mu``, ``dt_n = DELSE_DT * dt_n`` (``lambda_2``
  and ``eps_n`` have no role in the edge-based update and are unused), starting at 1
  (:data:`DELSE_HP_INIT`). Losses: ours (:func:`.losses.tsdf_loss` on ``phi_0`` and
  ``phi_N``) plus the velocity loss.

The velocity target (:func:`velocity_targets`) is the direction of steepest descent of the
ground-truth distance to the boundary, ``-sign(D) grad D / |grad D|`` for the signed distance
``D`` (positive inside), i.e. minus the normalised gradient of the unsigned distance, taken
from the same TSDF target as the other losses (so it is defined in the truncation band, where
the contours move; outside it the loss is not applied).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...levelset import delse_evolve, normalise_velocity
from ...levelset.edge_evolution import VELOCITY_ETA
from ...levelset.functional import sobel
from ..heads import ChanVeseFeatureHead, TSDFPredictor
from ..losses import DEFAULT_TRUNCATION, LOSS_EPS, heaviside_nll
from .tsdf import TSDFBranch

__all__ = [
    "DELSE_CURVATURE",
    "DELSE_DT",
    "DELSE_HP_INIT",
    "VELOCITY_MARGIN",
    "DELSEBranch",
    "angular_loss",
    "class_balanced_bce",
    "velocity_targets",
]

#: Hand-set step of the ``"delse"`` setting, in pixels of the 112x112 grid per step: three
#: steps move a contour by up to 6 px (1.5 px of the 28x28 TSDF head's grid), the size of the
#: errors of a bilinearly upsampled 28x28 prediction.
DELSE_DT = 2.0
#: Hand-set gain of the curvature term (times ``g`` in (0, 1)): ``DELSE_DT * 0.5 = 1`` is the
#: stability bound of an explicit step of the (Sobel) curvature flow.
DELSE_CURVATURE = 0.5
#: ``"delse_hp"``: initial outputs of the hyperparameter head; the multipliers of the advection
#: (``lambda1``), of the curvature (``mu``) and of the steps (``dt``) start at 1.
DELSE_HP_INIT: Mapping[str, float] = {"lambda1": 1.0, "lambda2": 1.0, "mu": 1.0, "eps": 0.1,
                                      "dt": 1.0}
#: Velocity targets are used where the TSDF's 3x3 Sobel stencil stays inside the truncation
#: band: ``|D| < truncation - VELOCITY_MARGIN`` pixels.
VELOCITY_MARGIN = 2.0


class DELSEBranch(TSDFBranch):
    """DELSE's heads, evolution and losses on the shared initial TSDF (``"delse"``).

    Args:
        tsdf_predictor: initial TSDF head (as :class:`~.tsdf.TSDFBranch`).
        velocity_head: ``(R, C_t, 14, 14) -> (R, 2, M, M)`` raw velocities.
        modulation_head: ``(R, C_t, 14, 14) -> (R, 1, M, M)`` logits of ``g``.
        num_steps: ``N`` evolution steps.
        dt: step in pixels of the ``M`` grid (:data:`DELSE_DT`).
        curvature: curvature gain ``c`` (:data:`DELSE_CURVATURE`).
        velocity_loss_weight: weight of ``loss_velocity``.
        resolution, truncation, loss_weights: as :class:`~.tsdf.TSDFBranch`.
        detach_phi0: Table 4's ablation, as in :class:`~.levelset.LevelSetBranch`.
    """

    refines_initial_tsdf = True

    def __init__(self, tsdf_predictor: nn.Module, velocity_head: nn.Module,
                 modulation_head: nn.Module, *, num_steps: int = 3, dt: float = DELSE_DT,
                 curvature: float = DELSE_CURVATURE, velocity_loss_weight: float = 1.0,
                 resolution: int = 112, truncation: float = DEFAULT_TRUNCATION,
                 loss_weights: Sequence[float] = (1.0, 5.0), detach_phi0: bool = False) -> None:
        super().__init__(tsdf_predictor, resolution=resolution, truncation=truncation,
                         loss_weights=loss_weights)
        if not dt > 0:
            raise ValueError(f"delse_dt must be positive, got {dt}")
        for name, value in (("delse_curvature", curvature),
                            ("velocity_loss_weight", velocity_loss_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.velocity_head = velocity_head
        self.modulation_head = modulation_head
        self.num_steps = int(num_steps)
        self.dt = float(dt)
        self.curvature = float(curvature)
        self.velocity_loss_weight = float(velocity_loss_weight)
        self.detach_phi0 = bool(detach_phi0)

    @staticmethod
    def make_heads(in_channels: int, *, hidden_channels: int,
                   resolution: int) -> tuple[nn.Module, nn.Module]:
        """DELSE's velocity and modulation heads: the Chan-Vese feature head's layout (28x28
        convolutions, bilinear to ``M``) with 2 and 1 output channels."""
        velocity = ChanVeseFeatureHead(in_channels, out_channels=2,
                                       hidden_channels=hidden_channels, out_size=resolution)
        modulation = ChanVeseFeatureHead(in_channels, out_channels=1,
                                         hidden_channels=hidden_channels, out_size=resolution)
        return velocity, modulation

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,  # type: ignore[override]
              class_agnostic: bool = False, num_steps: int = 3, cv_hidden_channels: int = 64,
              delse_dt: float = DELSE_DT, delse_curvature: float = DELSE_CURVATURE,
              velocity_loss_weight: float = 1.0, resolution: int = 112,
              truncation: float = DEFAULT_TRUNCATION,
              loss_weights: Sequence[float] = (1.0, 5.0),
              detach_phi0: bool = False) -> DELSEBranch:
        """The branch with its default heads (``cv_hidden_channels`` wide)."""
        tsdf = TSDFPredictor(in_channels, num_classes, hidden_channels=predictor_channels,
                             class_agnostic=class_agnostic)
        velocity, modulation = cls.make_heads(in_channels, hidden_channels=cv_hidden_channels,
                                              resolution=resolution)
        return cls(tsdf, velocity, modulation, num_steps=num_steps, dt=delse_dt,
                   curvature=delse_curvature, velocity_loss_weight=velocity_loss_weight,
                   resolution=resolution, truncation=truncation, loss_weights=loss_weights,
                   detach_phi0=detach_phi0)

    def step_parameters(self, x: Tensor, phi0: Tensor, out: dict[str, Tensor]
                        ) -> tuple[Tensor, Tensor | float, Tensor | float]:
        """``(dt (R, N), advection a, curvature gain c)``: DELSE's hand-set values."""
        dt = phi0.new_full((phi0.shape[0], self.num_steps), self.dt, dtype=torch.float32)
        return dt, 1.0, self.curvature

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``phi0, phiN: (R, 1, M, M)``, ``velocity: (R, 2, M, M)`` (raw) and
        ``modulation: (R, 1, M, M)`` (``g``)."""
        out = super().forward(x, labels)
        phi0 = out["phi0"]
        M = self.resolution
        xc = x.detach() if self.detach_phi0 else x  # as LevelSetBranch's detach_phi0
        velocity = self.velocity_head(xc)
        g = torch.sigmoid(self.modulation_head(xc))
        if velocity.shape[-1] != M or g.shape[-1] != M:
            raise ValueError(f"velocity / modulation heads must output {M}x{M} maps, got "
                             f"{tuple(velocity.shape)} / {tuple(g.shape)}")
        out.update(velocity=velocity, modulation=g)
        dt, advection, gain = self.step_parameters(xc, phi0, out)
        start = phi0.detach() if self.detach_phi0 else phi0
        out["phiN"] = delse_evolve(start, normalise_velocity(velocity.float()), g, dt,
                                   advection=advection, curvature_gain=gain)
        return out

    def phi_losses(self, phi0: Tensor, phiN: Tensor, mask_t: Tensor,
                   tsdf_t: Tensor) -> tuple[Tensor, Tensor]:
        """DELSE's own losses (unweighted): L2 on ``phi_0`` against the TSDF and the
        class-balanced cross entropy of ``H_0.1(phi_N)``."""
        init = (phi0.float() - tsdf_t).square().mean() if phi0.numel() else phi0.sum() * 0
        return init, class_balanced_bce(phiN, mask_t, eps=LOSS_EPS)

    def tsdf_losses(self, out: dict[str, Tensor], mask_t: Tensor,
                    tsdf_t: Tensor) -> dict[str, Tensor]:
        """``loss_tsdf_init``, ``loss_tsdf_final`` (:meth:`phi_losses`) and
        ``loss_velocity``."""
        w0, wN = self.loss_weights
        phi0, phiN = out["phi0"][:, 0], out["phiN"][:, 0]
        init, final = self.phi_losses(phi0, phiN, mask_t, tsdf_t)
        v_t, valid = velocity_targets(tsdf_t, self.truncation)
        velocity = angular_loss(out["velocity"], v_t, valid)
        if phiN.shape[0] == 0:
            # Keep every head in the graph (DDP) when a batch has no positive RoI.
            keep = out["modulation"].sum() + out.get("hyper", phiN).sum()
            final = final + 0.0 * keep
        return {"loss_tsdf_init": w0 * init, "loss_tsdf_final": wN * final,
                "loss_velocity": self.velocity_loss_weight * velocity}

    def inference(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"tsdf": out["phiN"].float(), "tsdf_init": out["phi0"].float()}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_steps={self.num_steps}, dt={self.dt}, "
                f"curvature={self.curvature}, detach_phi0={self.detach_phi0}")


def velocity_targets(tsdf: Tensor, truncation: float, *,
                     margin: float = VELOCITY_MARGIN) -> tuple[Tensor, Tensor]:
    """Unit directions towards the ground-truth boundary, from the TSDF target.

    Args:
        tsdf: ``(R, M, M)`` TSDF targets in [-1, 1] (positive inside,
            :func:`~levelset_rcnn.levelset.masks_to_tsdf` with ``truncation``).
        truncation: the TSDF's truncation in pixels.
        margin: pixels kept clear of the truncation plateau (see :data:`VELOCITY_MARGIN`).

    Returns:
        ``v: (R, 2, M, M)`` float32 ``(v_x, v_y)``, ``-sign(D) grad D / |grad D|`` with
        ``D = truncation * tsdf`` (Sobel gradient), zero where invalid; ``valid: (R, M, M)``
        bool: ``|D| < truncation - margin`` and ``|grad D| > 0.5`` (a distance function has a
        unit gradient; smaller Sobel values mark the medial axis, where the direction flips).
    """
    if tsdf.dim() != 3:
        raise ValueError(f"tsdf must be (R, M, M), got {tuple(tsdf.shape)}")
    d = tsdf.float()[:, None] * float(truncation)
    gx, gy = sobel(d)
    norm = torch.sqrt(gx * gx + gy * gy)
    valid = (d.abs() < float(truncation) - margin) & (norm > 0.5)
    scale = torch.where(valid, -torch.sign(d) / norm.clamp_min(1e-6), torch.zeros_like(d))
    return torch.cat([gx * scale, gy * scale], dim=1), valid[:, 0]


def angular_loss(pred: Tensor, target: Tensor, valid: Tensor, *,
                 eta: float = VELOCITY_ETA) -> Tensor:
    """DELSE's "L2 on the angular domain": mean over valid pixels of ``angle(pred, target)^2``.

    Args:
        pred: ``(R, 2, M, M)`` predicted velocities (any length; normalised here).
        target: ``(R, 2, M, M)`` unit target directions (:func:`velocity_targets`).
        valid: ``(R, M, M)`` bool, where the target is defined.

    Returns:
        A scalar in ``[0, pi^2]`` radians squared; 0 (still in the graph) when no pixel is
        valid. The cosine is scaled by ``1 - 1e-4`` (as DELSE does) so that
        ``acos`` keeps a finite derivative for aligned vectors.
    """
    if pred.shape != target.shape or pred.shape[1] != 2:
        raise ValueError(f"pred and target must both be (R, 2, M, M), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = normalise_velocity(pred.float(), eta)
        cos = (p * target.float()).sum(1)
        angle = torch.acos(cos * (1.0 - 1e-4))
        w = valid.to(angle.dtype)
        # No host sync: with no valid pixel the sum is 0 and pred stays in the graph.
        return (angle.square() * w).sum() / w.sum().clamp_min(1.0)


def class_balanced_bce(phi: Tensor, mask_target: Tensor, *, eps: float) -> Tensor:
    """Class-balanced cross entropy (DEXTR / DELSE) of ``H_eps(phi)`` against a mask.

    With ``P`` pixels over the whole batch, ``P+`` of them inside: ``-(P-/P sum_{inside}
    log H + P+/P sum_{outside} log(1 - H)) / P``, so that each class weighs in proportion to
    the other's frequency.

    Args:
        phi: ``(R, M, M)`` level sets (positive inside).
        mask_target: ``(R, M, M)`` 0/1 floats.
        eps: Heaviside width.

    Returns:
        A scalar; ``phi.sum() * 0`` (still in the graph) when there are no RoIs.
    """
    if phi.numel() == 0:
        return phi.sum() * 0.0
    with torch.autocast(device_type=phi.device.type, enabled=False):
        nll_in, nll_out = heaviside_nll(phi, mask_target, eps)
        total = float(mask_target.numel())
        pos = mask_target.float().sum()
        neg = total - pos
        return (neg / total * nll_in.sum() + pos / total * nll_out.sum()) / total
