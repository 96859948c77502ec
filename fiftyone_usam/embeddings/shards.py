"""One store shard on disk: a safetensors file holding a few images' mask proposals.

Arrays: ``embeddings`` `(n, d, 1024)`, ``iou_predictions`` and ``stability_scores`` `(n, d, 3)`,
``points`` `(n, d, 2)`, ``image_sizes`` `(n, 2)`, and the COCO RLE masks as one byte blob
(``rle_bytes``) with ``rle_offsets``; a shard of proposals without masks (``masks="none"``) has
neither, and NaN stability scores. Header: the sample ids, the format version, a SHA-256 of
every array, and each image file's ``(size, mtime_ns)``.

Proposals of a label field's prompts (a number of prompts that differs per image, ``m`` masks
each) are stored ragged: the rows' arrays concatenated (``embeddings`` `(sum d, 1024)`, ...),
``prompt_offsets`` `(n + 1,)` where row ``r`` is ``[offsets[r], offsets[r + 1])``, and in the
header each row's prompt ids and each sample's prompt fingerprint (`PromptSet.fingerprint`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.errors import StoreError
from fiftyone_usam.files import atomic_path
from fiftyone_usam.masks import check_rle

FORMAT_VERSION = 1
ARRAYS = ("embeddings", "iou_predictions", "stability_scores", "points")

FileIdentity = tuple[int, int]  # (size in bytes, modification time in ns)


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's header says: its sample ids (row order), their image files and, for a
    label field's prompts, each sample's prompt fingerprint."""

    sample_ids: tuple[str, ...]
    files: dict[str, FileIdentity]
    prompts: dict[str, str]


def write_shard(
    target: Path,
    items: Sequence[MaskProposals],
    sample_ids: Sequence[str],
    embedding_dtype: str,
    files: Mapping[str, FileIdentity],
    prompts: Mapping[str, str] | None = None,
) -> None:
    """Writes a shard atomically (fsynced): arrays, ids, checksums and file identities.

    ``items`` all hold masks, or none does (then no mask arrays are written).

    Args:
        prompts: for proposals of a label field's prompts (which are stored ragged), sample id
            -> the fingerprint of its prompts; None for the grid.
    """
    from safetensors.numpy import save_file

    arrays = _pack(items, embedding_dtype, ragged=prompts is not None)
    metadata = {
        "sample_ids": json.dumps(list(sample_ids)),
        "format_version": str(FORMAT_VERSION),
        "sha256": json.dumps({name: _digest(a) for name, a in arrays.items()}),
        "files": json.dumps(dict(files)),
    }
    if prompts is not None:
        metadata["prompts"] = json.dumps({i: prompts[i] for i in sample_ids})
        metadata["prompt_ids"] = json.dumps([list(p.prompt_ids) for p in items])
    with atomic_path(target, fsync=True) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)


def read_header(shard: Path) -> ShardHeader:
    """The shard's sample ids and file identities (the arrays are not read).

    Raises:
        StoreError: not one of our shards, or its header is damaged.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="np") as f:
            header = f.metadata() or {}
        ids = tuple(json.loads(header["sample_ids"]))
        files = {
            k: (int(v[0]), int(v[1])) for k, v in json.loads(header.get("files", "{}")).items()
        }
        prompts = {str(k): str(v) for k, v in json.loads(header.get("prompts", "{}")).items()}
    except Exception as e:  # a shard that is not ours, or damaged on disk
        raise StoreError(
            f"cannot read shard {shard}: {e}. Delete it; the samples it held will be "
            "embedded again by the next `usam embed`."
        ) from None
    return ShardHeader(ids, files, prompts)


def verify_shard(shard: Path, store: Path) -> bool:
    """Checks every array of a shard against its recorded SHA-256.

    Returns:
        True when verified; False for a shard written before checksums were recorded.

    Raises:
        StoreError: a damaged shard, named with what to do.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="np") as f:
            header = f.metadata() or {}
            if "sha256" not in header:
                return False
            expected = json.loads(header["sha256"])
            names = f.keys()  # a safetensors file, not a dict: it is not iterable
            bad = [n for n in names if _digest(f.get_tensor(n)) != expected.get(n)]
    except Exception as e:  # damaged beyond its header: unreadable arrays
        bad = [f"({type(e).__name__}: {e})"]
    if bad:
        raise StoreError(
            f"shard {shard} of the EmbeddingStore at {store} is damaged (array(s) "
            f"{', '.join(bad)} do not match their checksum). Delete that file, then run "
            f"`usam embed --store {store}` on the dataset to embed its samples again"
        )
    return True


