"""``LevelSetTransform``: torchvision's ``GeneralizedRCNNTransform`` whose post-processing pastes
masks with the boxes' float geometry (:mod:`.paste`), level sets as level sets.

``mask_paste``:

* ``"exact"`` (the default for level-set mask branches): a result with ``tsdf`` (the level set
  the masks come from) gets ``masks = H_0.1(paste(tsdf))``; one without it (binary branches)
  gets its RoI-grid probabilities pasted by :func:`~.paste.paste_roi_maps`;
* ``"torchvision"`` (the default for the binary baseline, i.e. torchvision's Mask R-CNN
  exactly): ``paste_masks_in_image`` on the RoI-grid probabilities, boxes rounded to whole
  pixels.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from .mask_branches import mask_probabilities
from .paste import paste_roi_maps

__all__ = ["MASK_PASTE_MODES", "LevelSetTransform", "paste_masks"]

MASK_PASTE_MODES = ("exact", "torchvision")


def paste_masks(result: dict[str, Tensor], boxes: Tensor, image_shape: tuple[int, int], *,
                mode: str) -> Tensor:
    """``(K, 1, H, W)`` mask probabilities of one result (``masks: (K, 1, M, M)`` on the RoI
    grid, and ``tsdf`` if the branch has level sets) for ``boxes`` in an ``image_shape``
    image, by ``mode`` (see the module docstring)."""
    if mode == "torchvision":
        return paste_masks_in_image(result["masks"], boxes, image_shape)
    if mode != "exact":
        raise ValueError(f"mask_paste must be one of {MASK_PASTE_MODES}, got {mode!r}")
    if "tsdf" in result:
        return paste_roi_maps(result["tsdf"], boxes, image_shape, fill=-1.0,
                              then=mask_probabilities)
    return paste_roi_maps(result["masks"], boxes, image_shape, fill=0.0)


class LevelSetTransform(GeneralizedRCNNTransform):
    """torchvision's transform (same resizing and normalisation) with the mask pasting of
    ``mask_paste``; the other arguments are ``GeneralizedRCNNTransform``'s."""

    def __init__(self, *args: Any, mask_paste: str = "exact", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if mask_paste not in MASK_PASTE_MODES:
            raise ValueError(f"mask_paste must be one of {MASK_PASTE_MODES}, got {mask_paste!r}")
        self.mask_paste = mask_paste

    @classmethod
    def like(cls, t: GeneralizedRCNNTransform, *, mask_paste: str) -> LevelSetTransform:
        """A ``LevelSetTransform`` with ``t``'s settings."""
        return cls(t.min_size, t.max_size, t.image_mean, t.image_std,
                   size_divisible=t.size_divisible, fixed_size=t.fixed_size,
                   _skip_resize=t._skip_resize, mask_paste=mask_paste)

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes, strict=True):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                pred["masks"] = paste_masks(pred, pred["boxes"], o_im_s, mode=self.mask_paste)
        return result
