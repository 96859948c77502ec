"""COCO run-length encoding of binary masks (pycocotools), the form masks travel in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fiftyone_usam.errors import StoreError

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


def check_rle(counts: bytes, height: int, width: int, where: str = "") -> None:
    """Refuses compressed COCO RLE ``counts`` that are not a mask of ``height x width``.

    pycocotools trusts its input: damaged counts (a negative run, runs that do not add up to
    the mask size, bytes outside the alphabet) can make it read out of bounds or loop forever.
    This parses the string as pycocotools does (6 bits a character, delta-coded from the third
    run on) and checks every run before pycocotools sees it.

    Raises:
        StoreError: naming ``where`` the counts came from.
    """
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise StoreError(f"truncated mask run-length data in {where or 'a mask'}")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise StoreError(f"invalid byte in mask run-length data in {where or 'a mask'}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise StoreError(f"negative mask run length in {where or 'a mask'}")
        runs.append(x)
    if sum(runs) != height * width:
        raise StoreError(
            f"mask run lengths add up to {sum(runs)} pixels, not {height}x{width}, in "
            f"{where or 'a mask'}"
        )
