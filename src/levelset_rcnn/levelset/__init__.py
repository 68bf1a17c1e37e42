"""The mathematics of LevelSet R-CNN, usable on its own (depends on torch; scikit-image only
for contour tracing).

* :func:`heaviside`, :func:`dirac` (eq. 4), :func:`sobel`, :func:`curvature`;
* :class:`ChanVese` / :func:`chan_vese_evolve`: the differentiable, unrolled deep Chan-Vese
  layer (eq. 6-9), fused for speed and memory;
* :func:`chan_vese`: classic, batched Chan-Vese on image intensities (eq. 1-5);
* :func:`masks_to_tsdf` / :func:`tsdf_to_masks`: TSDF targets on the masks' device;
* :func:`tsdf_to_polygons`: sub-pixel contours in image coordinates.
"""

from .chan_vese import ChanVese, chan_vese_evolve
from .classic import chan_vese, checkerboard_level_set, disk_level_set
from .contours import level_set_polygons, tsdf_to_polygons
from .functional import curvature, dirac, heaviside, heaviside_grad, sobel
from .tsdf import masks_to_tsdf, truncated_edt, tsdf_to_masks

__all__ = [
    "ChanVese",
    "chan_vese",
    "chan_vese_evolve",
    "checkerboard_level_set",
    "curvature",
    "dirac",
    "disk_level_set",
    "heaviside",
    "heaviside_grad",
    "level_set_polygons",
    "masks_to_tsdf",
    "sobel",
    "truncated_edt",
    "tsdf_to_masks",
    "tsdf_to_polygons",
]
