"""`run`: from class names to a labelled (and, with ground truth, evaluated) dataset.

The chain is generate | crawl -> embed (training and target) -> train -> [adapt] -> predict ->
evaluate.
Every stage is skipped when its artifact is already complete and fits the configuration, so a
re-run after a crash, or after changing only the class list, does only the work that changed:

- training images: `generate` / `crawl` resume by themselves (a changed class list keeps the
  images of the classes it still names and adds the new ones);
- embeddings: a store recorded on the dataset with the same SAM variant and grid that holds
  every sample is reused without loading SAM. The training images' store keeps no masks by
  default (``training_masks="none"``: training reads only embeddings), though one an earlier
  run made with masks is reused; the target's keeps them (predict labels from its masks);
- the head: trained into ``<workdir>/heads/<key>``, where the key hashes the classes, the
  training images and the training settings; an existing complete head with that key is reused;
- adaptation (``adapt=True``): the adapted head goes to ``<head>/adapted-<key>``, the key
  hashing the head, the target's samples, the view and the seed; an existing one is reused;
- predictions: `predict` labels only samples not labelled yet with the same head and settings,
  and replaces the run's own earlier predictions when the head changed;
- evaluation: redone unless the stored one is of exactly these predictions (same head,
  settings and labelled samples).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.extractor import MASK_MODES, MaskMode
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.report import EvaluationReport
from fiftyone_usam.execution.work import Engine, ExecutionConfig
from fiftyone_usam.fiftyone_io.datasets import resolve_view, usam_dir
from fiftyone_usam.fiftyone_io.labeling import DEFAULT_LABEL_BATCH
from fiftyone_usam.ontology import Ontology, load_ontology
from fiftyone_usam.sources import Source
from fiftyone_usam.sources.engines import ENGINES as CRAWL_ENGINES
from fiftyone_usam.stages.pipeline_steps import (
    DEFAULT_PER_CLASS,
    SamCache,
    adapt_step,
    embed_step,
    evaluate_step,
    predict_step,
    train_step,
    training_images_step,
)

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

logger = logging.getLogger(__name__)

StageProgress = Callable[[str, int, int], None]
"""A pipeline progress callback: ``(stage, done, total)`` after each unit of a stage's work."""

STAGES = (
    "training images",
    "embed training",
    "embed target",
    "train",
    "adapt",  # only with adapt=True
    "predict",
    "evaluate",
)


