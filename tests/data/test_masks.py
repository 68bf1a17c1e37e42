"""The one RLE encoder: every input kind encodes to what pycocotools gives for the binary
mask, and decodes back to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from levelset_rcnn.data.masks import encode_masks, mask_to_rle


def _reference(binary: np.ndarray) -> list[dict]:
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


@pytest.fixture
def probs() -> np.ndarray:
    return np.random.default_rng(0).random((3, 7, 5)).astype(np.float32)


@pytest.mark.parametrize("kind", ["float", "float4d", "tensor", "bool", "bool_fortran", "int"])
def test_every_input_kind_matches_pycocotools(probs, kind):
    binary = probs > 0.4
    masks = {"float": probs, "float4d": probs[:, None], "tensor": torch.from_numpy(probs),
             "bool": binary, "bool_fortran": np.asfortranarray(binary),
             "int": binary.astype(np.int64) * 7}[kind]
    rles = encode_masks(masks, threshold=0.4)
    assert rles == _reference(binary)
    assert all(isinstance(r["counts"], str) for r in rles)
    for rle, want in zip(rles, binary, strict=True):
        got = mask_utils.decode({**rle, "counts": rle["counts"].encode("ascii")})
        np.testing.assert_array_equal(got, want)


def test_one_mask_and_none(probs):
    mask = probs[1] > 0.5
    assert mask_to_rle(mask) == _reference(mask[None])[0]
    assert mask_to_rle(np.asfortranarray(mask)) == mask_to_rle(mask)
    assert encode_masks(np.zeros((0, 7, 5), np.float32)) == []
