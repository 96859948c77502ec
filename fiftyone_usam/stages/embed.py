"""`embed`: fill an EmbeddingStore with SAM mask proposals for the samples of a FiftyOne view.

Resumable: samples already in the store are skipped, finished work is flushed to disk in whole
shards, and an image that cannot be read is reported with its sample id and skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.devices import Precision
from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor, spec_for
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.sam_backend import load_sam
from fiftyone_usam.embeddings.store import (
    EmbeddingStore,
    StoreSpec,
    spec_at,
    write_sam_record,
)
from fiftyone_usam.errors import ImageLoadError
from fiftyone_usam.fiftyone_io.datasets import (
    default_store_path,
    locate_store,
    record_store,
    resolve_view,
)
from fiftyone_usam.images import DEFAULT_MAX_PIXELS, load_rgb
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

logger = logging.getLogger(__name__)


@dataclass
class EmbedReport:
    """What an `embed` run did.

    Attributes:
        store: the store directory.
        spec: the store's spec.
        total: samples in the view.
        embedded: samples embedded by this run.
        already_done: samples that were already in the store.
        failed: sample id -> reason, for samples that could not be embedded.
        changed: samples embedded again because their image file changed.
        seconds: wall time of the run.
    """

    store: Path
    spec: StoreSpec
    total: int = 0
    embedded: int = 0
    already_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.embedded} embedded, {self.already_done} already in the store, "
            f"{len(self.failed)} failed, of {self.total} samples -> {self.store} "
            f"({self.seconds:.1f} s)"
        )


def embed(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    store: str | Path | None = None,
    sam: str | Path | Any | None = None,
    checkpoint: str | Path | None = None,
    view_tag: str | None = None,
    points_per_side: int = 10,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    precision: Precision = "auto",
    shard_size: int = 16,
    num_workers: int = 4,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    points_per_batch: int = 128,
    progress: bool | ProgressCallback | None = None,
) -> EmbedReport:
    """Computes SAM mask proposals for every sample of a view into an EmbeddingStore.

    Args:
        dataset: a dataset name, a dataset or a view.
        store: the store directory (created if absent; must have the same spec if present).
            Default: ``<FiftyOne dataset dir>/usam/<dataset>/embeddings-<variant>-p<points>``.
        sam: a SAM variant (``vit_b``, ``vit_l``, ``vit_h``, a custom name or config file), a
            built ``segment_anything`` Sam / `LoadedSam`, or None: the variant described beside
            ``checkpoint`` (``<stem>.json``) if any, else ``vit_b``.
        checkpoint: SAM weights; default: the official checkpoint, found or downloaded.
        view_tag: only the samples with this tag.
        points_per_side: prompt grid size (``d = points_per_side**2``, 100 in the paper).
        device: torch device. Default: CUDA if available, else the CPU (a built model passed as
            ``sam`` stays where it is).
        batch_size: images per image-encoder call.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
        shard_size: images per store shard; a killed run loses at most one unflushed shard.
        num_workers: threads reading images ahead of the model.
        max_pixels: an image of more pixels is not decoded and fails on its own (None: no
            limit but PIL's decompression-bomb check).
        points_per_batch: prompts per mask-decoder call, which bounds its memory.
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` after each batch.

    Returns:
        An `EmbedReport`. The store's location is recorded on the dataset once it holds
        something. A sample whose image file changed since it was embedded (size or
        modification time) is embedded again.
    """
    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    loaded = load_sam(sam, checkpoint, device=device)
    fresh = spec_for(loaded, points_per_side)
    like = spec_at(store if store is not None else default_store_path(view.dataset_name, fresh))
    spec = spec_for(loaded, points_per_side, like=like)
    path = locate_store(view, spec, store, default=True)
    assert path is not None  # with default=True and a StoreSpec, always a path
    target = EmbeddingStore.create(path, spec)
    write_sam_record(target.path, loaded)
    target.remove_stale_temp_files()
    ids, paths = view.values(["id", "filepath"])
    files = dict(zip(ids, paths, strict=True))
    changed = set(target.changed_files(files))  # reads every shard header: damage fails here
    todo = [(i, p) for i, p in files.items() if i not in target or i in changed]
    report = EmbedReport(target.path, spec, total=len(ids), already_done=len(ids) - len(todo))
    report.changed = sorted(changed)
    if changed:
        logger.warning(
            "%d sample(s) whose image file changed since they were embedded are embedded "
            "again: %s", len(changed), ", ".join(report.changed[:10]),
        )  # fmt: skip
    extractor = MaskEmbeddingExtractor(
        loaded, points_per_side, batch_size, precision, points_per_batch=points_per_batch
    )
    writer = _ShardWriter(target, view, files, changed, max(1, shard_size))
    if not todo:
        writer.record()
    bar = Progress(progress, len(todo), "embed")
    try:
        for batch in _read_ahead(todo, batch_size, num_workers, max_pixels):
            images = _keep_readable(batch, report.failed)
            first = report.embedded == 0 and not writer.pending
            report.embedded += writer.add(_extract(extractor, images, report.failed, first))
            bar.update(len(batch))
    finally:
        report.embedded += writer.flush()  # keep finished work, even on interrupt
        bar.close()
    report.seconds = time.perf_counter() - started
    for sample_id, reason in report.failed.items():
        logger.warning("skipped sample %s: %s", sample_id, reason)
    logger.info("embed: %s", report.summary())
    return report


def _read_ahead(
    todo: Sequence[tuple[str, str]], batch_size: int, num_workers: int, max_pixels: int | None
) -> Iterator[list[tuple[str, np.ndarray | ImageLoadError]]]:
    """Yields batches of ``(sample_id, image or the error reading it)``, read in threads."""

    def read(item: tuple[str, str]) -> tuple[str, np.ndarray | ImageLoadError]:
        try:
            return item[0], load_rgb(item[1], max_pixels)
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


def _keep_readable(
    batch: list[tuple[str, np.ndarray | ImageLoadError]], failed: dict[str, str]
) -> list[tuple[str, np.ndarray]]:
    images = []
    for sample_id, image in batch:
        if isinstance(image, ImageLoadError):
            failed[sample_id] = str(image)
        else:
            images.append((sample_id, image))
    return images


def _extract(
    extractor: MaskEmbeddingExtractor,
    images: list[tuple[str, np.ndarray]],
    failed: dict[str, str],
    nothing_done_yet: bool,
) -> dict[str, MaskProposals]:
    """Extracts a batch; if it fails, retries image by image so one bad image costs only itself.

    An image that fails on its own before any image of the run succeeded points at the setup
    (device, model), not the image: that error is raised instead of being recorded per sample.
    """
    if not images:
        return {}
    try:
        return dict(
            zip([i for i, _ in images], extractor.extract([im for _, im in images]), strict=True)
        )
    except Exception:
        if nothing_done_yet and len(images) == 1:
            raise
    out: dict[str, MaskProposals] = {}
    for sample_id, image in images:
        try:
            out[sample_id] = extractor.extract([image])[0]
        except Exception as e:
            if nothing_done_yet and not out:
                raise
            failed[sample_id] = f"SAM failed on this image ({type(e).__name__}: {e})"
    return out


class _ShardWriter:
    """Collects extracted proposals and writes them in shards of exactly ``shard_size``; records
    the store on the dataset with its first shard (a store that never received one, e.g. a
    damaged one, is never recorded as the dataset's newest)."""

    def __init__(
        self,
        store: EmbeddingStore,
        view: fo.DatasetView,
        files: dict[str, str],
        replace: set[str],
        shard_size: int,
    ) -> None:
        self.store, self.view, self.files = store, view, files
        self.replace, self.shard_size = replace, shard_size
        self.pending: dict[str, MaskProposals] = {}
        self._recorded = False

    def add(self, items: dict[str, MaskProposals]) -> int:
        """Adds proposals; returns how many were written (in whole shards)."""
        self.pending.update(items)
        written = 0
        while len(self.pending) >= self.shard_size:
            written += self._write(list(self.pending)[: self.shard_size])
        return written

    def flush(self) -> int:
        """Writes what is pending as a last (smaller) shard."""
        return self._write(list(self.pending)) if self.pending else 0

    def record(self) -> None:
        if not self._recorded:
            record_store(self.view, self.store)
            self._recorded = True

    def _write(self, ids: list[str]) -> int:
        items = {i: self.pending.pop(i) for i in ids}
        self.store.write(
            items,
            files={i: self.files[i] for i in ids},
            replace=any(i in self.replace for i in ids),
        )
        self.record()
        return len(items)
