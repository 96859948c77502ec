"""Parsing COCO RLE counts and decoding masks inside their boxes, against pycocotools."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fiftyone_usam.masks import decode_crops, decode_rles, encode_masks, rle_runs


def random_masks(rng, height, width, n):
    """Masks of every kind: noise, boxes with holes, empty, full, one pixel."""
    masks = []
    for k in range(n):
        kind = k % 5
        if kind == 0:
            mask = rng.random((height, width)) < rng.random()
        elif kind == 1:
            mask = np.zeros((height, width), bool)
            y, x = rng.integers(0, height), rng.integers(0, width)
            mask[y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1)] = True
            mask[rng.integers(0, height), :] = False
        elif kind == 2:
            mask = np.zeros((height, width), bool)
        elif kind == 3:
            mask = np.ones((height, width), bool)
        else:
            mask = np.zeros((height, width), bool)
            mask[rng.integers(0, height), rng.integers(0, width)] = True
        masks.append(mask)
    return masks


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (23, 1), (37, 53), (480, 640)])
def test_runs_rebuild_the_masks_pycocotools_encoded(size):
    rng = np.random.default_rng(sum(size))
    masks = random_masks(rng, *size, n=12)
    counts = encode_masks(np.stack(masks, axis=-1))
    runs = rle_runs(counts)
    assert len(runs) == len(masks)
    for mask, mask_runs, encoded in zip(masks, runs, counts, strict=True):
        assert mask_runs.sum() == mask.size and (mask_runs >= 0).all()
        column_major = np.repeat(np.arange(len(mask_runs)) % 2 == 1, mask_runs)
        np.testing.assert_array_equal(column_major.reshape(size[1], size[0]).T, mask)
        # the same runs, compressed again by pycocotools, are the same string
        again = mask_utils.frPyObjects({"size": list(size), "counts": mask_runs.tolist()}, *size)
        assert again["counts"] == encoded


def test_long_runs_use_several_characters_and_negative_deltas():
    # a 300x300 image: runs up to 90000 need 4 characters; shrinking runs give negative deltas
    mask = np.zeros((300, 300), bool)
    mask[:, 150:] = True
    for column in range(150):
        mask[: 299 - 2 * column if 299 - 2 * column > 0 else 0, column] = True
    (counts,) = encode_masks(mask[..., None])
    (runs,) = rle_runs([counts])
    column_major = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    np.testing.assert_array_equal(column_major.reshape(300, 300).T, mask)


def test_no_counts_no_runs():
    assert rle_runs([]) == []


@pytest.mark.parametrize("size", [(1, 1), (9, 1), (1, 9), (31, 47), (480, 640)])
def test_crops_equal_full_decodes_cut_to_the_box(size):
    rng = np.random.default_rng(size[0] * 7 + size[1])
    masks = random_masks(rng, *size, n=15)
    counts = encode_masks(np.stack(masks, axis=-1))
    rles = [{"size": list(size), "counts": c} for c in counts]
    boxes = np.asarray(mask_utils.toBbox(rles)).astype(np.int64)
    full = decode_rles(rles, size)
    crops = decode_crops(counts, size, boxes)
    for mask, crop, (x, y, w, h) in zip(full, crops, boxes, strict=True):
        assert crop.dtype == bool and crop.flags.c_contiguous and crop.shape == (h, w)
        np.testing.assert_array_equal(crop, mask[y : y + h, x : x + w])


def test_a_crop_may_be_any_window_not_only_the_tight_box():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:25] = True
    (counts,) = encode_masks(mask[..., None])
    (crop,) = decode_crops([counts], (20, 30), np.array([[0, 0, 30, 20]]))
    np.testing.assert_array_equal(crop, mask)
    (corner,) = decode_crops([counts], (20, 30), np.array([[20, 10, 10, 10]]))
    np.testing.assert_array_equal(corner, mask[10:20, 20:30])


def test_crops_decoded_in_chunks_equal_one_decode(monkeypatch):
    import fiftyone_usam.masks as masks_module

    rng = np.random.default_rng(5)
    size = (40, 60)
    counts = encode_masks(np.stack(random_masks(rng, *size, n=12), axis=-1))
    boxes = np.asarray(
        mask_utils.toBbox([{"size": list(size), "counts": c} for c in counts])
    ).astype(np.int64)
    whole = decode_crops(counts, size, boxes)
    monkeypatch.setattr(masks_module, "_DECODE_PIXELS", 3 * 40)  # a few columns per chunk
    chunked = decode_crops(counts, size, boxes)
    assert len(chunked) == len(whole) == 12
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
