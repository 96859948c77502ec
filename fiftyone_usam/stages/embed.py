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
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import ImageLoadError
from fiftyone_usam.fiftyone_io.datasets import default_store_path, record_store, resolve_view
from fiftyone_usam.images import load_rgb
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
        seconds: wall time of the run.
    """

    store: Path
    spec: StoreSpec
    total: int = 0
    embedded: int = 0
    already_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
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
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` after each batch.

    Returns:
        An `EmbedReport`. The store's location is recorded on the dataset.
    """
    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    loaded = load_sam(sam, checkpoint, device=device)
    spec = spec_for(loaded, points_per_side)
    if store is None:
        store = default_store_path(view.dataset_name, spec)
    target = EmbeddingStore.create(store, spec)
    target.remove_stale_temp_files()
    record_store(view, target)

    ids, paths = view.values(["id", "filepath"])
    todo = [(i, p) for i, p in zip(ids, paths, strict=True) if i not in target]
    report = EmbedReport(target.path, spec, total=len(ids), already_done=len(ids) - len(todo))
    extractor = MaskEmbeddingExtractor(
        loaded, points_per_side=points_per_side, batch_size=batch_size, precision=precision
    )
    bar = Progress(progress, len(todo), "embed")
    pending: dict[str, MaskProposals] = {}
    try:
        for batch in _read_ahead(todo, batch_size, num_workers):
            images = _keep_readable(batch, report.failed)
            nothing_done_yet = report.embedded == 0 and not pending
            pending.update(_extract(extractor, images, report.failed, nothing_done_yet))
            if len(pending) >= shard_size:
                report.embedded += _flush(target, pending)
            bar.update(len(batch))
    finally:
        report.embedded += _flush(target, pending)  # keep finished work, even on interrupt
        bar.close()
    report.seconds = time.perf_counter() - started
    for sample_id, reason in report.failed.items():
        logger.warning("skipped sample %s: %s", sample_id, reason)
    logger.info("embed: %s", report.summary())
    return report


def _read_ahead(
    todo: Sequence[tuple[str, str]], batch_size: int, num_workers: int
) -> Iterator[list[tuple[str, np.ndarray | ImageLoadError]]]:
    """Yields batches of ``(sample_id, image or the error reading it)``, read in threads."""

    def read(item: tuple[str, str]) -> tuple[str, np.ndarray | ImageLoadError]:
        try:
            return item[0], load_rgb(item[1])
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


def _flush(store: EmbeddingStore, pending: dict[str, MaskProposals]) -> int:
    if not pending:
        return 0
    count = len(pending)
    store.write(pending)
    pending.clear()
    return count
