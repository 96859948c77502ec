"""`baseline`: label a dataset with a baseline (``usam baseline``), for comparison with U-SAM.

A baseline writes the same three fields as ``usam predict`` (``<field>_semantic``,
``<field>_instances``, ``<field>_uncertainty``) through the same writer, with the same rules:
existing fields are never replaced without ``overwrite``, and a re-run with the same settings
labels only the samples not labelled yet. ``sam-clip`` reads the SAM mask proposals of the
dataset's EmbeddingStore (embedding the samples it lacks); ``otsu`` needs neither SAM nor CLIP.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.datasets import resolve_view
from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology
from fiftyone_usam.fiftyone_io.writer import output_fields
from fiftyone_usam.inference.clip_backend import DEFAULT_CLIP_MODEL, load_clip
from fiftyone_usam.inference.labelers import (
    METHODS,
    SAM_CLIP_THRESHOLD,
    Method,
    OtsuLabeler,
    SamClipLabeler,
)
from fiftyone_usam.inference.predictor import DEFAULT_NMS_IOU, Granularity, PredictorConfig
from fiftyone_usam.ontology import Ontology, load_ontology
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.labelling import PredictReport, ProposalSource, label_samples
from fiftyone_usam.stages.proposals import proposal_spec

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

logger = logging.getLogger(__name__)


@dataclass
class BaselineReport(PredictReport):
    """What a `baseline` run did: a `PredictReport` and the method.

    Attributes:
        method: ``sam-clip`` or ``otsu``.
    """

    method: str = ""

    def summary(self) -> str:
        """One line for people."""
        if self.method == "otsu":
            source = "image only"
        elif self.used_sam:
            source = "SAM + store"
        else:
            source = "cached proposals, SAM not loaded"
        return (
            f"{self.method}: {self.labelled} labelled, {self.already_done} already labelled, "
            f"{len(self.failed)} failed, of {self.total} samples -> "
            f"{', '.join(self.fields.values())} ({source}; {self.seconds:.1f} s)"
        )


def baseline(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    method: Method,
    field: str,
    classes: str | Path | Ontology | None = None,
    clip_model: str | Path = DEFAULT_CLIP_MODEL,
    threshold: float = SAM_CLIP_THRESHOLD,
    nms_iou: float = DEFAULT_NMS_IOU,
    granularity: Granularity = "best",
    class_agnostic_nms: bool = False,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    store: str | Path | None = None,
    points_per_side: int = 10,
    view_tag: str | None = None,
    overwrite: bool = False,
    mask_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    clip_batch_size: int = 32,
    progress: bool | ProgressCallback | None = None,
) -> BaselineReport:
    """Labels the samples of a view with a baseline.

    Args:
        dataset: a dataset name, dataset or view.
        method: ``sam-clip`` (SAM's masks classified by CLIP) or ``otsu`` (class-agnostic
            foreground by Otsu's threshold).
        field: prefix of the output fields ``<field>_semantic``, ``<field>_instances``,
            ``<field>_uncertainty``.
        classes: sam-clip: an ontology (YAML file or `Ontology`) or a comma-separated list;
            default: the ontology stored on the dataset. Not for otsu (its class is
            ``foreground``).
        clip_model: sam-clip: a Hugging Face Hub id or a ``save_pretrained`` directory.
        threshold: sam-clip: minimum CLIP class probability of a mask (0.7 in the paper).
        nms_iou: sam-clip: mask-IoU above which the less confident of two masks is dropped.
        granularity: sam-clip: which of SAM's 3 masks per point (see `PredictorConfig`).
        class_agnostic_nms: sam-clip: suppress overlapping masks across classes too.
        sam: sam-clip: SAM for samples not in the store (and, with no store, which store).
        checkpoint: sam-clip: SAM weights for them.
        store: sam-clip: the EmbeddingStore of the proposals; default: the newest recorded on
            the dataset, else a new one made with ``sam`` (see `proposal_spec`).
        points_per_side: sam-clip: prompt grid when a new store is made.
        view_tag: only the samples with this tag.
        overwrite: replace existing output fields.
        mask_dir: write masks as PNG files here instead of into the sample documents.
        device: torch device for SAM and CLIP.
        clip_batch_size: sam-clip: masks per CLIP forward pass.
        progress: a progress bar (True/False; None follows FiftyOne), or ``(done, total)``
            callback.

    Returns:
        A `BaselineReport`; the run is recorded in ``dataset.info["usam_predictions"]``.

    Raises:
        ConfigError: an unknown method, or options that do not apply to it.
    """
    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    if method == "otsu":
        _refuse_for_otsu(classes=classes, sam=sam, checkpoint=checkpoint, store=store)
        report = _run_otsu(view, field, overwrite, mask_dir, progress)
    elif method == "sam-clip":
        config = PredictorConfig(threshold, nms_iou, granularity, class_agnostic_nms)
        report = _run_sam_clip(
            view,
            field,
            _ontology(view, classes),
            config,
            clip_model=clip_model,
            sources={"sam": sam, "checkpoint": checkpoint, "store": store},
            points_per_side=points_per_side,
            overwrite=overwrite,
            mask_dir=mask_dir,
            device=device,
            clip_batch_size=clip_batch_size,
            progress=progress,
        )
    else:
        raise ConfigError(f"unknown baseline method {method!r}: use one of {', '.join(METHODS)}")
    report.seconds = time.perf_counter() - started
    logger.info("baseline: %s", report.summary())
    return report


def _run_otsu(
    view: fo.DatasetView,
    field: str,
    overwrite: bool,
    mask_dir: str | Path | None,
    progress: bool | ProgressCallback | None,
) -> BaselineReport:
    labeler = OtsuLabeler()
    report = BaselineReport(output_fields(field), labeler.classes, total=len(view), method="otsu")
    label_samples(
        view,
        labeler,
        report,
        field=field,
        settings=labeler.describe(),
        details={"baseline": "otsu"},
        source=None,
        overwrite=overwrite,
        mask_dir=mask_dir,
        progress=progress,
    )
    return report


def _run_sam_clip(
    view: fo.DatasetView,
    field: str,
    ontology: Ontology,
    config: PredictorConfig,
    *,
    clip_model: str | Path,
    sources: dict[str, Any],
    points_per_side: int,
    overwrite: bool,
    mask_dir: str | Path | None,
    device: Any,
    clip_batch_size: int,
    progress: bool | ProgressCallback | None,
) -> BaselineReport:
    spec, loaded_sam = proposal_spec(
        view, points_per_side=points_per_side, device=device, **sources
    )
    labeler = SamClipLabeler(
        load_clip(clip_model, device=device), ontology, config, batch_size=clip_batch_size
    )
    report = BaselineReport(
        output_fields(field), labeler.classes, total=len(view), method="sam-clip"
    )
    source = ProposalSource(
        spec,
        store=sources["store"],
        sam=loaded_sam or sources["sam"],
        checkpoint=None if loaded_sam is not None else sources["checkpoint"],
        device=device,
    )
    label_samples(
        view,
        labeler,
        report,
        field=field,
        settings={**labeler.describe(), "proposals": config_to_dict(spec)},
        details={"baseline": "sam-clip", "clip_model": labeler.clip.name},
        source=source,
        overwrite=overwrite,
        mask_dir=mask_dir,
        progress=progress,
    )
    return report


def _ontology(view: fo.DatasetView, classes: str | Path | Ontology | None) -> Ontology:
    if classes is not None:
        return load_ontology(classes)
    stored = stored_ontology(view)
    if stored is None:
        raise ConfigError(
            f"dataset {view.dataset_name!r} has no stored ontology, so SAM+CLIP does not know "
            "the classes: name them, e.g. --classes 'cat,dog' or --classes ontology.yaml"
        )
    return stored


def _refuse_for_otsu(**given: Any) -> None:
    named = [name for name, value in given.items() if value is not None]
    if named:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in named)
        raise ConfigError(
            f"otsu is class-agnostic and reads no SAM proposals: {options} do(es) not apply. "
            "Leave them out, or use --method sam-clip"
        )
