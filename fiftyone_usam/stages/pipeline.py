"""`run`: from class names to a labelled (and, with ground truth, evaluated) dataset.

The chain is generate | crawl -> embed (training and target) -> train -> predict -> evaluate.
Every stage is skipped when its artifact is already complete and fits the configuration, so a
re-run after a crash, or after changing only the class list, does only the work that changed:

- training images: `generate` / `crawl` resume by themselves (a changed class list keeps the
  images of the classes it still names and adds the new ones);
- embeddings: a store recorded on the dataset with the same SAM variant and grid that holds
  every sample is reused without loading SAM;
- the head: trained into ``<workdir>/heads/<key>``, where the key hashes the classes, the
  training images and the training settings; an existing complete head with that key is reused;
- predictions: `predict` labels only samples not labelled yet with the same head and settings,
  and replaces the run's own earlier predictions when the head changed;
- evaluation: redone unless the stored one is of exactly these predictions (same head,
  settings and labelled samples).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fiftyone_usam.embeddings.sam_backend import load_sam
from fiftyone_usam.embeddings.sam_checkpoints import file_sha256
from fiftyone_usam.embeddings.sam_variants import resolve_variant
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.report import EvaluationReport
from fiftyone_usam.fiftyone_io.datasets import (
    default_store_path,
    recorded_stores,
    resolve_view,
    root_dataset,
)
from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology
from fiftyone_usam.fiftyone_io.writer import FieldExistsError, output_fields, recorded_run
from fiftyone_usam.ontology import Ontology, load_ontology
from fiftyone_usam.stages.crawl import crawl
from fiftyone_usam.stages.embed import embed, spec_for
from fiftyone_usam.stages.evaluate import evaluate
from fiftyone_usam.stages.generate import DEFAULT_MODEL, generate
from fiftyone_usam.stages.predict import predict
from fiftyone_usam.stages.train import train_head

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.embeddings.sam_backend import LoadedSam
    from fiftyone_usam.evaluation.report import EvaluationReport
    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)

Source = Literal["synthetic", "crawl"]
StageProgress = Callable[[str, int, int], None]
"""A pipeline progress callback: ``(stage, done, total)`` after each unit of a stage's work."""

STAGES = ("training images", "embed training", "embed target", "train", "predict", "evaluate")
DEFAULT_PER_CLASS = {"synthetic": 200, "crawl": 45}


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
        stores: dataset name -> EmbeddingStore directory.
        fields: the prediction fields by kind.
        stages: every stage, in order.
        evaluation: the evaluation, when ground truth was given.
    """

    dataset: str
    training_dataset: str
    workdir: Path
    head: Path | None = None
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
    engine: str = "bing",
    urls_file: str | Path | None = None,
    points_per_side: int = 10,
    epochs: int | None = None,
    superclasses: bool = False,
    seed: int = 0,
    threshold: float | None = None,
    view_tag: str | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
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
        engine: the crawl engine (``bing``, ``google``, ``baidu``, ``flickr`` or ``urls``).
        urls_file: ``class<TAB>url`` lines, for ``engine="urls"``.
        points_per_side: the prompt grid (10: d = 100 masks per image, as in the paper).
        epochs: head training epochs per stage; default: the training config's.
        superclasses: train on the ontology's superclasses (and evaluate the ground truth by
            superclass); the images are still generated per class.
        seed: seed of generation and training.
        threshold: prediction threshold; default: the head's.
        view_tag: label (and evaluate) only the target samples with this tag.
        overwrite: allow replacing prediction fields this pipeline did not write.
        device: torch device for every stage.
        progress: True for bars, False for none, or ``callback(stage, done, total)``.

    Raises:
        USAMError: whatever a stage raises; work finished before it is kept.
    """

    if source not in DEFAULT_PER_CLASS:
        raise ConfigError(f"source must be 'synthetic' or 'crawl', not {source!r}")
    ontology = load_ontology(classes)
    target = resolve_view(dataset, view_tag)
    train_name = training_dataset or f"{target.dataset_name}-usam-{source}"
    out = Path(workdir).expanduser() if workdir else _default_workdir(target.dataset_name)
    report = PipelineReport(target.dataset_name, train_name, out)
    sam_cache = _SamCache(sam, checkpoint, device)

    with _stage(report, "training images") as stage:
        stage.detail, ran = _training_images(
            ontology,
            train_name,
            source,
            per_class,
            model,
            steps,
            engine,
            urls_file,
            seed,
            device,
            _progress(progress, "training images"),
        )
        stage.status = "ran" if ran else "skipped"
    train_view = resolve_view(train_name)
    for name, view in (("embed training", train_view), ("embed target", target)):
        with _stage(report, name) as stage:
            store, ran, stage.detail = _embed(
                view, sam_cache, points_per_side, _progress(progress, name)
            )
            report.stores[view.dataset_name] = store
            stage.status = "ran" if ran else "skipped"
    with _stage(report, "train") as stage:
        report.head, ran, stage.detail = _train(
            train_view,
            ontology,
            report.stores[train_name],
            out,
            epochs,
            superclasses,
            seed,
            device,
            _progress(progress, "train"),
        )
        stage.status = "ran" if ran else "skipped"
    with _stage(report, "predict") as stage:
        pred = _predict(
            target,
            report.head,
            report.stores[target.dataset_name],
            field,
            out,
            threshold,
            overwrite,
            sam_cache,
            device,
            _progress(progress, "predict"),
        )
        report.fields = pred.fields
        stage.status = "ran" if pred.labelled else "skipped"
        stage.detail = pred.summary()
    with _stage(report, "evaluate") as stage:
        if gt_field is None:
            stage.status, stage.detail = "skipped", "no --gt-field"
        else:
            report.evaluation, ran = _evaluate(
                target,
                field,
                gt_field,
                out / "evaluation",
                ontology if superclasses else None,
                _progress(progress, "evaluate"),
            )
            stage.status = "ran" if ran else "skipped"
            stage.detail = report.evaluation.summary()
    logger.info("%s", report.summary())
    return report


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