@dataclass
class StageResult:
    """One stage of a pipeline run: ``ran`` or ``skipped`` (already complete), and how long."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PipelineReport:
    """What `run` did and where everything is.

    Attributes:
        dataset: the labelled target dataset.
        training_dataset: the dataset of training images.
        workdir: the run's directory (heads).
        head: the trained head's directory (``student/`` and ``teacher/`` inside).
        adapted: with ``adapt``, the adapted head the target was labelled with.
        stores: dataset name -> EmbeddingStore directory.
        fields: the prediction fields by kind.
        stages: every stage, in order.
        evaluation: the evaluation, when ground truth was given.
    """

    dataset: str
    training_dataset: str
    workdir: Path
    head: Path | None = None
    adapted: Path | None = None
    stores: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    stages: list[StageResult] = field(default_factory=list)
    evaluation: EvaluationReport | None = None

    def stage(self, name: str) -> StageResult:
        """The result of the stage called ``name``."""
        return next(s for s in self.stages if s.name == name)

    def summary(self) -> str:
        """A few lines for people: the stages, where things are, how to look, the metrics."""
        lines = ["U-SAM run:"]
        for s in self.stages:
            detail = "; ".join(s.detail.splitlines())
            lines.append(f"  {s.name:<16} {s.status:<8} {detail} ({s.seconds:.1f} s)")
        lines.append(f"  training images: dataset {self.training_dataset!r}")
        for name, path in self.stores.items():
            lines.append(f"  embeddings of {name!r}: {path}")
        if self.head is not None:
            lines.append(f"  head: {self.head}")
        if self.adapted is not None:
            lines.append(f"  adapted head (labelled the target): {self.adapted}")
        lines.append(f"  labels: {', '.join(self.fields.values())} on dataset {self.dataset!r}")
        if self.evaluation is not None:
            lines.append(f"  metrics: {self.evaluation.summary()}")
        lines.append(f"Open it in the App: fiftyone app launch {self.dataset}")
        return "\n".join(lines)


def run(
    classes: str | Path | Sequence[str] | Ontology,
    *,
    dataset: str | fo.Dataset | fo.DatasetView,
    source: Source = "synthetic",
    per_class: int | None = None,
    sam: str | None = None,
    checkpoint: str | Path | None = None,
    workdir: str | Path | None = None,
    gt_field: str | None = None,
    field: str = "usam",
    training_dataset: str | None = None,
    model: str | Path | None = None,
    steps: int = 50,
    crawl_engine: str = "bing",
    urls_file: str | Path | None = None,
    points_per_side: int = 10,
    training_masks: MaskMode = "none",
    epochs: int | None = None,
    superclasses: bool = False,
    seed: int = 0,
    threshold: float | None = None,
    adapt: bool = False,
    adapt_view: str | None = "hflip",
    view_tag: str | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    label_batch_size: int = DEFAULT_LABEL_BATCH,
    engine: Engine = "local",
    workers: int = 1,
    gpus_per_worker: float | None = None,
    ray_address: str | None = None,
    progress: bool | StageProgress | None = None,
) -> PipelineReport:
    """Runs the whole chain for ``classes`` and labels ``dataset`` (resumable; see module doc).

    Args:
        classes: the class names: ``"a,b,c"``, a list, a YAML ontology or an `Ontology`.
        dataset: the FiftyOne dataset (name, dataset or view) to label; it must exist.
        source: ``synthetic`` (Stable Diffusion) or ``crawl`` (web images) training images.
        per_class: training images per class; default 200 synthetic, 45 crawled.
        sam: SAM variant (``vit_b``, ``vit_l``, ``vit_h`` or a custom config); default: the one
            described beside ``checkpoint``, else ``vit_b``.
        checkpoint: SAM weights; default: the official checkpoint (cached or downloaded).
        workdir: where heads go; default ``<FiftyOne dataset dir>/usam/<dataset>/run``.
        gt_field: ground truth on ``dataset``; when given, the predictions are evaluated.
        field: prefix of the prediction fields.
        training_dataset: the training images' dataset; default ``<dataset>-usam-<source>``.
        model: the diffusers pipeline (hub id or directory); default Stable Diffusion v1.4.
        steps: denoising steps of generation.
        crawl_engine: the crawl engine (``bing``, ``google``, ``baidu``, ``flickr`` or
            ``urls``).
        urls_file: ``class<TAB>url`` lines, for ``crawl_engine="urls"``.
        points_per_side: the prompt grid (10: d = 100 masks per image, as in the paper).
        training_masks: ``none`` (default) embeds the training images without their masks
            (about half the store; training reads only the embeddings); ``full`` keeps them.
            The target's store always keeps its masks.
        epochs: head training epochs per stage; default: the training config's.
        superclasses: train on the ontology's superclasses (and evaluate the ground truth by
            superclass); the images are still generated per class.
        seed: seed of generation and training.
        threshold: prediction threshold; default: the head's.
        adapt: adapt the head to the target's images (`stages.adapt`, no labels) between
            train and predict, and label the target with the adapted head.
        adapt_view: the augmented view of that adaptation (one more SAM pass over the
            target, embeddings only); None: no view.
        view_tag: label (and evaluate) only the target samples with this tag.
        overwrite: allow replacing prediction fields this pipeline did not write.
        device: torch device for every stage.
        label_batch_size: predict's samples per head pass and per database write.
        engine, workers, gpus_per_worker, ray_address: where generation and SAM run
            (`embed`'s; ``ray``: on Ray actors). Crawling, training and labelling from the
            store stay in this process.
        progress: True for bars, False for none, or ``callback(stage, done, total)``.

    Raises:
        USAMError: whatever a stage raises; work finished before it is kept.
    """
    _check(source, training_masks, engine)
    execution = ExecutionConfig(engine, workers, gpus_per_worker, ray_address)
    ontology = load_ontology(classes)
    target = resolve_view(dataset, view_tag)
    train_name = training_dataset or f"{target.dataset_name}-usam-{source}"
    out = Path(workdir).expanduser() if workdir else _default_workdir(target.dataset_name)
    report = PipelineReport(target.dataset_name, train_name, out)
    sam_cache = SamCache(sam, checkpoint, device)
    with _stage(report, "training images") as stage:
        stage.detail, ran = training_images_step(
            ontology, train_name, source, per_class, model, steps, crawl_engine, urls_file,
            seed, device, _progress(progress, "training images"), execution,
        )  # fmt: skip
        stage.status = "ran" if ran else "skipped"
    train_view = resolve_view(train_name)
    embeds: tuple[tuple[str, fo.DatasetView, MaskMode], ...] = (
        ("embed training", train_view, training_masks),
        ("embed target", target, "full"),  # predict labels from its masks
    )
    for name, view, masks in embeds:
        with _stage(report, name) as stage:
            store, ran, stage.detail = embed_step(
                view, sam_cache, points_per_side, masks, _progress(progress, name), execution
            )
            report.stores[view.dataset_name] = store
            stage.status = "ran" if ran else "skipped"
    with _stage(report, "train") as stage:
        report.head, ran, stage.detail = train_step(
            train_view, ontology, report.stores[train_name], out, epochs, superclasses, seed,
            device, _progress(progress, "train"),
        )  # fmt: skip
        stage.status = "ran" if ran else "skipped"
    if adapt:
        with _stage(report, "adapt") as stage:
            report.adapted, ran, stage.detail = adapt_step(
                target, report.head, report.stores[target.dataset_name], adapt_view, seed,
                sam_cache, device, _progress(progress, "adapt"),
            )  # fmt: skip
            stage.status = "ran" if ran else "skipped"
    with _stage(report, "predict") as stage:
        pred = predict_step(
            target, report.adapted or report.head, report.stores[target.dataset_name], field,
            out, threshold,
            overwrite, sam_cache, device, _progress(progress, "predict"), label_batch_size,
            execution,
        )  # fmt: skip
        report.fields = pred.fields
        stage.status = "ran" if pred.labelled else "skipped"
        stage.detail = pred.summary()
    _evaluate(report, target, field, gt_field, ontology if superclasses else None, progress)
    logger.info("%s", report.summary())
    return report


def _evaluate(
    report: PipelineReport,
    target: fo.DatasetView,
    field: str,
    gt_field: str | None,
    groups: Ontology | None,
    progress: bool | StageProgress | None,
) -> None:
    """The evaluate stage (skipped without ground truth)."""
    with _stage(report, "evaluate") as stage:
        if gt_field is None:
            stage.status, stage.detail = "skipped", "no --gt-field"
            return
        report.evaluation, ran = evaluate_step(
            target,
            field,
            gt_field,
            report.workdir / "evaluation",
            groups,
            _progress(progress, "evaluate"),
        )
        stage.status = "ran" if ran else "skipped"
        stage.detail = report.evaluation.summary()


def _check(source: str, training_masks: str, engine: str) -> None:
    """Refuses unknown options, with what to pass instead."""
    if source not in DEFAULT_PER_CLASS:
        raise ConfigError(f"source must be 'synthetic' or 'crawl', not {source!r}")
    if training_masks not in MASK_MODES:
        raise ConfigError(f"training_masks must be 'full' or 'none', not {training_masks!r}")
    if engine in CRAWL_ENGINES:
        raise ConfigError(
            f"engine chooses where the work runs (local or ray); for the crawl engine pass "
            f"crawl_engine={engine!r} (--crawl-engine {engine})"
        )


class _stage:
    """Times a stage and appends its result to the report (also when it fails)."""

    def __init__(self, report: PipelineReport, name: str) -> None:
        self.result = StageResult(name, "failed")
        self.report = report

    def __enter__(self) -> StageResult:
        self.started = time.perf_counter()
        logger.info("stage: %s", self.result.name)
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.result.seconds = time.perf_counter() - self.started
        self.report.stages.append(self.result)


def _default_workdir(dataset_name: str) -> Path:
    return usam_dir(dataset_name) / "run"


def _progress(progress: bool | StageProgress | None, stage: str) -> Any:
    if callable(progress):
        return lambda done, total: progress(stage, done, total)
    return progress
