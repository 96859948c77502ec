"""Writing any labeler's predictions into a view: U-SAM's head or a baseline.

A labeler turns images' mask proposals (and, if it says so, the images) into `Prediction`s;
`label_view` records the run, sets the semantic field's ``mask_targets`` and writes the three
output fields, so every labeler flows through the same writer and evaluation. A labeler that
works on the image alone (``needs_proposals = False``, e.g. Otsu's threshold) needs no
EmbeddingStore and gets ``proposals=None``.

Samples go in batches of ``batch_size``: their proposals are read from the store in order, the
labeler labels the whole batch at once (U-SAM's head: one forward pass), and the batch is written
with three bulk ``set_values`` calls of the documents FiftyOne stores (the semantic field last:
it marks a sample done, so a killed run resumes). ``bulk_writes=False`` builds FiftyOne's label
objects and saves sample by sample instead (the same labels, slower).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError, ImageLoadError
from fiftyone_usam.fiftyone_io.datasets import root_dataset
from fiftyone_usam.fiftyone_io.writer import (
    declare_output_fields,
    output_fields,
    record_run,
    sample_documents,
    sample_labels,
    set_mask_targets,
)
from fiftyone_usam.images import load_rgb
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo
    import numpy as np

    from fiftyone_usam.embeddings.proposals import MaskProposals
    from fiftyone_usam.embeddings.store import EmbeddingStore
    from fiftyone_usam.inference.predictor import Prediction

T = TypeVar("T")
DEFAULT_LABEL_BATCH = 64  # samples per labeler call and per bulk write


class ProposalLabeler(Protocol):
    """What `label_view` needs of a predictor."""

    needs_image: bool  # whether predict_proposals wants the RGB image too
    needs_proposals: bool  # False: predict_proposals gets None and label_view needs no store

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; label ``i`` is ``classes[i - 1]``, 0 is background."""
        ...

    def predict_proposals(
        self, proposals: MaskProposals | None, image: np.ndarray | None = None
    ) -> Prediction:
        """Labels one image (``proposals`` is None only when ``needs_proposals`` is False)."""
        ...

    def predict_batch(
        self,
        proposals: Sequence[MaskProposals | None],
        images: Sequence[np.ndarray | None] | None = None,
    ) -> list[Prediction]:
        """Labels many images; equal to `predict_proposals` of each."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings recorded with the run."""
        ...


