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
A store embedded with ``masks="none"`` (embeddings only, all that training reads) has no masks.
A store of a label field's prompts (boxes, points) also keeps each sample's prompt ids and a
fingerprint of its prompts, so a sample whose boxes changed is embedded again (`changed_prompts`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.config import config_from_dict, config_to_dict
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.shards import (
    FileIdentity,
    file_identity,
    read_embeddings,
    read_header,
    read_rows,
    verify_shard,
    write_shard,
)
from fiftyone_usam.embeddings.store_spec import StoreSpec as StoreSpec  # re-exported
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.files import remove_stale_temp_files, write_text_atomic

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.sam_backend import LoadedSam

logger = logging.getLogger(__name__)


class EmbeddingStore:
    """A directory of mask proposals keyed by sample id. Use `open` or `create` to get one."""

    def __init__(self, path: Path, spec: StoreSpec) -> None:
        self.path = path
        self.spec = spec
        self._index: dict[str, tuple[Path, int]] | None = None
        self._files: dict[str, FileIdentity] = {}  # sample id -> (size, mtime_ns) embedded
        self._prompts: dict[str, str] = {}  # sample id -> fingerprint of the prompts embedded
        self._indexed: set[Path] = set()  # the shard files the index has read
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
            diffs = ", ".join(found.differences(spec, labels=("store has", "asked for")))
            raise StoreError(
                f"the EmbeddingStore at {path} was built with another spec ({diffs}). Use a "
                "different --store directory for these settings, or delete this one to rebuild it."
            )
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

        Raises:
            StoreError: a store of a label field's prompts (their number differs per image):
                training reads a grid store.
        """
        if not self.spec.on_grid:
            raise StoreError(
                f"the EmbeddingStore at {self.path} holds the prompts of field "
                f"{self.spec.prompt_field!r}, a different number per image: train a head on a "
                "grid store (`usam embed` without --prompt-field); a head trained on the grid "
                "labels prompted masks of the same SAM"
            )
        ids = list(sample_ids)
        out = np.empty((len(ids), self.spec.num_points, self.spec.embedding_dim), np.float16)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, sample_id in enumerate(ids):
            shard, row = self._locate(sample_id)
            by_shard.setdefault(shard, []).append((i, row))
        for shard, pairs in by_shard.items():
            self._verify(shard)
            embeddings = read_embeddings(shard)
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
        prompts: Mapping[str, str] | None = None,
    ) -> Path | None:
        """Writes proposals as one new shard, atomically.

        Args:
            items: sample id -> its proposals.
            files: sample id -> the image file they were computed from; its size and
                modification time are recorded, so `changed_files` can tell when it changed.
            replace: write ids already stored again (the new shard wins); otherwise they are
                skipped.
            prompts: for a store of a label field's prompts (required there), sample id -> the
                fingerprint of the prompts embedded (`PromptSet.fingerprint`), so that
                `changed_prompts` can tell when they changed.

        Returns:
            The shard written, or None when there was nothing new.
        """
        new = {k: v for k, v in items.items() if replace or k not in self}
        if not new:
            return None
        for sample_id, proposals in new.items():
            self._check(sample_id, proposals)
        fingerprints = None
        if not self.spec.on_grid:
            if prompts is None or not set(new) <= set(prompts):
                raise StoreError(
                    f"the EmbeddingStore at {self.path} holds a label field's prompts: pass "
                    "the fingerprint of every sample's prompts (prompts=)"
                )
            fingerprints = {i: prompts[i] for i in new}
        shards = self.path / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        number = len(list(shards.glob("*.safetensors")))
        target = shards / f"{number:06d}-{uuid.uuid4().hex[:8]}.safetensors"
        identities = {i: file_identity(f) for i, f in (files or {}).items() if i in new}
        known = {i: v for i, v in identities.items() if v is not None}
        write_shard(
            target, list(new.values()), list(new), self.spec.embedding_dtype, known, fingerprints
        )
        index = self._get_index()
        index.update({sample_id: (target, row) for row, sample_id in enumerate(new)})
        self._indexed.add(target)
        self._files.update(known)
        self._prompts.update(fingerprints or {})
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
            if sample_id in self and recorded is not None and file_identity(path) != recorded:
                changed.append(sample_id)
        return changed

    def changed_prompts(self, fingerprints: Mapping[str, str]) -> list[str]:
        """The stored samples whose prompts differ from the ones they were embedded with.

        Args:
            fingerprints: sample id -> the fingerprint of its prompts now.
        """
        self._get_index()
        return [i for i, now in fingerprints.items() if i in self and self._prompts.get(i) != now]

    def remove_stale_temp_files(self) -> int:
        """Deletes temporary shard files left by writers that are no longer running."""
        return remove_stale_temp_files(self.path / "shards", pattern="", owner_gone=True)

    # -- internals ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forgets the cached index so shards written by other processes are seen."""
        self._index = None

    def update_index(self) -> None:
        """Adds to the cached index the shards written since it was built (by other writers),
        reading only their headers: shards are immutable once written, so the indexed ones
        stand. A new shard's rows win over older rows of the same ids, as in a full index."""
        if self._index is None:
            self._index = self._build_index()
            return
        for shard in sorted((self.path / "shards").glob("*.safetensors")):
            if shard not in self._indexed:
                self._add_shard(self._index, shard)

    def _get_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[str, tuple[Path, int]]:
        index: dict[str, tuple[Path, int]] = {}
        self._files, self._prompts = {}, {}
        self._indexed = set()
        for shard in sorted((self.path / "shards").glob("*.safetensors")):
            self._add_shard(index, shard)
        return index

    def _add_shard(self, index: dict[str, tuple[Path, int]], shard: Path) -> None:
        header = read_header(shard)
        self._indexed.add(shard)
        for row, sample_id in enumerate(header.sample_ids):
            index[sample_id] = (shard, row)  # shards are read in write order: newest wins
            if sample_id in header.files:
                self._files[sample_id] = header.files[sample_id]
            else:
                self._files.pop(sample_id, None)
            if sample_id in header.prompts:
                self._prompts[sample_id] = header.prompts[sample_id]

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
        legacy = not self._verify(shard)
        per_point = self.spec.masks_per_point * self.spec.has_masks
        return read_rows(shard, rows, per_point, check_masks=legacy)

    def _verify(self, shard: Path) -> bool:
        """`verify_shard`, once per shard and store object."""
        if shard in self._verified:
            return True
        verified = verify_shard(shard, self.path)
        if verified:
            self._verified.add(shard)
        return verified

    def _check(self, sample_id: str, proposals: MaskProposals) -> None:
        shape = (self.spec.num_points, self.spec.embedding_dim)
        if not self.spec.on_grid:  # a label field's prompts: any number, each with its id
            shape = (max(1, proposals.num_points), self.spec.embedding_dim)
        if (
            proposals.embeddings.shape != shape
            or proposals.masks_per_point != self.spec.masks_per_point
            or len(proposals.prompt_ids) != (0 if self.spec.on_grid else shape[0])
        ):
            raise StoreError(
                f"sample {sample_id}: proposals of shape {proposals.embeddings.shape} with "
                f"{proposals.masks_per_point} mask(s) per prompt and {len(proposals.prompt_ids)} "
                f"prompt id(s) do not fit this store; it was built with {self.spec.describe()}"
            )
        if proposals.has_masks != self.spec.has_masks:
            mode, kept = ("full", "keeps") if self.spec.has_masks else ("none", "holds no")
            raise StoreError(
                f"sample {sample_id}: the EmbeddingStore at {self.path} {kept} masks, unlike "
                f"these proposals: embed with masks={mode!r} to add to it, or use another store"
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


SAM_RECORD = "sam.json"


def write_sam_record(path: str | Path, sam: LoadedSam) -> None:
    """Records beside a store's spec where its SAM came from (checkpoint path and variant
    settings), so a head trained on the store can find that SAM again by itself. A SAM passed
    in already built has no such record."""
    if sam.checkpoint is None:
        return
    record = {"checkpoint": sam.checkpoint, "variant": sam.variant_config}
    target = Path(path) / SAM_RECORD
    if not target.is_file() or json.loads(target.read_text() or "{}") != record:
        write_text_atomic(target, json.dumps(record, indent=2))


def read_sam_record(path: str | Path) -> dict[str, Any]:
    """What `write_sam_record` wrote for the store at ``path`` (``{}`` if nothing)."""
    try:
        record = json.loads((Path(path) / SAM_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
