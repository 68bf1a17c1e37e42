"""Cityscapes fine annotations (``gtFine`` instanceIds PNGs) -> COCO JSON, 8 instance classes.

Layout (the official download, ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    SRC/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    SRC/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

An instanceIds pixel holds ``label_id * 1000 + k`` for instance ``k`` of a class with
instances, and the bare ``label_id`` (< 1000) elsewhere, including *group* regions (e.g.
``cargroup``) of those classes. Masks are read from these PNGs, the same files the official
instance-level evaluation scores against (the polygons JSON beside them is not read).

The classes are the labels of ``cityscapesscripts.helpers.labels`` with ``hasInstances`` and not
``ignoreInEval``: person, rider, car, truck, bus, train, motorcycle, bicycle. Their category ids
in the JSON are the Cityscapes label ids (24..33), so predictions map straight back to the
label ids that the official evaluation expects. Each instance (``id >= 1000``) becomes one
annotation with an exact RLE mask; the group region of a class in an image becomes one
annotation with ``iscrowd = 1``. Caravan and trailer (ignored by the official evaluation) and
classes without instances are left out. ``file_name`` is ``<city>/<name>_leftImg8bit.png``,
relative to ``SRC/leftImg8bit/<split>`` (pass that folder as the dataset's ``image_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import DatasetError
from ..image_io import read_image_size
from ..masks import mask_bbox, mask_to_rle
from .common import CocoBuilder, check_output, write_coco_json

__all__ = ["CITYSCAPES_INSTANCE_LABELS", "cityscapes_categories", "cityscapes_gt_path",
           "cityscapes_image_files", "convert_cityscapes", "read_instance_ids"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
GT_SUFFIX = "_gtFine_instanceIds.png"

#: ``{label id: name}`` of the 8 classes scored by the official instance-level evaluation.
CITYSCAPES_INSTANCE_LABELS: dict[int, str] = {
    lab.id: lab.name for lab in labels if lab.hasInstances and not lab.ignoreInEval}


def cityscapes_categories() -> list[dict[str, Any]]:
    """COCO ``categories`` of the 8 instance classes: id = Cityscapes label id."""
    return [{"id": lab.id, "name": lab.name, "supercategory": lab.category}
            for lab in labels if lab.id in CITYSCAPES_INSTANCE_LABELS]


def cityscapes_image_files(image_dir: str | Path) -> list[Path]:
    """Sorted ``<city>/*_leftImg8bit.png`` under ``image_dir`` (``leftImg8bit/<split>``)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"Cityscapes image folder not found: {image_dir}")
    files = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not files:
        raise DatasetError(f"{image_dir}: no <city>/*{IMAGE_SUFFIX} files (not the Cityscapes "
                           "leftImg8bit/<split> layout)")
    return files


def cityscapes_gt_path(gt_dir: str | Path, file_name: str | Path) -> Path:
    """The instanceIds PNG under ``gt_dir`` (``gtFine/<split>``) of the image ``file_name``
    (``<city>/<name>_leftImg8bit.png``; only the city folder and base name are used)."""
    file_name = Path(file_name)
    name = file_name.name
    if not name.endswith(IMAGE_SUFFIX):
        raise DatasetError(f"{file_name}: not a Cityscapes image name (*{IMAGE_SUFFIX})")
    base = name[: -len(IMAGE_SUFFIX)]
    return Path(gt_dir) / file_name.parent.name / f"{base}{GT_SUFFIX}"


def read_instance_ids(path: str | Path) -> np.ndarray:
    """An instanceIds PNG (16-bit, read by Pillow as ``I;16`` or ``I``) as ``(H, W) int64``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing gtFine file {path}")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode instanceIds PNG {path}: {exc}") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"{path}: expected a one-channel integer instanceIds image, got "
                           f"shape {arr.shape} of {arr.dtype}")
    return arr.astype(np.int64)


def _check_label_ids(values: np.ndarray, path: Path) -> None:
    """``values``: the distinct pixel values of an instanceIds image."""
    label_ids = np.where(values < 1000, values, values // 1000)
    bad = ~np.isin(label_ids, list(id2label))
    if bad.any():
        raise DatasetError(f"{path}: unknown Cityscapes label id(s) "
                           f"{sorted(set(label_ids[bad].tolist()))} (pixel values "
                           f"{values[bad].tolist()[:10]}); known ids are those of "
                           "cityscapesscripts' labels.py")


def convert_cityscapes(src: str | Path, out: str | Path, *, split: str = "val",
                       overwrite: bool = False, progress: bool = True, verify: bool = True
                       ) -> Path:
    """Convert one split of a Cityscapes tree to a COCO instances JSON (8 classes).

    Args:
        src: the Cityscapes root holding ``leftImg8bit/`` and ``gtFine/``.
        out: the JSON file to write.
        split: ``"train"`` (2975 images), ``"val"`` (500) or ``"test"`` (1525, whose public
            annotations are empty).
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar.
        verify: decode every image (a truncated one raises now); ``False`` reads headers only
            (the instanceIds PNGs are always decoded).

    Raises:
        FileExistsError: ``out`` exists and not ``overwrite``.
        DatasetError: a missing folder, a missing or undecodable ``*_gtFine_instanceIds.png``
            for an image, an instanceIds image whose size differs from its image, or a pixel
            value of an unknown label id (the message names the file).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_output(out, overwrite)
    src = Path(src)
    image_dir, gt_dir = src / "leftImg8bit" / split, src / "gtFine" / split
    images = cityscapes_image_files(image_dir)
    if not gt_dir.is_dir():
        raise DatasetError(f"Cityscapes annotation folder not found: {gt_dir} (unpack "
                           "gtFine_trainvaltest.zip next to leftImg8bit/)")
    builder = CocoBuilder(cityscapes_categories(),
                          description=f"Cityscapes gtFine {split}, 8 instance classes")
    num_crowd = 0
    for path in tqdm(images, desc=f"cityscapes {split}", disable=not progress):
        rel = path.relative_to(image_dir).as_posix()
        gt_path = cityscapes_gt_path(gt_dir, rel)
        if not gt_path.is_file():
            raise DatasetError(f"missing gtFine file {gt_path} (annotation of image {path})")
        h, w = read_image_size(path, record=f"Cityscapes {split} image", verify=verify)
        ids = read_instance_ids(gt_path)
        if ids.shape != (h, w):
            raise DatasetError(f"{gt_path} is {ids.shape[1]}x{ids.shape[0]} but its image "
                               f"{path} is {w}x{h}")
        values = np.unique(ids)
        _check_label_ids(values, gt_path)
        image_id = builder.add_image(rel, h, w)
        ids = np.asfortranarray(ids)  # masks inherit the column order RLE encoding wants
        for value in values.tolist():
            label_id = value if value < 1000 else value // 1000
            if label_id not in CITYSCAPES_INSTANCE_LABELS:
                continue
            mask = ids == value
            builder.add_annotation(image_id, label_id, mask_to_rle(mask), area=int(mask.sum()),
                                   bbox=mask_bbox(mask))
            if value < 1000:  # a group region (e.g. cargroup): a crowd annotation
                builder.annotations[-1]["iscrowd"] = 1
                num_crowd += 1
    logger.info("%s: %d images, %d instances, %d crowd regions", image_dir, len(builder.images),
                len(builder.annotations) - num_crowd, num_crowd)
    builder.verified = verify
    return write_coco_json(builder.to_dict(), out, overwrite=overwrite)
