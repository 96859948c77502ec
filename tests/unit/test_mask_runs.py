"""Run lengths found on the device equal pycocotools' encoding of the same masks, byte for byte."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from fiftyone_usam.embeddings.mask_runs import (
    host_counts,
    mask_runs,
    runs_to_counts,
    scaled_counts,
)
from fiftyone_usam.masks import decode_rles, encode_masks

SIZES = [(1, 1), (1, 7), (7, 1), (5, 3), (37, 53), (48, 64)]


def _reference(masks: torch.Tensor) -> list[bytes]:
    """pycocotools' own encoding of `(n, H, W)` bool masks."""
    return encode_masks(masks.numpy().transpose(1, 2, 0))


def _runs_of(found, index):
    starts = np.concatenate([[0], np.cumsum(found.lengths.numpy())])
    return found.runs.numpy()[starts[index] : starts[index + 1]].tolist()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 0.98, 1.0])
def test_runs_give_pycocotools_bytes(size, density):
    rng = np.random.default_rng(hash((size, density)) % 2**32)
    logits = torch.as_tensor(rng.random((5, *size)) - (1 - density), dtype=torch.float32)
    found = mask_runs(logits, 0.0)
    assert found.runs.dtype == found.lengths.dtype == torch.int32
    assert found.counts() == _reference(logits > 0)
    assert found.runs.sum() == 5 * size[0] * size[1]
    assert found.nbytes == 4 * (found.runs.numel() + 5)


@pytest.mark.parametrize("size", SIZES)
def test_empty_and_full_masks(size):
    h, w = size
    logits = torch.stack([torch.full(size, -1.0), torch.full(size, 1.0)])
    found = mask_runs(logits, 0.0)
    assert _runs_of(found, 0) == [h * w]  # only 0s
    assert _runs_of(found, 1) == [0, h * w]  # no 0s first, then only 1s
    assert found.counts() == _reference(logits > 0)


def test_known_runs_are_column_major_starting_with_zeros():
    masks = torch.tensor(
        [
            [[0, 1, 1], [1, 1, 0]],  # columns (0,1) (1,1) (1,0): 0 | 1 1 1 1 | 0
            [[1, 0, 0], [0, 0, 0]],  # a set first pixel: an empty run of 0s first
            [[0, 0, 0], [0, 0, 1]],  # only the last pixel
        ],
        dtype=torch.float32,
    )
    found = mask_runs(masks, 0.5)
    assert [_runs_of(found, i) for i in range(3)] == [[1, 4, 1], [0, 1, 5], [5, 1]]
    assert found.lengths.tolist() == [3, 3, 2]
    np.testing.assert_array_equal(
        decode_rles([_rle(c, 2, 3) for c in found.counts()], (2, 3)), masks > 0.5
    )


def _rle(counts, h, w):
    return {"size": [h, w], "counts": counts}


def test_threshold_is_strictly_greater_and_views_work():
    base = torch.linspace(-1, 1, 2 * 9 * 11).reshape(2, 11, 9)
    logits = base.transpose(1, 2)  # not contiguous
    for threshold in (0.0, 0.3, float(base[0, 3, 4])):
        assert mask_runs(logits, threshold).counts() == _reference(logits > threshold)


def test_counts_are_what_pycocotools_compresses_from_runs():
    runs, lengths = np.array([3, 2, 1, 0, 6], np.int32), np.array([3, 2], np.int32)
    counts = runs_to_counts(runs, lengths, (2, 3))
    expected = [mask_utils.frPyObjects(_rle(r, 2, 3), 2, 3)["counts"] for r in ([3, 2, 1], [0, 6])]
    assert counts == expected
    masks = decode_rles([_rle(c, 2, 3) for c in counts], (2, 3))
    assert masks[0].T.ravel().tolist() == [0, 0, 0, 1, 1, 0] and masks[1].all()
    assert runs_to_counts(np.zeros(0, np.int32), np.zeros(0, np.int32), (2, 3)) == []


def test_host_reference_equals_device_runs():
    logits = torch.randn(4, 30, 17)
    assert host_counts(logits, 0.1) == mask_runs(logits, 0.1).cpu().counts()


def test_scaled_counts_are_nearest_neighbour_upscaling():
    rng = np.random.default_rng(0)
    small = rng.random((3, 4, 5)) > 0.5
    big = small.repeat(3, axis=1).repeat(2, axis=2)  # (3, 12, 10)
    assert scaled_counts(small, (12, 10)) == encode_masks(big.transpose(1, 2, 0))


def test_no_masks_and_bad_shapes():
    found = mask_runs(torch.zeros(0, 4, 5), 0.0)
    assert found.num_masks == 0 and found.counts() == []
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        mask_runs(torch.zeros(4, 5), 0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_equal_the_cpu_runs():
    logits = torch.randn(6, 77, 131)
    on_gpu = mask_runs(logits.cuda(), 0.0)
    assert on_gpu.runs.is_cuda
    assert on_gpu.cpu().counts() == mask_runs(logits, 0.0).counts() == _reference(logits > 0)
