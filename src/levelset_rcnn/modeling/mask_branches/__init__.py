"""Mask branches: one module per variant of the paper's mask head, each owning its heads, its
evolution, its targets and losses and its inference output (interface in :mod:`.base`).

========================  ==========================================================
``levelset``              :class:`LevelSetBranch`: LevelSet R-CNN (paper, section 4)
``tsdf``                  :class:`TSDFBranch`: Mask R-CNN on a TSDF target
``binary``                :class:`BinaryMaskBranch`: Mask R-CNN at 28x28 or 112x112
``lsloss``                :class:`LSLossBranch`: Mask R-CNN + the Chan-Vese energy loss
``delse``                 :class:`DELSEBranch`: DELSE's edge-based evolution and losses
``delse_hp``              :class:`DELSEHPBranch`: DELSE + the hyperparameter head
========================  ==========================================================

The names are the recipes' ``model.mask_head_type``; only
:func:`levelset_rcnn.modeling.levelset_rcnn` maps them to classes.
"""

from .base import MaskBranch, MaskTargets, mask_probabilities, masks_from_maps
from .binary import BinaryMaskBranch
from .delse import DELSEBranch
from .delse_hp import DELSEHPBranch
from .levelset import LevelSetBranch
from .lsloss import LSLossBranch
from .tsdf import TSDFBranch

__all__ = [
    "BinaryMaskBranch",
    "DELSEBranch",
    "DELSEHPBranch",
    "LSLossBranch",
    "LevelSetBranch",
    "MaskBranch",
    "MaskTargets",
    "TSDFBranch",
    "mask_probabilities",
    "masks_from_maps",
]