def label_view(
    view: fo.DatasetView,
    ids: list[str],
    labeler: ProposalLabeler,
    store: EmbeddingStore | None,
    *,
    field: str,
    settings: dict[str, Any],
    details: dict[str, Any] | None = None,
    mask_dir: str | Path | None = None,
    progress: bool | ProgressCallback | None = None,
    failed: dict[str, str] | None = None,
    batch_size: int = DEFAULT_LABEL_BATCH,
    bulk_writes: bool = True,
) -> int:
    """Labels the samples ``ids`` of ``view`` from their proposals in ``store``.

    The run is recorded (with ``settings``, which `plan_writes` compares on a re-run, and
    ``details``) and ``mask_targets`` set before anything is written, so a killed run resumes.

    Args:
        store: the proposals; None for a labeler whose ``needs_proposals`` is False.
        failed: when given, a sample whose image cannot be read is recorded here (id -> reason)
            and skipped; otherwise its `ImageLoadError` stops the run.
        batch_size: samples per labeler call and per write (1: one at a time).
        bulk_writes: write each batch with bulk ``set_values`` in a thread while the next is
            labelled, and read the next batch in another (False: one thing at a time, and
            samples saved one by one).

    Returns:
        How many samples were labelled.

    Raises:
        ConfigError: ``store`` is None but the labeler needs proposals, or ``batch_size < 1``.
    """
    if store is None and labeler.needs_proposals:
        raise ConfigError(
            f"{type(labeler).__name__} labels SAM's mask proposals: pass the EmbeddingStore "
            "that holds them"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    set_mask_targets(view, field, labeler.classes)
    source: dict[str, Any] = {}
    if store is not None:
        source = {
            "store": str(Path(store.path).resolve()),
            "store_spec": config_to_dict(store.spec),
        }
    record_run(view, field, {**(details or {}), "settings": settings, **source})
    dataset = root_dataset(view)
    if bulk_writes:
        declare_output_fields(dataset, field)
    paths = dict(zip(*view.select(ids).values(["id", "filepath"]), strict=True))
    write = _write_documents if bulk_writes else _save_labels
    bar = Progress(progress, len(ids), "predict")
    written, pending, counts = 0, None, (0, 0)
    # a batch is written in this thread while the next one is labelled
    batches = (
        (len(batch), _with_images(batch, labeler.needs_image, paths, failed))
        for batch in _batches(_proposals(store, ids), batch_size)
    )
    with ThreadPoolExecutor(1, thread_name_prefix="usam-write") as writer:
        try:
            for seen, ready in _read_ahead(batches) if bulk_writes else batches:
                labelled = [sample_id for sample_id, _, _ in ready]
                predictions = labeler.predict_batch(
                    [proposals for _, proposals, _ in ready], [image for *_, image in ready]
                )
                if pending is not None:
                    written += _finish(pending, counts, bar)
                pending = writer.submit(
                    write, dataset, field, labelled, predictions, labeler.classes, mask_dir
                )
                counts = (len(labelled), seen)
                if not bulk_writes:  # the reference path: one thing at a time
                    written += _finish(pending, counts, bar)
                    pending = None
            if pending is not None:
                written += _finish(pending, counts, bar)
        finally:
            bar.close()  # leaving the pool waits for a write in flight: labelled samples stay
    return written


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each next one read in a thread while the caller works on the last."""
    with ThreadPoolExecutor(1, thread_name_prefix="usam-read") as reader:
        ahead = reader.submit(next, items, None)
        while (item := ahead.result()) is not None:
            ahead = reader.submit(next, items, None)
            yield item


def _finish(pending: Future[None], counts: tuple[int, int], bar: Progress) -> int:
    """Waits for a batch's write (raising its error); returns the samples it labelled."""
    pending.result()
    bar.update(counts[1])  # may raise (a stopped run): the labelled samples are kept
    return counts[0]


Item = tuple[str, "MaskProposals | None", "np.ndarray | None"]


def _with_images(
    batch: list[tuple[str, MaskProposals | None]],
    needs_image: bool,
    paths: dict[str, str],
    failed: dict[str, str] | None,
) -> list[Item]:
    """``(sample_id, proposals, image)`` of a batch; unreadable images go to ``failed``."""
    ready: list[Item] = []
    for sample_id, proposals in batch:
        try:
            image = load_rgb(paths[sample_id]) if needs_image else None
        except ImageLoadError as e:
            if failed is None:
                raise
            failed[sample_id] = str(e)
            continue
        ready.append((sample_id, proposals, image))
    return ready


def _write_documents(
    dataset: fo.Dataset,
    field: str,
    ids: list[str],
    predictions: list[Prediction],
    classes: tuple[str, ...],
    mask_dir: str | Path | None,
) -> None:
    """One bulk write per output field; the semantic field, which marks a sample done, last."""
    documents = [
        sample_documents(p, classes, mask_dir=mask_dir, sample_id=i)
        for i, p in zip(ids, predictions, strict=True)
    ]
    names = output_fields(field)
    for kind in ("instances", "uncertainty", "semantic"):
        dataset.set_values(
            names[kind],
            {i: d[kind] for i, d in zip(ids, documents, strict=True)},
            key_field="id",
            expand_schema=False,
            validate=False,
        )


def _save_labels(
    dataset: fo.Dataset,
    field: str,
    ids: list[str],
    predictions: list[Prediction],
    classes: tuple[str, ...],
    mask_dir: str | Path | None,
) -> None:
    """FiftyOne's label objects, saved sample by sample (the reference path)."""
    names = output_fields(field)
    for sample_id, prediction in zip(ids, predictions, strict=True):
        sample = dataset[sample_id]
        labels = sample_labels(prediction, classes, mask_dir=mask_dir, sample_id=sample_id)
        for kind, value in labels.items():
            sample[names[kind]] = value
        sample.save()


def _batches(
    items: Iterator[tuple[str, MaskProposals | None]], size: int
) -> Iterator[list[tuple[str, MaskProposals | None]]]:
    batch: list[tuple[str, MaskProposals | None]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _proposals(
    store: EmbeddingStore | None, ids: list[str]
) -> Iterator[tuple[str, MaskProposals | None]]:
    """``(sample_id, proposals)`` from the store, or ``(sample_id, None)`` without one."""
    if store is None:
        return ((sample_id, None) for sample_id in ids)
    return store.iter_proposals(ids)
