"""The demo in one room: what ``levelset-rcnn demo`` writes besides the training run.

- :func:`write_report`: ``report.md`` with the AP / AF / Boundary AP table (Mask R-CNN's 28x28
  head on the same frozen detector, phi_0 and phi_N), the figure of what phi_N fixes, the
  phi_0 -> phi_N figure, prediction overlays (drawn by :mod:`levelset_rcnn.engine.predict`),
  the loss curve, the budget and the wall time;
- :mod:`.figures`: :func:`capture_evolution` (every Chan-Vese iterate of a few detections),
  :func:`evolution_figure`, :func:`compare_instances` / :func:`comparison_figure` (both mask
  heads on the same boxes against the ground truth), :func:`loss_figure`;
- :func:`run_showcase`: the classic (intensity) Chan-Vese on scikit-image's photographs.

The demo sits above ``engine/`` (it may import engine, data, evaluation, modeling and
levelset); nothing below the command line imports it.
"""

from .figures import (
    capture_evolution,
    compare_instances,
    comparison_figure,
    evolution_figure,
    loss_figure,
)
from .report import write_report
from .showcase import run_showcase

__all__ = ["capture_evolution", "compare_instances", "comparison_figure", "evolution_figure",
           "loss_figure", "run_showcase", "write_report"]
