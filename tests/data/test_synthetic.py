"""The synthetic dataset: deterministic, all four families, the fine structure it promises."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from levelset_rcnn.data import CocoInstanceDataset, make_synthetic_coco, synthetic_image_dir

N = 24


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ann = make_synthetic_coco(root, num_images=N, seed=3, split_name="val")
    return ann, json.loads(ann.read_text())


def test_layout_and_determinism(synth, tmp_path):
    ann, data = synth
    assert ann.name == "val.json" and synthetic_image_dir(ann) == ann.parent / "val"
    assert len(data["images"]) == N
    again = make_synthetic_coco(tmp_path, num_images=N, seed=3, split_name="val")
    assert json.loads(again.read_text()) == data
    for i in (0, N - 1):
        name = f"{i:06d}.png"
        a = np.asarray(Image.open(synthetic_image_dir(ann) / name))
        b = np.asarray(Image.open(synthetic_image_dir(again) / name))
        assert np.array_equal(a, b)
    other = make_synthetic_coco(tmp_path / "o", num_images=2, seed=4)
    first = np.asarray(Image.open(synthetic_image_dir(other) / "000000.png"))
    assert not np.array_equal(first, np.asarray(Image.open(synthetic_image_dir(ann) /
                                                           "000000.png")))


def test_existing_output_with_other_parameters_needs_overwrite(synth):
    ann, _ = synth
    with pytest.raises(FileExistsError):
        make_synthetic_coco(ann.parent, num_images=N, seed=5, split_name="val")


def _masks(ann):
    ds = CocoInstanceDataset(synthetic_image_dir(ann), ann)
    out = []
    for i in range(len(ds)):
        image, target = ds[i]
        for m, lab, box in zip(target["masks"], target["labels"], target["boxes"], strict=True):
            out.append((image, m.numpy().astype(bool), ds.class_names[int(lab)], box))
    return out


def test_families_sizes_and_fine_structure(synth):
    ann, data = synth
    insts = _masks(ann)
    names = {name for _, _, name, _ in insts}
    assert names == {"ring", "star", "fork", "dumbbell"}
    holes = components = thin = 0
    kept = []
    for _, m, _, box in insts:
        ys, xs = np.nonzero(m)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 15 <= max(np.ptp(xs), np.ptp(ys)) + 1 <= 130
        holes += int((ndimage.binary_fill_holes(m) & ~m).sum() > 0)
        components += int(ndimage.label(m)[1] > 1)
        thin += int((m & ~ndimage.binary_opening(m, iterations=2)).sum() > 0.05 * m.sum())
        # What a 28x28 mask keeps: downsample the box crop and paste it back.
        crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
        small = torch.nn.functional.interpolate(torch.from_numpy(crop)[None, None], (28, 28),
                                                mode="area")
        back = torch.nn.functional.interpolate(small, crop.shape, mode="bilinear")[0, 0] > 0.5
        back = back.numpy()
        kept.append((back & (crop > 0)).sum() / (back | (crop > 0)).sum())
    n = len(insts)
    assert holes >= n // 6 and components >= 2 and thin >= n // 3
    # Even a perfect 28x28 mask loses detail: IoU below 0.93 for a good share of instances.
    assert np.mean(np.array(kept) < 0.93) > 0.2


def test_objects_are_textured_and_background_smooth(synth):
    ann, _ = synth
    inside, outside = [], []
    ds = CocoInstanceDataset(synthetic_image_dir(ann), ann)
    for i in range(6):
        image, target = ds[i]
        gray = image.mean(0).numpy()
        lap = np.abs(ndimage.laplace(gray))
        fg = target["masks"].any(0).numpy()
        core = ndimage.binary_erosion(fg, iterations=2)
        bg = ~ndimage.binary_dilation(fg, iterations=3)
        inside.append(np.median(lap[core]))
        outside.append(np.median(lap[bg]))
    assert np.mean(inside) > 2 * np.mean(outside)
