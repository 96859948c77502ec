"""COCO run-length encoding of binary masks (pycocotools), the form masks travel in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fiftyone_usam.errors import StoreError

Rle = dict[str, object]

# pycocotools 2.0.11 with numpy 2 overflows in area() past 255 masks: it is asked in chunks.
_AREA_CHUNK = 255
# column pixels `decode_crops` expands at once (16 MB of bool)
_DECODE_PIXELS = 1 << 24


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


def rle_runs(counts: Sequence[bytes]) -> list[np.ndarray]:
    """The run lengths of many compressed COCO RLE ``counts``, parsed together (vectorised
    pycocotools' rleFrString, a few numpy calls for all of them).

    Runs are in column-major (Fortran) pixel order and alternate 0, 1, 0, ... starting with a
    (possibly empty) run of zeros. Each ``counts`` must be well formed (`check_rle` checks it).

    Returns:
        One `(r_i,)` int64 array per mask.
    """
    if not counts:
        return []
    runs, starts, _ = _parse_runs(counts)
    return np.split(runs, starts[1:])


def _parse_runs(counts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All masks' runs concatenated, each mask's first run's index, and each run's mask."""
    codes = np.frombuffer(b"".join(counts), np.uint8).astype(np.int64) - 48
    last = np.flatnonzero((codes & 0x20) == 0)  # the last character of each value
    first = np.concatenate([[0], last[:-1] + 1])
    length = last - first + 1
    position = np.arange(codes.size) - np.repeat(first, length)
    values = np.add.reduceat((codes & 0x1F) << (5 * position), first) if codes.size else last
    negative = (codes[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * length[negative])
    # which mask each value belongs to, and its index in that mask's runs
    char_ends = np.cumsum([len(c) for c in counts])
    owner = np.searchsorted(char_ends, last, side="right")
    starts = np.searchsorted(owner, np.arange(len(counts)))
    index = np.arange(values.size) - starts[owner]
    # from the fourth run on, each is stored as a delta to the one before last: a cumulative
    # sum along each mask's chain of odd runs (1, 3, 5, ...) and of even runs (2, 4, ...)
    runs = values.copy()
    for chain in (index % 2 == 1, (index % 2 == 0) & (index > 0)):
        members = values[chain]
        sums = np.cumsum(members)
        begins = np.searchsorted(owner[chain], np.arange(len(counts)))  # each mask's first
        ahead = np.r_[0, sums][begins]  # what earlier masks' chains added
        runs[chain] = sums - np.repeat(ahead, np.diff(np.r_[begins, members.size]))
    return runs, starts, owner


def decode_crops(
    counts: Sequence[bytes], image_size: tuple[int, int], boxes: np.ndarray
) -> tuple[np.ndarray, ...]:
    """RLE masks of one image size decoded only inside their boxes (x, y, width, height).

    Only the image columns a box spans are expanded, so a small mask of a large image costs a
    fraction of a full decode; each result equals ``decode_rles([rle], image_size)[0]`` cut to
    its box. The runs of many masks (of one image or of many of one size) are cut to their
    columns together, one ``np.repeat`` per chunk of at most ``_DECODE_PIXELS`` column pixels.

    Args:
        boxes: `(n, 4)` ints, one per mask (e.g. pycocotools' ``toBbox``).

    Returns:
        ``n`` `(height, width)` bool arrays, C-contiguous.
    """
    rows = int(image_size[0])
    box = np.asarray(boxes, np.int64).reshape(-1, 4)
    out: list[np.ndarray] = []
    start, pixels = 0, 0
    for k, width in enumerate(box[:, 2].tolist()):
        if k > start and pixels + width * rows > _DECODE_PIXELS:
            out.extend(_decode_chunk(counts[start:k], rows, box[start:k]))
            start, pixels = k, 0
        pixels += width * rows
    if len(counts) > start:
        out.extend(_decode_chunk(counts[start:], rows, box[start:]))
    return tuple(out)


def _decode_chunk(counts: Sequence[bytes], rows: int, box: np.ndarray) -> list[np.ndarray]:
    """`decode_crops` of a few masks at once (images of ``rows`` rows)."""
    runs, starts, owner = _parse_runs(counts)
    # each run's end within its own mask, and the column range [low, high) each mask keeps
    ends = np.cumsum(runs)
    ends -= np.r_[0, ends][starts][owner]
    low, high = box[:, 0] * rows, (box[:, 0] + box[:, 2]) * rows
    pieces = np.minimum(ends, high[owner]) - np.maximum(ends - runs, low[owner])
    values = (np.arange(runs.size) - starts[owner]) % 2 == 1
    keep = pieces > 0
    columns = np.repeat(values[keep], pieces[keep])  # every mask's columns, one after another
    sizes = box[:, 2] * rows
    out = []
    for k, offset in enumerate(np.r_[0, np.cumsum(sizes)][:-1].tolist()):
        _, y, width, height = box[k].tolist()
        window = columns[offset : offset + width * rows].reshape(width, rows)
        out.append(np.ascontiguousarray(window[:, y : y + height].T))
    return out