class _SamCache:
    """Loads SAM once, and only when a stage has images to embed."""

    def __init__(self, sam: str | None, checkpoint: str | Path | None, device: Any) -> None:

        self.sam, self.checkpoint, self.device = sam, checkpoint, device
        variant = resolve_variant(sam, checkpoint)
        self.variant = variant.name
        self.official_sha256 = variant.checkpoint_sha256  # the official weights', if any
        self._loaded: LoadedSam | None = None
        self._sha256: str | None = None

    def get(self) -> LoadedSam:

        if self._loaded is None:
            self._loaded = load_sam(self.sam, self.checkpoint, device=self.device)
        return self._loaded

    def weights_sha256(self) -> str | None:
        """The weights' hash: of the named checkpoint file, else of the variant's official
        checkpoint (None for a custom variant without a file: any store of it is taken)."""

        if self._loaded is not None:
            return self._loaded.checkpoint_sha256
        if not self.checkpoint:
            return self.official_sha256
        if self._sha256 is None:  # hashed once per run (GBs for vit_h)
            self._sha256 = file_sha256(Path(self.checkpoint).expanduser())
        return self._sha256


def _training_images(
    ontology: Ontology,
    name: str,
    source: str,
    per_class: int | None,
    model: str | Path | None,
    steps: int,
    engine: str,
    urls_file: str | Path | None,
    seed: int,
    device: Any,
    progress: Any,
) -> tuple[str, bool]:
    """Generates or crawls what is missing; keeps images of classes dropped from the list."""
    import fiftyone as fo

    count = per_class if per_class is not None else DEFAULT_PER_CLASS[source]
    stored = stored_ontology(fo.load_dataset(name)) if fo.dataset_exists(name) else None
    if stored is not None:  # keep the dataset's classes (and ids), add the new ones at the end
        extra = tuple(spec for spec in ontology.classes if spec.name not in stored)
        ontology = Ontology(stored.classes + extra, prompt=ontology.prompt)
    if source == "synthetic":
        g = generate(
            ontology,
            dataset=name,
            per_class=count,
            model=model or DEFAULT_MODEL,
            steps=steps,
            seed=seed,
            device=device,
            progress=progress,
        )
        return g.summary(), g.generated > 0

    c = crawl(
        ontology,
        dataset=name,
        per_class=count,
        engine=engine,
        urls_file=urls_file,
        progress=progress,
    )
    return c.summary(), c.kept > 0


def _embed(
    view: fo.DatasetView, sam: _SamCache, points_per_side: int, progress: Any
) -> tuple[Path, bool, str]:
    """Reuses a complete recorded store of the same SAM and grid, else embeds what is missing."""

    ids = set(view.values("id"))
    sha = sam.weights_sha256()
    for entry in reversed(recorded_stores(view)):
        spec = entry.get("spec", {})
        if spec.get("sam_variant") != sam.variant or spec.get("points_per_side") != points_per_side:
            continue
        if sha is not None and spec.get("checkpoint_sha256") != sha:
            continue
        path = Path(entry["path"])
        if (path / "spec.json").is_file() and ids <= EmbeddingStore.open(path).sample_ids():
            return path, False, f"{len(ids)} samples already in {path}"
    loaded = sam.get()
    target = _store_path(view, spec_for(loaded, points_per_side))
    result = embed(
        view, store=target, sam=loaded, points_per_side=points_per_side, progress=progress
    )
    return Path(result.store), result.embedded > 0, result.summary()


