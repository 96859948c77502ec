"""Writing any labeler's predictions into a view: U-SAM's head or a baseline.

A labeler turns one image's mask proposals (and, if it says so, the image) into a `Prediction`;
`label_view` records the run, sets the semantic field's ``mask_targets`` and writes the three
output fields sample by sample, so every labeler flows through the same writer and evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; label ``i`` is ``classes[i - 1]``, 0 is background."""
        ...

    def predict_proposals(
        self, proposals: MaskProposals, image: np.ndarray | None = None
    ) -> Prediction:
        """Labels one image."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings recorded with the run."""
        ...


def label_view(
    view: fo.DatasetView,
    ids: list[str],
    labeler: ProposalLabeler,
    store: EmbeddingStore,
    *,
    field: str,
    settings: dict[str, Any],
    details: dict[str, Any] | None = None,
    mask_dir: str | Path | None = None,
    progress: bool | ProgressCallback | None = None,
) -> int:
    """Labels the samples ``ids`` of ``view`` from their proposals in ``store``.

    The run is recorded (with ``settings``, which `plan_writes` compares on a re-run, and
    ``details``) and ``mask_targets`` set before anything is written, so a killed run resumes.

    Returns:
        How many samples were labelled.
    """
    from fiftyone_usam.config import config_to_dict
    from fiftyone_usam.fiftyone_io.writer import (
        output_fields,
        record_run,
        sample_labels,
        set_mask_targets,
    )
    from fiftyone_usam.images import load_rgb

    set_mask_targets(view, field, labeler.classes)
    record_run(
        view,
        field,
        {
            **(details or {}),
            "settings": settings,
            "store": str(Path(store.path).resolve()),
            "store_spec": config_to_dict(store.spec),
        },
    )
    names = output_fields(field)
    bar = Progress(progress, len(ids), "predict")
    written = 0
    try:
        samples = view.select(ids, ordered=True).iter_samples(autosave=True, batch_size=_SAVE_BATCH)
        for sample, (sample_id, proposals) in zip(samples, store.iter_proposals(ids), strict=True):
            assert sample.id == sample_id
            image = load_rgb(sample.filepath) if labeler.needs_image else None
            prediction = labeler.predict_proposals(proposals, image)
            labels = sample_labels(
                prediction, labeler.classes, mask_dir=mask_dir, sample_id=sample_id
            )
            for kind, value in labels.items():
                sample[names[kind]] = value
            written += 1
            bar.update(1)
    finally:
        bar.close()
    return written
