"""Writing any labeler's predictions into a view: U-SAM's head or a baseline.

A labeler turns one image's mask proposals (and, if it says so, the image) into a `Prediction`;
`label_view` records the run, sets the semantic field's ``mask_targets`` and writes the three
output fields sample by sample, so every labeler flows through the same writer and evaluation.
A labeler that works on the image alone (``needs_proposals = False``, e.g. Otsu's threshold)
needs no EmbeddingStore and gets ``proposals=None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError, ImageLoadError
from fiftyone_usam.fiftyone_io.writer import (
    output_fields,
    record_run,
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

_SAVE_BATCH = 64


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
) -> int:
    """Labels the samples ``ids`` of ``view`` from their proposals in ``store``.

    The run is recorded (with ``settings``, which `plan_writes` compares on a re-run, and
    ``details``) and ``mask_targets`` set before anything is written, so a killed run resumes.

    Args:
        store: the proposals; None for a labeler whose ``needs_proposals`` is False.
        failed: when given, a sample whose image cannot be read is recorded here (id -> reason)
            and skipped; otherwise its `ImageLoadError` stops the run.

    Returns:
        How many samples were labelled.

    Raises:
        ConfigError: ``store`` is None but the labeler needs proposals.
    """

    if store is None and labeler.needs_proposals:
        raise ConfigError(
            f"{type(labeler).__name__} labels SAM's mask proposals: pass the EmbeddingStore "
            "that holds them"
        )
    set_mask_targets(view, field, labeler.classes)
    source: dict[str, Any] = {}
    if store is not None:
        source = {
            "store": str(Path(store.path).resolve()),
            "store_spec": config_to_dict(store.spec),
        }
    record_run(view, field, {**(details or {}), "settings": settings, **source})
    names = output_fields(field)
    bar = Progress(progress, len(ids), "predict")
    written = 0
    samples = view.select(ids, ordered=True).iter_samples(autosave=True, batch_size=_SAVE_BATCH)
    unsaved = None  # autosave saves a sample only when the next is asked for
    try:
        for sample, (sample_id, proposals) in zip(samples, _proposals(store, ids), strict=True):
            assert sample.id == sample_id
            try:
                image = load_rgb(sample.filepath) if labeler.needs_image else None
            except ImageLoadError as e:
                if failed is None:
                    raise
                failed[sample_id] = str(e)
                bar.update(1)
                continue
            prediction = labeler.predict_proposals(proposals, image)
            labels = sample_labels(
                prediction, labeler.classes, mask_dir=mask_dir, sample_id=sample_id
            )
            for kind, value in labels.items():
                sample[names[kind]] = value
            written += 1
            unsaved = sample
            bar.update(1)  # may raise (a stopped run): the labelled samples are kept
            unsaved = None
    finally:
        if unsaved is not None:
            unsaved.save()
        samples.close()  # flushes the autosave batch
        bar.close()
    return written


def _proposals(
    store: EmbeddingStore | None, ids: list[str]
) -> Iterator[tuple[str, MaskProposals | None]]:
    """``(sample_id, proposals)`` from the store, or ``(sample_id, None)`` without one."""
    if store is None:
        return ((sample_id, None) for sample_id in ids)
    return store.iter_proposals(ids)
