"""The embed stage's per-sample work: images read by path, SAM's proposals, whole store shards.

`EmbedTask` is what travels to a worker (the SAM variant and checkpoint path, the extractor's
settings, the store's path and spec); `EmbedWorker` loads SAM once and, for each stream of items
it is given, reads the images ahead in threads, overlaps the host's RLE work on a batch with the
device's work on the next, and writes the proposals into the store in whole shards (atomically;
several workers may fill one store). An item's outcome is reported once its shard is on disk.

An item whose result is already durable (in the store, with the same image file) is skipped and
reported done: a block retried after its worker died is neither lost nor written twice.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiftyone_usam.config import config_from_dict
from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor, spec_for
from fiftyone_usam.embeddings.prompts import PromptSet
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.sam_variants import SamVariant
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.embeddings.view_proposals import in_original_frame
from fiftyone_usam.embeddings.views import View, parse_view, view_image
from fiftyone_usam.errors import ConfigError, ImageLoadError, StoreError
from fiftyone_usam.execution.work import Item, Outcome, Progressed
from fiftyone_usam.images import load_rgb

# a batch in flight: its size, its readable images by sample id, their proposals to come
_Submitted = tuple[int, list[tuple[str, np.ndarray]], list[Future[MaskProposals]]]
# the extractor's submit of ``(sample_id, image)`` pairs, each with its item's prompts
_Prompted = Callable[[list[tuple[str, np.ndarray]]], list[Future[MaskProposals]]]


def make_extractor(loaded: LoadedSam, settings: dict[str, Any]) -> MaskEmbeddingExtractor:
    """The extractor of these settings; a bad one is a `ConfigError` that names it."""
    try:
        return MaskEmbeddingExtractor(loaded, **settings)
    except ValueError as e:
        raise ConfigError(str(e)) from e


@dataclass(frozen=True)
class EmbedTask:
    """What a worker needs to embed samples into a store.

    Attributes:
        store: the store's directory (created by the driver, with ``spec``).
        spec: the store's spec; a worker whose SAM gives another is refused.
        extractor: `MaskEmbeddingExtractor` keyword settings (points, batch size, precision...).
        variant: the SAM variant to build (travels as settings, not as a model).
        checkpoint: the weights file.
        device: torch device; None: CUDA if the worker has one, else the CPU.
        shard_size: images per shard.
        read_threads: threads reading images ahead of the model.
        max_pixels: images of more pixels fail on their own.
        view: embed each image under this view (``hflip``, ``scale:0.75``), rows put back in
            the original's grid order (`embeddings.view_proposals`); empty: as they are.
        loaded: a SAM already loaded in this process (the local engine uses it; never sent).
        built: the extractor already built on ``loaded`` (likewise).
    """

    store: str
    spec: StoreSpec
    extractor: dict[str, Any]
    variant: dict[str, Any] | None
    checkpoint: str | None
    device: str | None
    shard_size: int = 16
    read_threads: int = 4
    max_pixels: int | None = None
    view: str = ""
    loaded: LoadedSam | None = field(default=None, compare=False, repr=False)
    built: MaskEmbeddingExtractor | None = field(default=None, compare=False, repr=False)
    name: str = "embed"

    def remote(self) -> EmbedTask:
        """This task without its loaded SAM, rebuilt on each worker from variant + checkpoint.

        Raises:
            ConfigError: SAM was built in memory, so there is nothing a worker could load.
        """
        if self.checkpoint is None or self.variant is None:
            raise ConfigError(
                "the ray engine loads SAM on each worker from a variant and a checkpoint file; "
                "a SAM built in memory cannot travel. Pass sam= a variant name or config file "
                "and checkpoint= the weights, or use engine='local'"
            )
        return dataclasses.replace(self, loaded=None, built=None)

    def start(self) -> EmbedWorker:
        """Loads SAM here (unless already loaded) and opens the store."""
        if self.built is not None:
            check_writable(Path(self.store) / "shards")
            return EmbedWorker(self, self.built)
        loaded = self.loaded
        if loaded is None:
            variant = config_from_dict(SamVariant, self.variant or {}, source="SAM variant")
            loaded = load_sam(variant, self.checkpoint, device=self.device, download=False)
        spec = spec_for(loaded, self.spec.points_per_side, like=self.spec)
        if not self.spec.on_grid:
            spec = spec.with_prompts(self.spec.prompt_kind, str(self.spec.prompt_field))
        if self.spec.view:
            spec = spec.with_view(self.spec.view)
        differences = spec.with_masks(self.spec.has_masks).differences(self.spec)
        if differences:
            raise StoreError(
                f"this worker's SAM gives embeddings unlike the store's at {self.store}: "
                f"{'; '.join(differences)}. Every worker must load the same checkpoint (on a "
                "cluster, from a path every node sees)"
            )
        check_writable(Path(self.store) / "shards")
        return EmbedWorker(self, make_extractor(loaded, self.extractor))


class EmbedWorker:
    """SAM loaded once; embeds streams of items into the task's store."""

    def __init__(self, task: EmbedTask, extractor: MaskEmbeddingExtractor) -> None:
        self.task, self.extractor = task, extractor
        self.store = EmbeddingStore.open(task.store, task.spec)
        self.succeeded = False  # some image was embedded by this worker (in any block)

    def close(self) -> None:
        del self.extractor

    def run(self, items: Sequence[Item], progress: Progressed | None = None) -> Iterator[Outcome]:
        """Embeds ``items`` (``key``: sample id, ``filepath``, ``replace``: embed again even
        if stored; for a label field's prompts ``prompts``, a `PromptSet.to_item`, and their
        ``fingerprint``) and yields each one's outcome once its shard is written; ``progress``
        is told after each batch. Stopped early (an exception, a closed generator), it still
        writes what it embedded."""
        self.store.update_index()  # shards other workers (or an earlier try) wrote since
        durable = _durable(self.store, items)
        todo = [i for i in items if i["key"] not in durable]
        for item in todo:
            check_visible(item)
        for item in items:
            if item["key"] in durable:
                yield Outcome(item["key"], facts={"already_written": True})
        if durable and progress is not None:
            progress(len(durable))
        writer = _ShardWriter(self.store, {i["key"]: i for i in todo}, self.task.shard_size)
        writer.succeeded = self.succeeded
        if self.task.view:
            writer.view = (parse_view(self.task.view), self.task.spec.points_per_side)
        outcomes: deque[Outcome] = deque()
        try:
            batches = _read_ahead(
                [(i["key"], i["filepath"]) for i in todo],
                self.extractor.batch_size,
                self.task.read_threads,
                self.task.max_pixels,
                writer,
            )
            for written in _embed_batches(self.extractor, batches, writer, outcomes, progress):
                while outcomes:
                    yield outcomes.popleft()
                yield from (Outcome(key) for key in written)
        finally:
            last = writer.flush()  # keep finished work, even on interrupt
            self.succeeded = writer.succeeded
        yield from outcomes
        yield from (Outcome(key) for key in last)


