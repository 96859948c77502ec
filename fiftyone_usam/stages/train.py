"""`train_head`: train U-SAM's head on a FiftyOne dataset's labels and its EmbeddingStore.

Writes ``<out>/teacher`` and/or ``<out>/student`` checkpoints and records them on the dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import config_to_dict, load_config
from fiftyone_usam.embeddings.store import EmbeddingStore, read_sam_record
from fiftyone_usam.errors import CheckpointError, StoreError, USAMError
from fiftyone_usam.fiftyone_io.datasets import (
    HEADS_KEY,
    default_head_path,
    find_store,
    record_entry,
    resolve_view,
)
from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology
from fiftyone_usam.fiftyone_io.training_set import load_training_set
from fiftyone_usam.head.checkpoint import load_head, save_head
from fiftyone_usam.head.config import (
    Placement,
    Stage,
    TrainConfig,
    TrainPrecision,
    with_overrides,
)
from fiftyone_usam.head.layout import read_metadata
from fiftyone_usam.head.model import HeadConfig
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.head.classifier import Head
    from fiftyone_usam.head.model import HeadConfig
    from fiftyone_usam.head.training_set import TrainingSet
    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What a `train_head` run did.

    Attributes:
        out: the output directory.
        checkpoints: stage -> checkpoint directory written by this run.
        classes: the head's classes, in output order.
        num_images: images trained on (training and held-out together).
        skipped: sample id -> why it was left out.
        metrics: stage -> training figures (losses, bag accuracies, epochs, seconds).
        already_trained: a head with the same training inputs and settings was in ``out``, so
            nothing was trained.
        seconds: wall time of the run.
    """

    out: Path
    checkpoints: dict[str, Path] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    num_images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    already_trained: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for people."""
        if self.already_trained:
            return (
                f"{self.out} already holds a head trained on the same {self.num_images} images, "
                "store and settings: nothing to do (pass --overwrite to train it again)"
            )
        lines = [
            f"trained on {self.num_images} images of {len(self.classes)} classes "
            f"({', '.join(self.classes)}), {len(self.skipped)} skipped ({self.seconds:.1f} s)"
        ]
        for stage, path in self.checkpoints.items():
            m = self.metrics.get(stage, {})
            lines.append(
                f"{stage}: held-out bag accuracy {m.get('val_bag_accuracy', float('nan')):.3f}, "
                f"{int(m.get('epochs', 0))} epochs (best {int(m.get('best_epoch', 0))}) -> {path}"
            )
        return "\n".join(lines)


def train_head(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    label_field: str = "ground_truth",
    store: str | Path | None = None,
    out: str | Path | None = None,
    stage: Stage | None = None,
    classes: str | Path | Sequence[str] | Ontology | None = None,
    superclasses: bool = False,
    view_tag: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    precision: TrainPrecision | None = None,
    placement: Placement | None = None,
    config: TrainConfig | str | Path | None = None,
    head_config: HeadConfig | str | Path | None = None,
    overwrite: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> TrainReport:
    """Trains U-SAM's head: an MIL teacher, then a student distilled with the uncertainty loss.

    Args:
        dataset: a dataset name, dataset or view of single-object training images.
        label_field: the `fo.Classification` field with each image's class.
        store: the EmbeddingStore holding the images' embeddings; default: the newest store
            recorded on the dataset by `embed` (with or without masks: training reads only the
            embeddings, so a store embedded with ``masks="none"`` is enough).
        out: output directory; gets ``teacher/`` and ``student/`` checkpoints. Default:
            ``<FiftyOne dataset dir>/usam/<dataset>/head``.
        stage: ``teacher``, ``student`` (distils from ``<out>/teacher``, trained before) or
            ``both``; default: ``config.stage`` (``both``).
        classes: the ontology (YAML file, ``"a,b,c"`` or a list), fixing the class order;
            default: the ontology stored with the dataset by `generate`/`crawl`, else the
            distinct labels, sorted.
        superclasses: train on the ontology's superclasses instead of its classes (each label
            becomes its class's superclass).
        view_tag: only the samples with this tag.
        epochs: overrides ``config.epochs``.
        batch_size: overrides ``config.batch_size``.
        lr: overrides ``config.lr``.
        seed: overrides ``config.seed``.
        device: overrides ``config.device`` (default: CUDA if available, else the CPU).
        precision: overrides ``config.precision``: ``auto`` (bf16 autocast on CUDA, fp32 on
            the CPU), ``fp32`` or ``bf16``.
        placement: overrides ``config.placement``: ``auto`` (the training set on the device
            when it fits in its free memory, else in host memory, batch by batch), ``device``
            or ``host``.
        config: a `TrainConfig` or a JSON/YAML file of its settings.
        head_config: a `HeadConfig` or a JSON/YAML file of its settings.
        overwrite: train even when ``out`` holds a head trained on the same images, labels,
            store and settings (otherwise that head is kept and nothing is trained).
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(epochs done, epochs in all stages)``.

    Returns:
        A `TrainReport`; the head is at ``load_head(report.out)``.

    Raises:
        USAMError: a missing dataset, field or store, labels that cannot train a head (see
            `load_training_set`), or ``stage="student"`` without a compatible teacher.
    """

    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    train_config = with_overrides(
        _config(TrainConfig, config),
        dict(
            stage=stage,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            precision=precision,
            placement=placement,
        ),
    )
    shape = _config(HeadConfig, head_config)
    data = _training_set(view, label_field, store, classes, superclasses)
    target = Path(out).expanduser() if out is not None else default_head_path(view.dataset_name)
    provenance = {
        "dataset": view.dataset_name,
        "view_tag": view_tag,
        "label_field": label_field,
        "store": str(Path(data.store).resolve()),
        "num_images": len(data.sample_ids),
        "num_skipped": len(data.skipped),
        "sam": read_sam_record(data.store),  # where its SAM came from, for predict to find it
        "training_key": _training_key(data, train_config, shape),
    }
    report = TrainReport(target, classes=data.classes, num_images=len(data.sample_ids))
    report.skipped = data.skipped
    if not overwrite and _already_trained(target, train_config, provenance["training_key"]):
        report.already_trained = True
        report.seconds = time.perf_counter() - started
        logger.info("train: %s", report.summary())
        return report
    _fit_and_save(data, train_config, shape, target, provenance, report, progress)
    _record(view, report, label_field)
    report.seconds = time.perf_counter() - started
    logger.info("train: %s", report.summary())
    return report


def _training_key(data: TrainingSet, config: TrainConfig, shape: HeadConfig) -> str:
    """A hash of everything a head is trained from: images, labels, classes, the store's spec
    and the settings. The device and the placement of the data aside (they do not change what
    is learnt on the CPU), and ``precision="auto"``, what runs before it existed did: keys of
    heads trained before stay valid."""
    settings = {
        k: v
        for k, v in config_to_dict(config).items()
        if k not in ("device", "placement") and not (k == "precision" and v == "auto")
    }
    key = {
        "images": list(data.sample_ids),
        "labels": data.labels.tolist(),
        "classes": list(data.classes),
        "spec": config_to_dict(data.spec),
        "train": settings,
        "head": config_to_dict(shape),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _already_trained(out: Path, config: TrainConfig, key: str) -> bool:
    """Whether ``out`` holds the last stage this run would train, trained with ``key``."""
    last = "teacher" if config.stage == "teacher" else "student"
    try:
        _, metadata = read_metadata(out / last)
    except USAMError:
        return False
    return (metadata.get("provenance") or {}).get("training_key") == key


def _fit_and_save(
    data: TrainingSet,
    config: TrainConfig,
    shape: HeadConfig,
    out: Path,
    provenance: dict[str, Any],
    report: TrainReport,
    progress: bool | ProgressCallback | None,
) -> None:
    """Trains stage by stage, writing each checkpoint as soon as its stage is done."""

    stages = ["teacher", "student"] if config.stage == "both" else [config.stage]
    teacher = _teacher(out, data) if stages == ["student"] else None
    bar = Progress(progress, config.epochs * len(stages), "train", unit="epoch")
    try:
        for offset, stage in enumerate(stages):
            head = fit_head(
                data.embeddings,
                data.labels,
                data.classes,
                replace(config, stage=stage),  # type: ignore[arg-type]
                shape,
                teacher=teacher,
                progress=_stage_progress(bar, offset * config.epochs),
            )
            head.store_spec = data.spec
            head.provenance = dict(provenance)
            if stage == "teacher":
                _forget_student(out)
            elif teacher is not None:
                head.metrics = {**teacher.metrics, **head.metrics}
            teacher = head if stage == "teacher" else teacher
            report.checkpoints[stage] = save_head(head, out / stage)
            report.metrics[stage] = head.metrics[stage]
    finally:
        bar.close()


def _training_set(
    view: fo.DatasetView,
    label_field: str,
    store: str | Path | None,
    classes: str | Path | Sequence[str] | Ontology | None,
    superclasses: bool,
) -> TrainingSet:
    if store is None:
        store = find_store(view, masks=None)  # training reads only the embeddings
        if store is None:
            raise StoreError(
                f"no EmbeddingStore is recorded on dataset {view.dataset_name!r}: embed it first "
                f"(`usam embed --dataset {view.dataset_name}`), or pass --store DIR"
            )
    # The class order: as asked, else as stored by `generate`/`crawl`, else the labels sorted.
    ontology = load_ontology(classes) if classes is not None else stored_ontology(view)
    return load_training_set(
        view,
        label_field=label_field,
        store=EmbeddingStore.open(store),
        ontology=ontology,
        superclasses=superclasses,
    )


def _teacher(out: Path, data: TrainingSet) -> Head:
    """The teacher a ``student`` run distils from: ``<out>/teacher``, for the same data."""

    try:
        teacher = load_head(out / "teacher")
    except CheckpointError as e:
        raise CheckpointError(
            f"stage 'student' distils from the teacher in {out / 'teacher'}, but: {e}. Train it "
            "first with stage 'teacher' (or use stage 'both')"
        ) from None
    if teacher.classes != data.classes:
        raise CheckpointError(
            f"the teacher in {out / 'teacher'} knows the classes {list(teacher.classes)}, not "
            f"{list(data.classes)}: retrain it with stage 'teacher' or 'both'"
        )
    teacher.check_compatible(data.spec)
    return teacher


def _forget_student(out: Path) -> None:
    """A new teacher makes an older student (distilled from another teacher) stale."""
    import shutil

    stale = out / "student"
    if stale.is_dir() and (stale / "head.json").is_file():
        logger.warning("removing %s: it was distilled from an older teacher", stale)
        shutil.rmtree(stale)


def _record(view: fo.DatasetView, report: TrainReport, label_field: str) -> None:
    """Records the checkpoints in ``dataset.info`` so later stages find the head."""

    entry = {
        "path": str(report.out.resolve()),
        "stages": sorted(report.checkpoints),
        "classes": list(report.classes),
        "label_field": label_field,
    }
    record_entry(view, HEADS_KEY, entry)


def _config(cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return load_config(cls, value)


def _stage_progress(bar: Progress, start: int) -> ProgressCallback:
    """Reports a stage's epochs as a count over all stages."""

    def report(epoch: int, _total: int) -> None:
        bar.advance_to(start + epoch)

    return report