def read_rows(
    shard: Path, rows: list[int], masks_per_point: int, check_masks: bool
) -> list[MaskProposals]:
    """Reads only the given rows, in their order (safetensors slices are memory-mapped); each
    run of consecutive rows is read with one slice per array.

    Args:
        masks_per_point: RLE masks of one prompt; 0 for a store without masks
            (``masks="none"``), whose rows are read as proposals without masks.
        check_masks: parse every RLE before it is used (for shards without checksums), so no
            run length can make pycocotools loop.
    """
    from safetensors import safe_open

    out = []
    with safe_open(str(shard), framework="np") as f:
        slices = {name: f.get_slice(name) for name in (*ARRAYS, "image_sizes")}
        if "prompt_offsets" in f.keys():  # noqa: SIM118 (a safetensors file, not a dict)
            return _read_ragged(f, slices, rows, masks_per_point, check_masks, str(shard))
        masks_per_image = slices["embeddings"].get_shape()[1] * masks_per_point
        for first, stop in _consecutive(rows):
            arrays = {name: slices[name][first:stop] for name in ARRAYS}
            sizes = slices["image_sizes"][first:stop].tolist()
            counts = _span_rles(f, first, stop, masks_per_image)
            for k, ((height, width), rles) in enumerate(zip(sizes, counts, strict=True)):
                if check_masks:
                    for rle in rles:
                        check_rle(rle, height, width, where=str(shard))
                row = {name: array[k] for name, array in arrays.items()}
                out.append(MaskProposals(**row, image_size=(height, width), mask_rles=rles))
    return out


def _read_ragged(
    f: Any,
    slices: dict[str, Any],
    rows: list[int],
    masks_per_point: int,
    check_masks: bool,
    where: str,
) -> list[MaskProposals]:
    """`read_rows` of a ragged shard (a label field's prompts), row by row."""
    offsets = f.get_tensor("prompt_offsets")
    header = f.metadata() or {}
    prompt_ids = json.loads(header.get("prompt_ids", "[]"))
    sample_ids = json.loads(header.get("sample_ids", "[]"))
    fingerprints = json.loads(header.get("prompts", "{}"))
    out = []
    for row in rows:
        first, stop = int(offsets[row]), int(offsets[row + 1])
        height, width = slices["image_sizes"][row : row + 1].tolist()[0]
        m = masks_per_point
        rles = _masks(f, first * m, stop * m) if m else ()
        for rle in rles if check_masks else ():
            check_rle(rle, height, width, where=where)
        arrays = {name: slices[name][first:stop] for name in ARRAYS}
        out.append(
            MaskProposals(
                **arrays,
                image_size=(height, width),
                mask_rles=rles,
                prompt_ids=tuple(prompt_ids[row]),
                prompt_fingerprint=fingerprints.get(sample_ids[row], ""),
            )
        )
    return out


def _consecutive(rows: list[int]) -> list[tuple[int, int]]:
    """``rows`` as runs ``[first, stop)`` of consecutive rows, in their order."""
    spans: list[list[int]] = []
    for row in rows:
        if spans and spans[-1][1] == row:
            spans[-1][1] += 1
        else:
            spans.append([row, row + 1])
    return [(first, stop) for first, stop in spans]


def _span_rles(f: Any, first: int, stop: int, masks_per_image: int) -> list[tuple[bytes, ...]]:
    """The RLE ``counts`` of rows ``[first, stop)`` of an open shard, one tuple per row."""
    if not masks_per_image:
        return [()] * (stop - first)
    counts = _masks(f, first * masks_per_image, stop * masks_per_image)
    return [tuple(counts[k : k + masks_per_image]) for k in range(0, len(counts), masks_per_image)]


def _masks(f: Any, first: int, stop: int) -> tuple[bytes, ...]:
    """The RLE ``counts`` of masks ``[first, stop)`` of an open shard (one slice of the blob)."""
    offsets = f.get_slice("rle_offsets")[first : stop + 1]
    blob = bytes(f.get_slice("rle_bytes")[int(offsets[0]) : int(offsets[-1])])
    bounds = (offsets - offsets[0]).tolist()
    return tuple(blob[a:b] for a, b in itertools.pairwise(bounds))


def read_embeddings(shard: Path) -> np.ndarray:
    """`(n, d, 1024)` embeddings of every row of a shard."""
    from safetensors import safe_open

    with safe_open(str(shard), framework="np") as f:
        return f.get_tensor("embeddings")


def file_identity(path: str | Path) -> FileIdentity | None:
    """``(size in bytes, modification time in ns)`` of a file, or None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _pack(
    items: Sequence[MaskProposals], embedding_dtype: str, ragged: bool = False
) -> dict[str, np.ndarray]:
    join = np.concatenate if ragged else np.stack
    arrays = {
        "embeddings": join([p.embeddings for p in items]).astype(embedding_dtype),
        "iou_predictions": join([p.iou_predictions for p in items]).astype(np.float32),
        "stability_scores": join([p.stability_scores for p in items]).astype(np.float32),
        "points": join([p.points for p in items]).astype(np.float32),
        "image_sizes": np.array([p.image_size for p in items], dtype=np.int64),
    }
    if ragged:
        arrays["prompt_offsets"] = np.cumsum([0, *(p.num_points for p in items)]).astype(np.int64)
    with_masks = {p.has_masks for p in items}
    assert len(with_masks) == 1, "a shard holds proposals all with masks or all without"
    if with_masks == {True}:
        rles = [r for p in items for r in p.mask_rles]
        offsets = np.zeros(len(rles) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rles])
        arrays["rle_offsets"] = offsets
        arrays["rle_bytes"] = np.frombuffer(b"".join(rles), dtype=np.uint8).copy()
    return arrays


def _digest(array: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order (hashed from its buffer, not a copy of it)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()
