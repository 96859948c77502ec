"""The labelling sequence shared by `predict` and `baseline`, written once:

1. `plan_writes`: check the output fields and pick the samples to (re)label;
2. `ensure_embeddings`: make sure those samples' mask proposals are in a store (SAM runs only
   for the ones it lacks), unless the labeler needs none;
3. `label_view`: label them and write the three output fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.execution.work import LOCAL, ExecutionConfig
from fiftyone_usam.fiftyone_io.labeling import DEFAULT_LABEL_BATCH, ProposalLabeler, label_view
from fiftyone_usam.fiftyone_io.prompts import FieldPrompts, relabel_changed
from fiftyone_usam.fiftyone_io.writer import output_fields, plan_writes
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.proposals import ensure_embeddings

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.fiftyone_io.agreement import PromptAgreement


@dataclass
class PredictReport:
    """What a labelling run (`predict`, `baseline`) did.

    Attributes:
        fields: the output fields, by kind (``semantic``, ``instances``, ``uncertainty``).
        classes: the classes written (``mask_targets`` 1..C).
        total: samples in the view.
        labelled: samples labelled by this run.
        already_done: samples labelled before by a run with the same settings.
        failed: sample id -> reason, for samples that could not be labelled.
        skipped: sample id -> reason, for samples with no usable prompt in the prompt field.
        used_sam: whether SAM ran (False: every embedding came from the store).
        store: the EmbeddingStore read.
        seconds: wall time.
        agreement: with prompts that carry labels, how often the head agrees with them
            (`fiftyone_io.agreement.PromptAgreement`); None otherwise.
    """

    fields: dict[str, str]
    classes: tuple[str, ...] = ()
    total: int = 0
    labelled: int = 0
    already_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    used_sam: bool = False
    store: Path | None = None
    seconds: float = 0.0
    agreement: PromptAgreement | None = None

    def summary(self) -> str:
        """One line for people (and the prompts' agreement, when there is one)."""
        source = "SAM + store" if self.used_sam else "cached embeddings, SAM not loaded"
        skipped = f", {len(self.skipped)} without prompts" if self.skipped else ""
        line = (
            f"{self.labelled} labelled, {self.already_done} already labelled, "
            f"{len(self.failed)} failed{skipped}, of {self.total} samples -> "
            f"{', '.join(self.fields.values())} ({source}; {self.seconds:.1f} s)"
        )
        return line if self.agreement is None else f"{line}\n{self.agreement.summary()}"


@dataclass(frozen=True)
class ProposalSource:
    """Where a labeler's mask proposals come from.

    Attributes:
        wanted: a trained head (the store must fit it) or the spec of the proposals wanted.
        store: the store to read and add to; default: the one recorded on the dataset.
        sam, checkpoint: SAM for samples the store lacks.
        device: torch device for SAM.
        batch_size: images per SAM encoder call.
        shard_size: images per store shard written.
        max_pixels: larger images fail on their own, undecoded.
        execution: where SAM runs for them (this process, or Ray actors).
        prompts: a label field's prompts (for every sample labelled) instead of the grid.
    """

    wanted: Head | StoreSpec
    store: str | Path | None = None
    sam: Any = None
    checkpoint: str | Path | None = None
    device: str | torch.device | None = None
    batch_size: int = 4
    shard_size: int = 16
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    execution: ExecutionConfig = LOCAL
    prompts: FieldPrompts | None = None


def label_samples(
    view: fo.DatasetView,
    labeler: ProposalLabeler,
    report: PredictReport,
    *,
    field: str,
    settings: dict[str, Any],
    details: dict[str, Any],
    source: ProposalSource | None,
    overwrite: bool = False,
    mask_dir: str | Path | None = None,
    progress: bool | ProgressCallback | None = None,
    label_batch_size: int = DEFAULT_LABEL_BATCH,
    bulk_writes: bool = True,
) -> PredictReport:
    """Labels the view's samples that need it and fills ``report`` (the shared sequence).

    Args:
        view: the samples.
        labeler: U-SAM's predictor or a baseline labeler.
        report: the report to fill (``fields``, ``classes`` and ``total`` already set).
        field: the output fields' prefix.
        settings: what a re-run compares to resume (see `plan_writes`).
        details: recorded with the run besides the settings.
        source: where the proposals come from; None for a labeler that reads none.
        overwrite: replace existing output fields.
        mask_dir: write masks as PNG files here instead of into the documents.
        progress: a bar or a ``(done, total)`` callback.
        label_batch_size: samples per labeler call and per database write.
        bulk_writes: write batches with bulk ``set_values`` (False: sample by sample).

    Returns:
        ``report``.
    """
    todo = plan_writes(view, field, labeler.classes, settings, overwrite)
    if source is not None and source.prompts is not None:
        # a sample labelled from prompts that have changed since is labelled again
        todo = relabel_changed(view, output_fields(field)["instances"], todo, source.prompts)
    report.already_done = len(view) - len(todo)
    if not todo:
        return report
    store: EmbeddingStore | None = None
    if source is not None:
        store, report.failed, report.used_sam = ensure_embeddings(
            view.select(todo),
            source.wanted,
            store=source.store,
            sam=source.sam,
            checkpoint=source.checkpoint,
            device=source.device,
            batch_size=source.batch_size,
            shard_size=source.shard_size,
            max_pixels=source.max_pixels,
            execution=source.execution,
            progress=progress,
            prompts=source.prompts,
        )
        report.store = Path(store.path)
        todo = [i for i in todo if i not in report.failed]
    report.labelled = label_view(
        view,
        todo,
        labeler,
        store,
        field=field,
        settings=settings,
        details=details,
        mask_dir=mask_dir,
        progress=progress,
        failed=report.failed,
        batch_size=label_batch_size,
        bulk_writes=bulk_writes,
    )
    return report


def new_report(field: str, classes: tuple[str, ...], view: fo.DatasetView) -> PredictReport:
    """An empty report of a labelling run into ``field``."""
    return PredictReport(output_fields(field), classes, total=len(view))
