"""COCO run-length encoding of binary masks (pycocotools), the form masks travel in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rle = dict[str, object]

# pycocotools 2.0.11 with numpy 2 overflows in area() past 255 masks: it is asked in chunks.
_AREA_CHUNK = 255


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """COCO-RLE-encodes masks.

    Args:
        masks: `(H, W, n)` uint8 or bool; Fortran-contiguous avoids a copy.

    Returns:
        ``n`` compressed RLE ``counts`` strings.
    """
    from pycocotools import mask as mask_utils

    return [r["counts"] for r in mask_utils.encode(np.asfortranarray(masks, dtype=np.uint8))]


def rle_areas(rles: Sequence[Rle]) -> np.ndarray:
    """`(n,)` int64 pixel counts of RLE masks."""
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros(0, dtype=np.int64)
    chunks = [
        mask_utils.area(list(rles[i : i + _AREA_CHUNK])) for i in range(0, len(rles), _AREA_CHUNK)
    ]
    return np.concatenate(chunks).astype(np.int64)


def decode_rles(rles: Sequence[Rle], image_size: tuple[int, int]) -> np.ndarray:
    """`(n, H, W)` bool masks from RLEs of one image size."""
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros((0, *image_size), dtype=bool)
    return mask_utils.decode(list(rles)).transpose(2, 0, 1).astype(bool)
