"""The steps of `run` (``usam run``), each deciding whether its artifact is complete and fits
the configuration (then it is skipped) before calling its stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.extractor import MaskMode, spec_for
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.sam_checkpoints import file_sha256, known_content_hash
from fiftyone_usam.embeddings.sam_variants import resolve_variant
from fiftyone_usam.embeddings.store import spec_at
from fiftyone_usam.evaluation.report import EvaluationReport
from fiftyone_usam.execution.work import LOCAL, ExecutionConfig
from fiftyone_usam.fiftyone_io.datasets import locate_store, root_dataset
from fiftyone_usam.fiftyone_io.labeling import DEFAULT_LABEL_BATCH
from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology
from fiftyone_usam.fiftyone_io.writer import FieldExistsError, output_fields, recorded_run
from fiftyone_usam.files import write_text_atomic
from fiftyone_usam.ontology import Ontology
from fiftyone_usam.stages.adapt import adapt
from fiftyone_usam.stages.crawl import crawl
from fiftyone_usam.stages.embed import embed
from fiftyone_usam.stages.evaluate import evaluate
from fiftyone_usam.stages.generate import DEFAULT_MODEL, generate
from fiftyone_usam.stages.labelling import PredictReport
from fiftyone_usam.stages.predict import predict
from fiftyone_usam.stages.train import train_head

if TYPE_CHECKING:
    import fiftyone as fo

DEFAULT_PER_CLASS = {"synthetic": 200, "crawl": 45}


class SamCache:
    """Loads SAM once, and only when a stage has images to embed."""

    def __init__(self, sam: str | None, checkpoint: str | Path | None, device: Any) -> None:
        self.sam, self.checkpoint, self.device = sam, checkpoint, device
        variant = resolve_variant(sam, checkpoint)
        self.variant = variant.name
        self.official_sha256 = variant.checkpoint_sha256  # the official weights', if any
        self._loaded: LoadedSam | None = None
        self._sha256: str | None = None

    def get(self) -> LoadedSam:
        """The SAM, loaded on first use."""
        if self._loaded is None:
            self._loaded = load_sam(self.sam, self.checkpoint, device=self.device)
        return self._loaded

    def identities(self) -> frozenset[str] | None:
        """The hashes a store of these weights may record, known without loading SAM: the
        checkpoint file's (of the named file, else the variant's official one) and, once it was
        loaded before, its state-dict identity. None for a custom variant without a file (any
        store of it is taken)."""
        if self._loaded is not None:
            return frozenset(
                s for s in (self._loaded.checkpoint_sha256, self._loaded.file_sha256) if s
            )
        if self.checkpoint:
            if self._sha256 is None:  # hashed once per run (GBs for vit_h)
                self._sha256 = file_sha256(Path(self.checkpoint).expanduser())
            file_sha: str | None = self._sha256
        else:
            file_sha = self.official_sha256
        if file_sha is None:
            return None
        content = known_content_hash(file_sha)
        return frozenset(s for s in (file_sha, content) if s)


def training_images_step(
    ontology: Ontology,
    name: str,
    source: str,
    per_class: int | None,
    model: str | Path | None,
    steps: int,
    crawl_engine: str,
    urls_file: str | Path | None,
    seed: int,
    device: Any,
    progress: Any,
    execution: ExecutionConfig = LOCAL,
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
            **execution.options(),
        )
        return g.summary(), g.generated > 0

    c = crawl(
        ontology,
        dataset=name,
        per_class=count,
        engine=crawl_engine,
        urls_file=urls_file,
        progress=progress,
    )
    return c.summary(), c.kept > 0


def embed_step(
    view: fo.DatasetView,
    sam: SamCache,
    points_per_side: int,
    masks: MaskMode,
    progress: Any,
    execution: ExecutionConfig = LOCAL,
) -> tuple[Path, bool, str]:
    """Reuses a complete recorded store of the same SAM and grid, else embeds what is missing.

    ``masks="full"`` (the target, which predict labels from) takes only a store that keeps its
    masks. ``masks="none"`` (training images) takes a store with or without masks, and adds
    what is missing to the recorded store of this SAM and grid in that store's own kind (an
    earlier run's store with masks goes on being used), else to a new store without masks.
    """
    keep = masks == "full"
    either = True if keep else None
    wanted: dict[str, Any] = {"sam_variant": sam.variant, "points_per_side": points_per_side}
    identities = sam.identities()
    if identities is not None:
        wanted["checkpoint_sha256"] = identities
    found = locate_store(view, wanted, complete=True, masks=either)
    if found is not None:
        return found, False, f"{len(view)} samples already in {found}"
    loaded = sam.get()
    spec = spec_for(loaded, points_per_side).with_masks(keep)
    target = locate_store(view, spec, default=True, masks=either)
    assert target is not None  # with default=True and a StoreSpec, always a path
    there = spec_at(target)
    kind: MaskMode = masks if there is None else ("full" if there.has_masks else "none")
    result = embed(
        view,
        store=target,
        sam=loaded,
        points_per_side=points_per_side,
        masks=kind,
        device=sam.device,
        progress=progress,
        **execution.options(),
    )
    return Path(result.store), result.embedded > 0, result.summary()


def train_step(
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


def adapt_step(
    view: fo.DatasetView,
    head: Path | None,
    store: Path,
    adapt_view: str | None,
    seed: int,
    sam: SamCache,
    device: Any,
    progress: Any,
) -> tuple[Path, bool, str]:
    """Adapts the head to the target unless it was, to these samples, view and seed."""
    assert head is not None
    weights = (head / "student" / "head.json").read_bytes() if (head / "student").is_dir() else b""
    key_data = {
        "head": hashlib.sha256(weights).hexdigest(),
        "images": hashlib.sha256("\n".join(sorted(view.values("id"))).encode()).hexdigest(),
        "view": adapt_view,
        "seed": seed,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()
    out = head / f"adapted-{key[:16]}"
    if (out / "head.json").is_file():
        return out, False, f"head already adapted to these images: {out}"
    report = adapt(
        view,
        head=head,
        out=out,
        view=adapt_view,
        store=store,
        seed=seed,
        sam=sam.sam,
        checkpoint=sam.checkpoint,
        device=device,
        progress=progress,
    )
    return out, True, report.summary()


def predict_step(
    view: fo.DatasetView,
    head: Path | None,
    store: Path,
    field: str,
    workdir: Path,
    threshold: float | None,
    overwrite: bool,
    sam: SamCache,
    device: Any,
    progress: Any,
    label_batch_size: int = DEFAULT_LABEL_BATCH,
    execution: ExecutionConfig = LOCAL,
) -> PredictReport:
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
        label_batch_size=label_batch_size,
        **execution.options(),
    )
    try:  # same head and settings: resumes (labels only what is missing)
        return predict(view, overwrite=overwrite, **options)
    except FieldExistsError:
        if not ours:  # someone else's predictions: only --overwrite replaces them
            raise
    return predict(view, overwrite=True, **options)  # our own, from another head or settings


def evaluate_step(
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
    write_text_atomic(marker, json.dumps(fingerprint, default=str))
    return result, True
