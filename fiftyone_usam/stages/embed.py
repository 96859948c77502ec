"""`embed`: fill an EmbeddingStore with SAM mask proposals for the samples of a FiftyOne view.

Resumable: samples already in the store are skipped, finished work is flushed to disk in whole
shards, and an image that cannot be read, or that SAM fails on alone, is reported with its sample
id and skipped. The host's work on a batch (RLE strings) overlaps the device's on the next.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.devices import Precision
from fiftyone_usam.embeddings.extractor import (
    MASK_MODES,
    MaskEmbeddingExtractor,
    MaskEncoding,
    MaskMode,
    SubmitBatch,
    spec_for,
)
from fiftyone_usam.embeddings.fast_attention import EncoderAttention
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.store import (
    EmbeddingStore,
    StoreSpec,
    spec_at,
    write_sam_record,
)
from fiftyone_usam.errors import ConfigError, ImageLoadError
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

# a batch in flight: its size, its readable images by sample id, their proposals to come
_Submitted = tuple[int, list[tuple[str, np.ndarray]], list[Future[MaskProposals]]]


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
    masks: MaskMode = "full",
    mask_encoding: MaskEncoding = "device",
    encoder_attention: EncoderAttention = "auto",
    encode_workers: int = 1,
    progress: bool | ProgressCallback | None = None,
) -> EmbedReport:
    """Computes SAM mask proposals for every sample of a view into an EmbeddingStore.

    Args:
        dataset: a dataset name, a dataset or a view.
        store: the store directory (created if absent; must have the same spec if present).
            Default: ``<FiftyOne dataset dir>/usam/<dataset>/embeddings-<variant>-p<points>``
            (``...-nomasks`` with ``masks="none"``).
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
        masks: ``full`` keeps SAM's masks (COCO RLE) and stability scores, which labelling
            needs; ``none`` keeps only the embeddings and predicted IoUs, all that training
            reads (about half the size, and no mask upsampling). A store holds one or the
            other: adding to a store of the other kind is refused.
        mask_encoding: ``device`` finds the masks' run lengths on the model's device and
            copies only those to the host; ``host`` copies the masks and encodes them there
            (the reference). The stored bytes are the same either way.
        encoder_attention: ``sdpa`` runs the image encoder's attention as one fused
            ``scaled_dot_product_attention`` (equal to ``reference`` within float rounding);
            ``auto`` is ``sdpa`` on CUDA, ``reference`` elsewhere.
        encode_workers: threads that turn runs into RLE strings while the device works on the
            next image and the next batch (0: in line). None of these three changes what is
            stored, so they are not in the store's spec: a store filled one way is resumed any
            other way.
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` after each batch.

    Returns:
        An `EmbedReport`. The store's location is recorded on the dataset once it holds
        something. A sample whose image file changed since it was embedded (size or
        modification time) is embedded again.
    """
    started = time.perf_counter()
    keep = _keeps_masks(masks)
    view = resolve_view(dataset, view_tag)
    loaded = load_sam(sam, checkpoint, device=device)
    extractor = _extractor(
        loaded,
        points_per_side=points_per_side,
        batch_size=batch_size,
        precision=precision,
        points_per_batch=points_per_batch,
        masks=masks,
        mask_encoding=mask_encoding,
        encoder_attention=encoder_attention,
        encode_workers=encode_workers,
    )  # checked before the store is touched
    fresh = spec_for(loaded, points_per_side).with_masks(keep)
    like = spec_at(store if store is not None else default_store_path(view.dataset_name, fresh))
    spec = spec_for(loaded, points_per_side, like=like).with_masks(keep)
    path = locate_store(view, spec, store, default=True, masks=keep)
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
    writer = _ShardWriter(target, view, files, changed, max(1, shard_size))
    if not todo:
        writer.record()
    bar = Progress(progress, len(todo), "embed")
    try:
        _embed_batches(
            extractor, _read_ahead(todo, batch_size, num_workers, max_pixels), writer, report, bar
        )
    finally:
        report.embedded += writer.flush()  # keep finished work, even on interrupt
        bar.close()
    report.seconds = time.perf_counter() - started
    for sample_id, reason in report.failed.items():
        logger.warning("skipped sample %s: %s", sample_id, reason)
    logger.info("embed: %s", report.summary())
    return report


def _extractor(loaded: LoadedSam, **settings: Any) -> MaskEmbeddingExtractor:
    """The extractor of these settings; a bad one is a `ConfigError` that names it."""
    try:
        return MaskEmbeddingExtractor(loaded, **settings)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _keeps_masks(masks: str) -> bool:
    """Whether ``masks`` (checked) keeps the masks."""
    if masks not in MASK_MODES:
        raise ConfigError(f"masks must be one of {', '.join(MASK_MODES)}, not {masks!r}")
    return masks == "full"


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


def _embed_batches(
    extractor: MaskEmbeddingExtractor,
    batches: Iterable[list[tuple[str, np.ndarray | ImageLoadError]]],
    writer: _ShardWriter,
    report: EmbedReport,
    bar: Progress,
) -> None:
    """Embeds batch after batch into ``writer``, in order.

    A batch's results are taken (written, counted, shown) once the next batch's device work is
    done, so the host's work on it (RLE strings) overlaps that: at most two batches are in
    flight, and a stop loses only work that was never counted.
    """
    with extractor.pipelined() as submit:
        pending: deque[_Submitted] = deque()
        for batch in batches:
            images = _keep_readable(batch, report.failed)
            pending.append((len(batch), images, _submit(submit, images)))
            if len(pending) > 1:
                _take(submit, *pending.popleft(), writer, report, bar)
        while pending:
            _take(submit, *pending.popleft(), writer, report, bar)


def _submit(
    submit: SubmitBatch, images: list[tuple[str, np.ndarray]]
) -> list[Future[MaskProposals]]:
    """``submit`` of a batch's images; an error of the device's part fails each image's future."""
    try:
        return submit([image for _, image in images]) if images else []
    except Exception as e:
        failed: Future[MaskProposals] = Future()
        failed.set_exception(e)
        return [failed] * len(images)


def _take(
    submit: SubmitBatch,
    size: int,
    images: list[tuple[str, np.ndarray]],
    futures: list[Future[MaskProposals]],
    writer: _ShardWriter,
    report: EmbedReport,
    bar: Progress,
) -> None:
    """Adds a submitted batch's results to ``writer`` and ``size`` images to the progress."""
    nothing_done_yet = report.embedded == 0 and not writer.pending
    report.embedded += writer.add(
        _results(submit, images, futures, report.failed, nothing_done_yet)
    )
    bar.update(size)


def _results(
    submit: SubmitBatch,
    images: list[tuple[str, np.ndarray]],
    futures: list[Future[MaskProposals]],
    failed: dict[str, str],
    nothing_done_yet: bool,
) -> dict[str, MaskProposals]:
    """A batch's proposals by sample id. An image that failed within a batch of several is
    tried again alone, so one bad image costs only itself; one that fails alone is recorded
    in ``failed``.

    An image that fails on its own before any image of the run succeeded points at the setup
    (device, model), not the image: that error is raised instead of being recorded per sample.
    """
    out: dict[str, MaskProposals] = {}
    for (sample_id, image), future in zip(images, futures, strict=True):
        try:
            out[sample_id] = _result(submit, image, future, alone=len(images) == 1)
        except Exception as e:
            if nothing_done_yet and not out:
                raise
            failed[sample_id] = f"SAM failed on this image ({type(e).__name__}: {e})"
    return out


def _result(
    submit: SubmitBatch, image: np.ndarray, future: Future[MaskProposals], alone: bool
) -> MaskProposals:
    """The image's proposals; if they failed within a batch of several, tried again alone."""
    try:
        return future.result()
    except Exception:
        if alone:
            raise
    return submit([image])[0].result()


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
