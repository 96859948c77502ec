"""`predict`: label a dataset's images with a trained head (``usam predict``).

The three output fields (see `fiftyone_usam.fiftyone_io.writer`) get the semantic map, the
instances and a per-sample uncertainty. When the dataset's EmbeddingStore already holds the
images (embedded with the head's SAM and grid), SAM is never loaded: re-labelling after
retraining the head takes seconds.

With ``prompt_field``, SAM is prompted with the boxes (or points) the dataset already has, and
the head names each one's mask: one instance per prompt, carrying the prompt's id.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.sam_backend import weights_sha256
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.execution.work import Engine, ExecutionConfig
from fiftyone_usam.fiftyone_io.agreement import prompt_agreement
from fiftyone_usam.fiftyone_io.datasets import resolve_view
from fiftyone_usam.fiftyone_io.labeling import DEFAULT_LABEL_BATCH
from fiftyone_usam.fiftyone_io.prompts import read_prompts
from fiftyone_usam.fiftyone_io.writer import output_fields
from fiftyone_usam.head.adapt_config import INGREDIENTS
from fiftyone_usam.head.checkpoint import resolve_head
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.inference.predictor import (
    DEFAULT_HEAD_THREADS,
    DEFAULT_NMS_IOU,
    Granularity,
    PredictorConfig,
    build_predictor,
)
from fiftyone_usam.inference.prompted import PromptLabels
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.labelling import PredictReport, ProposalSource, label_samples, new_report

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.head.classifier import Head
    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)


def head_record(model: Head) -> dict[str, Any]:
    """What a prediction run records of its head: its stage, and for an adapted head what it
    was adapted on (dataset, view, images, ingredients)."""
    record: dict[str, Any] = {"head_stage": model.stage}
    adaptation = model.provenance.get("adaptation")
    if adaptation:
        config = adaptation.get("config", {})
        record["adaptation"] = {
            "dataset": adaptation.get("dataset"),
            "view": adaptation.get("view"),
            "num_images": adaptation.get("num_images"),
            "source_head": adaptation.get("source_head"),
            "ingredients": [name for name in INGREDIENTS if config.get(name)],
        }
    return record


def predict(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    head: str | Path | Head,
    field: str = "usam",
    store: str | Path | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    view_tag: str | None = None,
    prompt_field: str | None = None,
    keep_prompt_labels: bool = False,
    threshold: float | None = None,
    nms_iou: float = DEFAULT_NMS_IOU,
    granularity: Granularity = "best",
    class_agnostic_nms: bool = False,
    groups: str | Path | Ontology | None = None,
    overwrite: bool = False,
    mask_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    shard_size: int = 16,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    label_batch_size: int = DEFAULT_LABEL_BATCH,
    bulk_writes: bool = True,
    head_threads: int | None = DEFAULT_HEAD_THREADS,
    engine: Engine = "local",
    workers: int = 1,
    gpus_per_worker: float | None = None,
    ray_address: str | None = None,
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
        prompt_field: label the masks of this field's prompts instead of the grid's: the
            boxes of a ``fo.Detections`` field or the points of a ``fo.Keypoints`` field. Each
            prompt gives one instance, kept even when the head calls it ``background``, with
            ``prompt_id`` (the label's id) and ``prompt_label`` (its own label, if any); a
            sample without prompts is skipped and reported. The head may have been trained
            on the grid: only SAM and the embedding must match. Its store is
            ``embeddings-<variant>-prompts-<field>``; a sample whose prompts changed is
            embedded (and labelled) again. When prompts carry labels, the head's agreement
            with them is reported and disagreeing samples are tagged ``usam:disagree``.
        keep_prompt_labels: write the prompts' own labels instead of the head's (SAM gives
            the masks); the head's label and confidence are kept as ``head_label`` and
            ``head_confidence``. Needs ``prompt_field``.
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
        shard_size: images per store shard, when SAM runs.
        max_pixels: when SAM runs, an image of more pixels fails on its own, undecoded.
        label_batch_size: samples per head forward pass and per database write (1: one at a
            time).
        bulk_writes: write each batch with three bulk ``set_values`` calls (False: build
            FiftyOne's label objects and save sample by sample; the same labels, slower).
        head_threads: torch threads of the head's forward passes on the CPU (None: torch's
            setting); one leaves the other core to the writes.
        engine, workers, gpus_per_worker, ray_address: where SAM runs for the samples the
            store lacks (`embed`'s; ``ray``: on Ray actors). Labelling from the store stays
            in this process: it is cheap.
        progress: a progress bar (True/False; None follows FiftyOne), or ``(done, total)``
            callback.

    Returns:
        A `PredictReport`; the run is recorded in ``dataset.info["usam_predictions"]``.
    """
    started = time.perf_counter()
    execution = ExecutionConfig(engine, workers, gpus_per_worker, ray_address)
    if keep_prompt_labels and not prompt_field:
        raise ConfigError("keep_prompt_labels keeps the labels of prompts: pass prompt_field too")
    view = resolve_view(dataset, view_tag)
    model, head_path = resolve_head(head, device)
    config = PredictorConfig(threshold, nms_iou, granularity, class_agnostic_nms)
    prompts = read_prompts(view, prompt_field) if prompt_field else None
    labels = None if prompts is None else PromptLabels(prompts.labels, keep_prompt_labels)
    predictor = build_predictor(model, config, groups, head_threads, labels)
    settings = {**predictor.describe(), "head_sha256": weights_sha256(model.model)}
    if prompt_field:
        settings["prompt_field"] = prompt_field
    report = new_report(field, predictor.classes, view)
    if prompts is not None:
        report.skipped = prompts.skipped
        view = view.select(list(prompts.sets))  # samples without prompts are only reported
    if len(view) == 0:
        logger.warning("predict: no sample of the view has a usable prompt in %r", prompt_field)
        return report
    label_samples(
        view,
        predictor,
        report,
        field=field,
        settings=settings,
        details={"head": head_path, **head_record(model)},
        source=ProposalSource(
            model,
            store,
            sam,
            checkpoint,
            device,
            batch_size,
            shard_size,
            max_pixels,
            execution,
            prompts,
        ),
        overwrite=overwrite,
        mask_dir=mask_dir,
        progress=progress,
        label_batch_size=label_batch_size,
        bulk_writes=bulk_writes,
    )
    if prompts is not None and any(prompts.labels.values()):
        instances = output_fields(field)["instances"]
        report.agreement = prompt_agreement(
            view, instances, predictor.predicted, keep_prompt_labels
        )
    report.seconds = time.perf_counter() - started
    logger.info("predict: %s", report.summary())
    return report
