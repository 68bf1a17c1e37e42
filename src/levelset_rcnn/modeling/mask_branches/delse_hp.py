"""``"delse_hp"``: DELSE's evolution driven by the paper's hyperparameter head, with our TSDF
loss (Table 3's "DELSE + HP").

The hyperparameter head (:class:`~levelset_rcnn.modeling.heads.HyperParameterHead`, ``2N + 3``
outputs in (0, 2)) supplies per-instance multipliers of DELSE's hand-set values: advection
``a = lambda_1``, curvature ``c = delse_curvature * mu``, steps ``dt_n = delse_dt * dt_n``
(``lambda_2`` and ``eps_n`` have no role in the edge-based update), starting at 1
(:data:`~.delse.DELSE_HP_INIT`). Losses: :func:`~levelset_rcnn.modeling.losses.tsdf_loss` on
``phi_0`` and ``phi_N``, plus DELSE's velocity loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..heads import GlobalHyperParameters, HyperParameterHead, HyperParameters, TSDFPredictor
from ..losses import DEFAULT_TRUNCATION, tsdf_loss
from .delse import DELSE_CURVATURE, DELSE_DT, DELSE_HP_INIT, DELSEBranch

__all__ = ["DELSEHPBranch"]


class DELSEHPBranch(DELSEBranch):
    """DELSE + HP: :class:`~.delse.DELSEBranch` with a ``hyper_head``
    (``(R, C_t, 14, 14) -> (R, 2N + 3)``); the other arguments are DELSE's."""

    def __init__(self, tsdf_predictor: nn.Module, velocity_head: nn.Module,
                 modulation_head: nn.Module, hyper_head: nn.Module, **kwargs) -> None:
        super().__init__(tsdf_predictor, velocity_head, modulation_head, **kwargs)
        self.hyper_head = hyper_head

    @classmethod
    def build(cls, in_channels: int, num_classes: int, *, predictor_channels: int = 256,  # type: ignore[override]
              class_agnostic: bool = False, hyperparams: str = "head",
              hyper_init: Mapping[str, float] | None = None, num_steps: int = 3,
              cv_hidden_channels: int = 64, delse_dt: float = DELSE_DT,
              delse_curvature: float = DELSE_CURVATURE, velocity_loss_weight: float = 1.0,
              resolution: int = 112, truncation: float = DEFAULT_TRUNCATION,
              loss_weights: Sequence[float] = (1.0, 5.0),
              detach_phi0: bool = False) -> DELSEHPBranch:
        """The branch with its default heads; ``hyper_init`` defaults to
        :data:`~.delse.DELSE_HP_INIT` (multipliers of 1)."""
        if hyperparams not in ("head", "global"):
            raise ValueError(f"hyperparams must be 'head' or 'global', got {hyperparams!r}")
        init = DELSE_HP_INIT if hyper_init is None else hyper_init
        tsdf = TSDFPredictor(in_channels, num_classes, hidden_channels=predictor_channels,
                             class_agnostic=class_agnostic)
        hyper = (HyperParameterHead(in_channels, num_steps, init=init)
                 if hyperparams == "head" else GlobalHyperParameters(num_steps, init=init))
        velocity, modulation = cls.make_heads(in_channels, hidden_channels=cv_hidden_channels,
                                              resolution=resolution)
        return cls(tsdf, velocity, modulation, hyper, num_steps=num_steps, dt=delse_dt,
                   curvature=delse_curvature, velocity_loss_weight=velocity_loss_weight,
                   resolution=resolution, truncation=truncation, loss_weights=loss_weights,
                   detach_phi0=detach_phi0)

    def step_parameters(self, x: Tensor, phi0: Tensor, out: dict[str, Tensor]
                        ) -> tuple[Tensor, Tensor | float, Tensor | float]:
        """Per-instance multipliers of the hand-set values from the hyperparameter head (its
        raw output is kept as ``out["hyper"]``)."""
        raw = self.hyper_head(x)
        out["hyper"] = raw
        hp = HyperParameters.from_raw(raw, self.num_steps)
        return self.dt * hp.dt, hp.lambda1, self.curvature * hp.mu

    def phi_losses(self, phi0: Tensor, phiN: Tensor, mask_t: Tensor,
                   tsdf_t: Tensor) -> tuple[Tensor, Tensor]:
        """Our TSDF loss on both level sets (unweighted)."""
        return tsdf_loss(phi0, tsdf_t, mask_t), tsdf_loss(phiN, tsdf_t, mask_t)
