"""`EmbeddingStore`: SAM mask proposals on disk, keyed by FiftyOne sample id.

Layout::

    <store>/spec.json                 what produced the arrays (see `StoreSpec`)
    <store>/shards/<n>-<uid>.safetensors

Each shard holds the proposals of a few images as safetensors arrays (no pickle, memory-mapped
on read) with, in its header, the sample ids, a SHA-256 of each array (checked before anything of
the shard is decoded, so damaged bytes are reported and never decoded) and each image file's
size and modification time (so a sample whose file changed is embedded again, not labelled
from the old image's proposals). A shard is written to a temporary file and renamed
into place, so a killed run leaves only whole shards; the next run sees which samples are done
and does the rest. Opening a store with a spec other than the one it was built with is an error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiftyone_usam.config import config_from_dict, config_to_dict
from fiftyone_usam.embeddings.proposals import MASKS_PER_POINT, MaskProposals
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.files import atomic_path, remove_stale_temp_files, write_text_atomic
from fiftyone_usam.masks import check_rle

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ARRAYS = ("embeddings", "iou_predictions", "stability_scores", "points")


@dataclass(frozen=True)
class StoreSpec:
    """What an EmbeddingStore's arrays were computed with; two stores are compatible iff equal.

    Attributes:
        sam_variant: SAM variant name.
        checkpoint_sha256: SHA-256 of the SAM weights.
        points_per_side: prompt grid size; ``d = points_per_side**2``.
        encoder_input_size: SAM image encoder input size.
        embedding_dim: length of a mask embedding (4 mask tokens x 256).
        embedding_dtype: dtype of the stored embeddings.
        masks_per_point: SAM multimask outputs per point.
        mask_format: how masks are stored.
        stability_offset: logit offset of the stability scores.
        format_version: on-disk layout version.
    """

    sam_variant: str
    checkpoint_sha256: str
    points_per_side: int
    encoder_input_size: int
    embedding_dim: int = 1024
    embedding_dtype: str = "float16"
    masks_per_point: int = MASKS_PER_POINT
    mask_format: str = "coco_rle"
    stability_offset: float = 1.0
    format_version: int = FORMAT_VERSION

    @property
    def num_points(self) -> int:
        """``d``, prompts (and embeddings) per image."""
        return self.points_per_side**2

    def differences(
        self,
        other: StoreSpec,
        fields: Iterable[str] | None = None,
        labels: tuple[str, str] = ("this", "other"),
    ) -> list[str]:
        """``"<field>: <label 0> <self's value>, <label 1> <other's value>"`` per differing field.

        The one place that says how two specs differ, for every message that refuses a mismatch.

        Args:
            other: the spec to compare with.
            fields: the fields compared; default: all of them.
            labels: what to call the two sides, e.g. ``("store has", "asked for")``.
        """
        mine, theirs = config_to_dict(self), config_to_dict(other)
        names = list(mine) if fields is None else list(fields)
        return [
            f"{n}: {labels[0]} {mine[n]!r}, {labels[1]} {theirs[n]!r}"
            for n in names
            if mine[n] != theirs[n]
        ]

    def describe(self) -> str:
        """One line for messages."""
        return (
            f"SAM {self.sam_variant} (weights {self.checkpoint_sha256[:12]}), "
            f"{self.points_per_side}x{self.points_per_side} points, "
            f"input {self.encoder_input_size}, "
            f"{self.embedding_dim}-d {self.embedding_dtype}, format v{self.format_version}"
        )


class EmbeddingStore:
    """A directory of mask proposals keyed by sample id. Use `open` or `create` to get one."""

    def __init__(self, path: Path, spec: StoreSpec) -> None:
        self.path = path
        self.spec = spec
        self._index: dict[str, tuple[Path, int]] | None = None
        self._files: dict[str, tuple[int, int]] = {}  # sample id -> (size, mtime_ns) embedded
        self._verified: set[Path] = set()

    @classmethod
    def open(cls, path: str | Path, spec: StoreSpec | None = None) -> EmbeddingStore:
        """Opens an existing store, checking its spec against ``spec`` when given.

        Raises:
            StoreError: no store at ``path``, an unreadable spec, or a different spec.
        """
        path = Path(path).expanduser()
        spec_file = path / "spec.json"
        if not spec_file.is_file():
            raise StoreError(
                f"no EmbeddingStore at {path} (no spec.json): run `usam embed --store {path}` first"
            )
        try:
            found = config_from_dict(
                StoreSpec, json.loads(spec_file.read_text()), source=str(spec_file)
            )
        except (ValueError, ConfigError) as e:
            raise StoreError(f"{spec_file} is not a valid store spec: {e}") from None
        if spec is not None and found != spec:
            raise StoreError(_mismatch_message(path, found, spec))
        return cls(path, found)

    @classmethod
    def create(cls, path: str | Path, spec: StoreSpec) -> EmbeddingStore:
        """Opens the store at ``path`` if it has the same spec, or creates it if absent.

        Raises:
            StoreError: a store with another spec is there, or a non-empty non-store directory.
        """
        path = Path(path).expanduser()
        if spec_at(path) is not None:
            return cls.open(path, spec)
        (path / "shards").mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            path / "spec.json", json.dumps(config_to_dict(spec), indent=2), fsync=True
        )
        return cls(path, spec)

    # -- reading --------------------------------------------------------------------------

    def sample_ids(self) -> set[str]:
        """Ids of the samples stored."""
        return set(self._get_index())

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._get_index()

    def __len__(self) -> int:
        return len(self._get_index())

    def get(self, sample_id: str) -> MaskProposals:
        """The proposals of one sample. Raises KeyError if it is not stored."""
        shard, row = self._locate(sample_id)
        return self._read_rows(shard, [row])[0]

    def iter_proposals(self, sample_ids: Iterable[str]) -> Iterator[tuple[str, MaskProposals]]:
        """Yields ``(sample_id, proposals)`` in order, opening a shard once per run of its ids."""
        group: list[tuple[str, int]] = []
        shard: Path | None = None
        for sample_id in sample_ids:
            where, row = self._locate(sample_id)
            if group and where != shard:
                yield from self._read_group(shard, group)  # type: ignore[arg-type]
                group = []
            shard = where
            group.append((sample_id, row))
        if group:
            yield from self._read_group(shard, group)  # type: ignore[arg-type]

    def load_embeddings(self, sample_ids: Iterable[str]) -> np.ndarray:
        """Stacks the embeddings of many samples, grouped by shard for speed.

        Returns:
            `(N, d, 1024)` float16, in the order of ``sample_ids``.
        """
        from safetensors import safe_open

        ids = list(sample_ids)
        out = np.empty((len(ids), self.spec.num_points, self.spec.embedding_dim), np.float16)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, sample_id in enumerate(ids):
            shard, row = self._locate(sample_id)
            by_shard.setdefault(shard, []).append((i, row))
        for shard, pairs in by_shard.items():
            self._verify(shard)
            with safe_open(str(shard), framework="np") as f:
                embeddings = f.get_tensor("embeddings")
            for i, row in pairs:
                out[i] = embeddings[row]
        return out

    # -- writing --------------------------------------------------------------------------

    def write(
        self,
        items: Mapping[str, MaskProposals],
        *,
        files: Mapping[str, str | Path] | None = None,
        replace: bool = False,
    ) -> Path | None:
        """Writes proposals as one new shard, atomically.

        Args:
            items: sample id -> its proposals.
            files: sample id -> the image file they were computed from; its size and
                modification time are recorded, so `changed_files` can tell when it changed.
            replace: write ids already stored again (the new shard wins); otherwise they are
                skipped.

        Returns:
            The shard written, or None when there was nothing new.
        """
        from safetensors.numpy import save_file

        new = {k: v for k, v in items.items() if replace or k not in self}
        if not new:
            return None
        for sample_id, proposals in new.items():
            self._check(sample_id, proposals)
        arrays = _pack(list(new.values()), self.spec)
        shards = self.path / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        number = len(list(shards.glob("*.safetensors")))
        target = shards / f"{number:06d}-{uuid.uuid4().hex[:8]}.safetensors"
        identities = {i: _file_identity(f) for i, f in (files or {}).items() if i in new}
        metadata = {
            "sample_ids": json.dumps(list(new)),
            "format_version": str(FORMAT_VERSION),
            "sha256": json.dumps({name: _digest(a) for name, a in arrays.items()}),
            "files": json.dumps({i: v for i, v in identities.items() if v is not None}),
        }
        with atomic_path(target, fsync=True) as tmp:
            save_file(arrays, str(tmp), metadata=metadata)
        index = self._get_index()
        index.update({sample_id: (target, row) for row, sample_id in enumerate(new)})
        self._files.update({i: v for i, v in identities.items() if v is not None})
        self._verified.add(target)
        return target

    def changed_files(self, files: Mapping[str, str | Path]) -> list[str]:
        """The stored samples whose image file differs (size or modification time) from the
        one they were embedded from. Samples stored without a record of their file (by an older
        version, or from arrays) are taken as unchanged.

        Args:
            files: sample id -> its image file now.
        """
        self._get_index()
        changed = []
        for sample_id, path in files.items():
            recorded = self._files.get(sample_id)
            if sample_id in self and recorded is not None and _file_identity(path) != recorded:
                changed.append(sample_id)
        return changed

    def remove_stale_temp_files(self) -> int:
        """Deletes temporary shard files left by writers that are no longer running."""
        return remove_stale_temp_files(self.path / "shards", pattern="", owner_gone=True)

    # -- internals ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forgets the cached index so shards written by other processes are seen."""
        self._index = None

    def _get_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[str, tuple[Path, int]]:
        from safetensors import safe_open

        index: dict[str, tuple[Path, int]] = {}
        self._files = {}
        for shard in sorted((self.path / "shards").glob("*.safetensors")):
            try:
                with safe_open(str(shard), framework="np") as f:
                    header = f.metadata() or {}
                ids = json.loads(header["sample_ids"])
                files = json.loads(header.get("files", "{}"))
            except Exception as e:  # a shard that is not ours, or damaged on disk
                raise StoreError(
                    f"cannot read shard {shard}: {e}. Delete it; the samples it held will be "
                    "embedded again by the next `usam embed`."
                ) from None
            for row, sample_id in enumerate(ids):
                index[sample_id] = (shard, row)  # shards are read in write order: newest wins
                if sample_id in files:
                    self._files[sample_id] = (int(files[sample_id][0]), int(files[sample_id][1]))
                else:
                    self._files.pop(sample_id, None)
        return index

    def _locate(self, sample_id: str) -> tuple[Path, int]:
        try:
            return self._get_index()[sample_id]
        except KeyError:
            raise KeyError(
                f"sample {sample_id} is not in the EmbeddingStore at {self.path}"
            ) from None

    def _read_group(
        self, shard: Path, group: list[tuple[str, int]]
    ) -> Iterator[tuple[str, MaskProposals]]:
        rows = self._read_rows(shard, [row for _, row in group])
        yield from zip((sample_id for sample_id, _ in group), rows, strict=True)

    def _read_rows(self, shard: Path, rows: list[int]) -> list[MaskProposals]:
        """Reads only the given rows (safetensors slices are memory-mapped)."""
        from safetensors import safe_open

        legacy = not self._verify(shard)
        per_image = self.spec.num_points * self.spec.masks_per_point
        out = []
        with safe_open(str(shard), framework="np") as f:
            slices = {name: f.get_slice(name) for name in (*_ARRAYS, "image_sizes", "rle_offsets")}
            rle_bytes = f.get_slice("rle_bytes")
            for row in rows:
                offsets = slices["rle_offsets"][row * per_image : (row + 1) * per_image + 1]
                blob = bytes(rle_bytes[int(offsets[0]) : int(offsets[-1])])
                starts = offsets - offsets[0]
                rles = tuple(blob[a:b] for a, b in itertools.pairwise(starts))
                height, width = (int(v) for v in slices["image_sizes"][row : row + 1][0])
                if legacy:  # no checksum: make sure no run length can make pycocotools loop
                    for rle in rles:
                        check_rle(rle, height, width, where=str(shard))
                arrays = {name: np.array(slices[name][row : row + 1][0]) for name in _ARRAYS}
                out.append(MaskProposals(**arrays, image_size=(height, width), mask_rles=rles))
        return out

    def _verify(self, shard: Path) -> bool:
        """Checks a shard's arrays against their recorded SHA-256 (once per shard and store).

        Returns:
            True when verified; False for a shard written before checksums were recorded.

        Raises:
            StoreError: a damaged shard, named with what to do.
        """
        from safetensors import safe_open

        if shard in self._verified:
            return True
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
                f"shard {shard} of the EmbeddingStore at {self.path} is damaged (array(s) "
                f"{', '.join(bad)} do not match their checksum). Delete that file, then run "
                f"`usam embed --store {self.path}` on the dataset to embed its samples again"
            )
        self._verified.add(shard)
        return True

    def _check(self, sample_id: str, proposals: MaskProposals) -> None:
        shape = (self.spec.num_points, self.spec.embedding_dim)
        if proposals.embeddings.shape != shape:
            raise StoreError(
                f"sample {sample_id}: embeddings of shape {proposals.embeddings.shape} do not fit "
                f"this store ({shape}); it was built with {self.spec.describe()}"
            )


