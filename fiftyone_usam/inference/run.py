"""`predict`: label a dataset's images with a trained head (``usam predict``).

The three output fields (see `fiftyone_usam.fiftyone_io.writer`) get the semantic map, the
instances and a per-sample uncertainty. When the dataset's EmbeddingStore already holds the
images (embedded with the head's SAM and grid), SAM is never loaded: re-labelling after
retraining the head takes seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.inference.labeling import label_view
from fiftyone_usam.inference.predictor import DEFAULT_NMS_IOU, Granularity, PredictorConfig
from fiftyone_usam.progress import ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.head.classifier import Head
    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)


@dataclass
class PredictReport:
    """What a `predict` run did.

    Attributes:
        fields: the output fields, by kind (``semantic``, ``instances``, ``uncertainty``).
        classes: the classes written (``mask_targets`` 1..C).
        total: samples in the view.
        labelled: samples labelled by this run.
        already_done: samples labelled before by a run with the same settings.
        failed: sample id -> reason, for samples that could not be labelled.
        used_sam: whether SAM ran (False: every embedding came from the store).
        store: the EmbeddingStore read.
        seconds: wall time.
    """

    fields: dict[str, str]
    classes: tuple[str, ...] = ()
    total: int = 0
    labelled: int = 0
    already_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    used_sam: bool = False
    store: Path | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people."""
        source = "SAM + store" if self.used_sam else "cached embeddings, SAM not loaded"
        return (
            f"{self.labelled} labelled, {self.already_done} already labelled, "
            f"{len(self.failed)} failed, of {self.total} samples -> "
            f"{', '.join(self.fields.values())} ({source}; {self.seconds:.1f} s)"
        )


def predict(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    head: str | Path | Head,
    field: str = "usam",
    store: str | Path | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    view_tag: str | None = None,
    threshold: float | None = None,
    nms_iou: float = DEFAULT_NMS_IOU,
    granularity: Granularity = "best",
    class_agnostic_nms: bool = False,
    groups: str | Path | Ontology | None = None,
    overwrite: bool = False,
    mask_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    progress: bool | ProgressCallback | None = None,
) -> PredictReport:
    """Labels the samples of a view with a trained head.

    Args:
        dataset: a dataset name, dataset or view.
        head: a head checkpoint directory (or a ``usam train --out`` directory), or a `Head`.
        field: prefix of the output fields ``<field>_semantic``, ``<field>_instances``,
            ``<field>_uncertainty``.
        store: the EmbeddingStore to read; default: the one recorded on the dataset that fits
            the head (samples it lacks are embedded into it).
        sam: SAM for samples not in the store; default: the head's recorded variant.
        checkpoint: SAM weights for them; default: that variant's official checkpoint.
        view_tag: only the samples with this tag.
        threshold: minimum class probability; default: the head's own.
        nms_iou: mask-IoU above which the less confident of two masks is dropped.
        granularity: ``best``, ``coarse``, ``medium``, ``fine`` or ``all`` (see
            `PredictorConfig`).
        class_agnostic_nms: suppress overlapping masks across classes too.
        groups: an ontology with superclasses; the head's classes are merged into them.
        overwrite: replace existing output fields (otherwise an error, or a resume when they
            come from a run with the same settings).
        mask_dir: write masks as PNG files here instead of into the sample documents.
        device: torch device for SAM and the head.
        batch_size: images per SAM encoder call, when SAM runs.
        progress: a progress bar (True/False; None follows FiftyOne), or ``(done, total)``
            callback.

    Returns:
        A `PredictReport`; the run is recorded in ``dataset.info["usam_predictions"]``.
    """
    from fiftyone_usam.embeddings.sam_backend import weights_sha256
    from fiftyone_usam.fiftyone_io.datasets import resolve_view
    from fiftyone_usam.fiftyone_io.writer import output_fields, plan_writes
    from fiftyone_usam.inference.embedding_source import ensure_embeddings

    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    model, head_path = _head(head, device)
    config = PredictorConfig(threshold, nms_iou, granularity, class_agnostic_nms)
    predictor = _predictor(model, config, groups)
    settings = {**predictor.describe(), "head_sha256": weights_sha256(model.model)}
    todo = plan_writes(view, field, predictor.classes, settings, overwrite)
    report = PredictReport(output_fields(field), predictor.classes, total=len(view))
    report.already_done = len(view) - len(todo)
    if todo:
        store_obj, report.failed, report.used_sam = ensure_embeddings(
            view.select(todo),
            model,
            store=store,
            sam=sam,
            checkpoint=checkpoint,
            device=device,
            batch_size=batch_size,
            progress=progress,
        )
        report.store = Path(store_obj.path)
        todo = [i for i in todo if i not in report.failed]
        report.labelled = label_view(
            view,
            todo,
            predictor,
            store_obj,
            field=field,
            settings=settings,
            details={"head": head_path},
            mask_dir=mask_dir,
            progress=progress,
        )
    report.seconds = time.perf_counter() - started
    logger.info("predict: %s", report.summary())
    return report


def _head(head: Any, device: Any) -> tuple[Head, str | None]:
    from fiftyone_usam.head.checkpoint import load_head

    if isinstance(head, (str, Path)):
        return load_head(head, device=device), str(Path(head).expanduser().resolve())
    if device is not None:
        head.to(device)
    return head, None


def _predictor(model: Head, config: PredictorConfig, groups: Any) -> Any:
    from fiftyone_usam.inference.predictor import USAMPredictor
    from fiftyone_usam.ontology import load_ontology

    return USAMPredictor(model, config, groups=load_ontology(groups) if groups else None)
