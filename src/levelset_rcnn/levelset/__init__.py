"""The mathematics of LevelSet R-CNN, usable on its own (depends on torch; scikit-image only
for contour tracing).

* :func:`heaviside`, :func:`dirac` (eq. 4), :func:`sobel`, :func:`curvature`;
* :class:`ChanVese` / :func:`chan_vese_evolve`: the differentiable, unrolled deep Chan-Vese
  layer (eq. 6-9), fused for speed and memory;
* :class:`UpsampledChanVese`: the same layer on bilinearly upsampled features, never making
  the upsampled map;
* :func:`delse_evolve`: DELSE's edge-based evolution (Table 3's competitor);
* :func:`chan_vese`: classic, batched Chan-Vese on image intensities (eq. 1-5);
* :func:`masks_to_tsdf` / :func:`tsdf_to_masks`: TSDF targets on the masks' device;
* :func:`tsdf_to_polygons`: sub-pixel contours in image coordinates.
"""

from .chan_vese import ChanVese, chan_vese_evolve
from .classic import chan_vese, checkerboard_level_set, disk_level_set
from .contours import level_set_polygons, tsdf_to_polygons
from .edge_evolution import delse_evolve, normalise_velocity
from .functional import curvature, dirac, heaviside, heaviside_grad, sobel
from .tsdf import masks_to_tsdf, truncated_edt, tsdf_to_masks
from .upsampled import UpsampledChanVese, bilinear_matrix, upsampled_sq_norm

__all__ = [
    "ChanVese",
    "UpsampledChanVese",
    "bilinear_matrix",
    "chan_vese",
    "chan_vese_evolve",
    "checkerboard_level_set",
    "curvature",
    "delse_evolve",
    "dirac",
    "disk_level_set",
    "heaviside",
    "heaviside_grad",
    "level_set_polygons",
    "masks_to_tsdf",
    "normalise_velocity",
    "sobel",
    "truncated_edt",
    "tsdf_to_masks",
    "tsdf_to_polygons",
    "upsampled_sq_norm",
]