def _pack(items: list[MaskProposals], spec: StoreSpec) -> dict[str, np.ndarray]:
    rles = [r for p in items for r in p.mask_rles]
    offsets = np.zeros(len(rles) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rles])
    return {
        "embeddings": np.stack([p.embeddings for p in items]).astype(spec.embedding_dtype),
        "iou_predictions": np.stack([p.iou_predictions for p in items]).astype(np.float32),
        "stability_scores": np.stack([p.stability_scores for p in items]).astype(np.float32),
        "points": np.stack([p.points for p in items]).astype(np.float32),
        "image_sizes": np.array([p.image_size for p in items], dtype=np.int64),
        "rle_offsets": offsets,
        "rle_bytes": np.frombuffer(b"".join(rles), dtype=np.uint8).copy(),
    }


def _mismatch_message(path: Path, found: StoreSpec, wanted: StoreSpec) -> str:
    diffs = ", ".join(found.differences(wanted, labels=("store has", "asked for")))
    return (
        f"the EmbeddingStore at {path} was built with another spec ({diffs}). Use a different "
        "--store directory for these settings, or delete this one to rebuild it."
    )


def spec_at(path: str | Path) -> StoreSpec | None:
    """The spec of the EmbeddingStore at ``path``, or None where a new store can go (nothing
    there, or an empty directory): what `EmbeddingStore.create` finds there. Reads only
    ``spec.json`` (no shards), so the App's forms can check a store as they are filled in.

    Raises:
        StoreError: ``path`` is a file or a non-empty directory that is not a store, or its
            ``spec.json`` is not a valid spec.
    """
    folder = Path(path).expanduser()
    if (folder / "spec.json").exists():
        return EmbeddingStore.open(folder).spec
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StoreError(
            f"{folder} exists and is not an EmbeddingStore: choose an empty or new directory"
        )
    return None


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _file_identity(path: str | Path) -> tuple[int, int] | None:
    """``(size in bytes, modification time in ns)`` of a file, or None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