def _durable(store: EmbeddingStore, items: Sequence[Item]) -> set[str]:
    """The items already in the store from the same image file (and the same prompts)."""
    stored = {i["key"]: i["filepath"] for i in items if i["key"] in store}
    fingerprints = {i["key"]: i["fingerprint"] for i in items if "fingerprint" in i}
    stale = set(store.changed_files(stored)) | set(store.changed_prompts(fingerprints))
    return set(stored) - stale


def check_writable(folder: Path) -> None:
    """Refuses a worker that cannot write into ``folder`` (a store on storage it does not see)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        raise StoreError(
            f"the worker on {socket.gethostname()} cannot write to {folder} ({e}). On a "
            "cluster, the store must be on storage every node sees (a shared filesystem) "
            "with the same path"
        ) from None


def check_visible(item: Item) -> None:
    """Refuses an image the driver saw but this worker cannot: images on storage it does not
    see. (An image missing for the driver too is that sample's own failure.)"""
    if item.get("seen") and not os.path.exists(item["filepath"]):
        raise ConfigError(
            f"the worker on {socket.gethostname()} cannot see {item['filepath']}, which the "
            "driver reads. On a cluster, the images must be on storage every node sees (a "
            "shared filesystem) with the same paths"
        )


def _read_ahead(
    todo: Sequence[tuple[str, str]],
    batch_size: int,
    num_workers: int,
    max_pixels: int | None,
    writer: _ShardWriter,
) -> Iterator[list[tuple[str, np.ndarray | ImageLoadError]]]:
    """Yields batches of ``(sample_id, image or the error reading it)``, read in threads (and
    put under the writer's view, if it has one)."""

    def read(item: tuple[str, str]) -> tuple[str, np.ndarray | ImageLoadError]:
        try:
            return item[0], writer.viewed(item[0], load_rgb(item[1], max_pixels))
        except ImageLoadError as e:
            return item[0], e

    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        futures = [pool.map(read, b) for b in batches[:2]]
        for k in range(len(batches)):
            if k + 2 < len(batches):
                futures.append(pool.map(read, batches[k + 2]))
            yield list(futures[k])
            futures[k] = iter(())  # let the images of a finished batch be freed


def _embed_batches(
    extractor: MaskEmbeddingExtractor,
    batches: Iterable[list[tuple[str, np.ndarray | ImageLoadError]]],
    writer: _ShardWriter,
    failures: deque[Outcome],
    progress: Progressed | None,
) -> Iterator[list[str]]:
    """Embeds batch after batch into ``writer``, in order; yields the ids of each shard written.

    A batch's results are taken once the next batch's device work is done, so the host's work
    on it (RLE strings) overlaps that: at most two batches are in flight. Items that failed are
    appended to ``failures``; ``progress`` is told each batch's size once it is taken.
    """

    def take(submitted: _Submitted) -> list[str]:
        size, images, futures = submitted
        written = writer.add(_results(prompted, images, futures, failures, writer))
        if progress is not None:
            progress(size)
        return written

    with extractor.pipelined() as submit:

        def prompted(images: list[tuple[str, np.ndarray]]) -> list[Future[MaskProposals]]:
            """``submit`` of images with their prompts (None: the grid)."""
            prompts = [writer.prompts(sample_id) for sample_id, _ in images]
            return submit([image for _, image in images], prompts)

        pending: deque[_Submitted] = deque()
        for batch in batches:
            images = _keep_readable(batch, failures)
            pending.append((len(batch), images, _submit(prompted, images)))
            if len(pending) > 1:
                yield take(pending.popleft())
        while pending:
            yield take(pending.popleft())


def _keep_readable(
    batch: list[tuple[str, np.ndarray | ImageLoadError]], failures: deque[Outcome]
) -> list[tuple[str, np.ndarray]]:
    images = []
    for sample_id, image in batch:
        if isinstance(image, ImageLoadError):
            failures.append(Outcome(sample_id, str(image)))
        else:
            images.append((sample_id, image))
    return images


def _submit(submit: _Prompted, images: list[tuple[str, np.ndarray]]) -> list[Future[MaskProposals]]:
    """``submit`` of a batch's images; an error of the device's part fails each image's future."""
    try:
        return submit(images) if images else []
    except Exception as e:
        failed: Future[MaskProposals] = Future()
        failed.set_exception(e)
        return [failed] * len(images)


def _results(
    submit: _Prompted,
    images: list[tuple[str, np.ndarray]],
    futures: list[Future[MaskProposals]],
    failures: deque[Outcome],
    writer: _ShardWriter,
) -> dict[str, MaskProposals]:
    """A batch's proposals by sample id. An image that failed within a batch of several is
    tried again alone, so one bad image costs only itself; one that fails alone is a failure.

    An image that fails on its own before any image of this worker succeeded points at the
    setup (device, model), not the image: that error is raised instead.
    """
    out: dict[str, MaskProposals] = {}
    for (sample_id, image), future in zip(images, futures, strict=True):
        try:
            out[sample_id] = _result(submit, (sample_id, image), future, alone=len(images) == 1)
        except Exception as e:
            if not writer.succeeded and not out:
                raise
            failures.append(
                Outcome(sample_id, f"SAM failed on this image ({type(e).__name__}: {e})")
            )
    return out


def _result(
    submit: _Prompted, image: tuple[str, np.ndarray], future: Future[MaskProposals], alone: bool
) -> MaskProposals:
    """The image's proposals; if they failed within a batch of several, tried again alone."""
    try:
        return future.result()
    except Exception:
        if alone:
            raise
    return submit([image])[0].result()


class _ShardWriter:
    """Collects proposals and writes them in shards of exactly ``shard_size``."""

    def __init__(self, store: EmbeddingStore, items: dict[str, Item], shard_size: int) -> None:
        self.store, self.items, self.shard_size = store, items, max(1, shard_size)
        self.pending: dict[str, MaskProposals] = {}
        self.succeeded = False  # some image of this worker was embedded
        self.view: tuple[View, int] | None = None  # a view and its grid (view stores)
        self.sizes: dict[str, tuple[int, int]] = {}  # sample id -> its original (H, W)

    def viewed(self, sample_id: str, image: np.ndarray) -> np.ndarray:
        """The image under the view (unchanged without one); its size is kept."""
        if self.view is None:
            return image
        self.sizes[sample_id] = (int(image.shape[0]), int(image.shape[1]))
        return view_image(image, self.view[0])

    def add(self, proposals: dict[str, MaskProposals]) -> list[str]:
        """Adds proposals; returns the ids written (in whole shards)."""
        if self.view is not None:
            view, points = self.view
            proposals = {
                i: in_original_frame(p, view, points, self.sizes.pop(i))
                for i, p in proposals.items()
            }
        self.pending.update(proposals)
        self.succeeded = self.succeeded or bool(proposals)
        written: list[str] = []
        while len(self.pending) >= self.shard_size:
            written += self._write(list(self.pending)[: self.shard_size])
        return written

    def prompts(self, sample_id: str) -> PromptSet | None:
        """The item's prompts from a label field (None: the grid)."""
        described = self.items[sample_id].get("prompts")
        return None if described is None else PromptSet.from_item(described)

    def flush(self) -> list[str]:
        """Writes what is pending as a last (smaller) shard; returns its ids."""
        return self._write(list(self.pending)) if self.pending else []

    def _write(self, ids: list[str]) -> list[str]:
        items = {i: self.pending.pop(i) for i in ids}
        fingerprints = {
            i: self.items[i]["fingerprint"] for i in ids if "fingerprint" in self.items[i]
        }
        self.store.write(
            items,
            files={i: self.items[i]["filepath"] for i in ids},
            replace=any(self.items[i].get("replace", False) for i in ids),
            prompts=fingerprints or None,
        )
        return ids