def _store_path(view: fo.DatasetView, spec: Any) -> Path:
    """The default store path, or beside it when that holds another SAM's embeddings (e.g. the
    same variant with other weights)."""

    path = default_store_path(view.dataset_name, spec)
    if (path / "spec.json").is_file() and EmbeddingStore.open(path).spec != spec:
        path = path.with_name(f"{path.name}-{spec.checkpoint_sha256[:12]}")
    return path


def _train(
    view: fo.DatasetView,
    ontology: Ontology,
    store: Path,
    workdir: Path,
    epochs: int | None,
    superclasses: bool,
    seed: int,
    device: Any,
    progress: Any,
) -> tuple[Path, bool, str]:
    """Trains a head unless one with the same classes, images and settings is complete."""
    from fiftyone import ViewField as F

    names = list(ontology.names)
    view = view.match(F("ground_truth.label").is_in(names))  # classes dropped from the list
    ids = sorted(view.values("id"))
    key_data = {
        "classes": names,
        "superclasses": ontology.superclasses() if superclasses else None,
        "images": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "store": json.loads((store / "spec.json").read_text()),
        "epochs": epochs,
        "seed": seed,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()
    head = workdir / "heads" / key[:16]
    if (head / "student" / "head.json").is_file():
        return head, False, f"head for [{', '.join(names)}] already trained: {head}"
    result = train_head(
        view,
        store=store,
        out=head,
        classes=ontology,
        superclasses=superclasses,
        epochs=epochs,
        seed=seed,
        device=None if device is None else str(device),
        progress=progress,
    )
    return head, True, result.summary()


def _predict(
    view: fo.DatasetView,
    head: Path | None,
    store: Path,
    field: str,
    workdir: Path,
    threshold: float | None,
    overwrite: bool,
    sam: _SamCache,
    device: Any,
    progress: Any,
) -> Any:
    """Labels the target; replaces this pipeline's own older predictions when the head changed."""

    assert head is not None
    previous = recorded_run(view, field) or {}
    ours = str(previous.get("head", "")).startswith(str(workdir.resolve() / "heads"))
    options = dict(
        head=head,
        field=field,
        store=store,
        checkpoint=sam.checkpoint,
        sam=sam.sam,
        threshold=threshold,
        device=device,
        progress=progress,
    )
    try:  # same head and settings: resumes (labels only what is missing)
        return predict(view, overwrite=overwrite, **options)
    except FieldExistsError:
        if not ours:  # someone else's predictions: only --overwrite replaces them
            raise
    return predict(view, overwrite=True, **options)  # our own, from another head or settings


def _evaluate(
    view: fo.DatasetView,
    field: str,
    gt_field: str,
    report_dir: Path,
    groups: Ontology | None,
    progress: Any,
) -> tuple[EvaluationReport, bool]:
    """Evaluates unless the stored evaluation is of exactly these predictions."""

    key = f"{field}_eval"
    run_record = recorded_run(view, field) or {}
    fingerprint = {
        "gt_field": gt_field,
        "groups": None if groups is None else groups.to_dict(),
        "head": run_record.get("head"),
        "settings": run_record.get("settings"),
        "recorded": run_record.get("updated_at"),
        "labelled": view.count(output_fields(field)["semantic"]),
        "samples": sorted(view.values("id")),
    }
    marker = report_dir / "fingerprint.json"
    fresh = (
        marker.is_file()
        and json.loads(marker.read_text()) == json.loads(json.dumps(fingerprint, default=str))
        and key in root_dataset(view).list_evaluations()
        and (report_dir / "report.json").is_file()
    )
    if fresh:
        data = json.loads((report_dir / "report.json").read_text())
        return EvaluationReport(**data), False
    marker.unlink(missing_ok=True)
    result = evaluate(
        view,
        pred_field=field,
        gt_field=gt_field,
        eval_key=key,
        report=report_dir,
        groups=groups,
        overwrite=True,
        progress=progress,
    )
    marker.write_text(json.dumps(fingerprint, default=str))
    return result, True


def _default_workdir(dataset_name: str) -> Path:
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir).expanduser() / "usam" / dataset_name / "run"


def _progress(progress: bool | StageProgress | None, stage: str) -> Any:
    if callable(progress):
        return lambda done, total: progress(stage, done, total)
    return progress
