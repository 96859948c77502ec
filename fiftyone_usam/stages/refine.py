"""`refine`: a head that learns from the reviewer's corrections, then relabels (``usam refine``).

The corrections are FiftyOne label tags and edits on ``<field>_instances``
(`fiftyone_io.corrections`); each corrected instance's mask embedding comes back from the
EmbeddingStore the labels were made from (by sample id and ``source_index``), so no SAM runs.
`head.refine.refine_head` fine-tunes the head on them, anchored to the previous head on a
replay of the dataset's other masks; the dataset is then relabelled from the cache with the run's
own settings, and `restore_corrections` puts the reviewer's word back on top.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.config import load_config
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.fiftyone_io.corrections import (
    REVIEWED,
    Correction,
    corrected_detections,
    load_reviewed,
    read_corrections,
    restore_corrections,
    save_reviewed,
)
from fiftyone_usam.fiftyone_io.datasets import HEADS_KEY, record_entry, resolve_view, usam_dir
from fiftyone_usam.fiftyone_io.writer import recorded_run
from fiftyone_usam.head.checkpoint import resolve_head, save_head
from fiftyone_usam.head.refine import Corrections, RefineConfig, refine_head
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.labelling import PredictReport
from fiftyone_usam.stages.predict import predict

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.head.classifier import Head

logger = logging.getLogger(__name__)

REPLAY_SAMPLES = 256  # samples whose masks anchor the refined head to the previous one
_SETTINGS = ("threshold", "nms_iou", "granularity", "class_agnostic_nms")


@dataclass
class RefineReport:
    """What a `refine` run did.

    Attributes:
        head: the refined head's checkpoint directory.
        source: the head it was refined from.
        corrections: corrections used, by kind (``ok``, ``wrong``, ``relabel``).
        skipped: corrections that could not be used, with why (a class the head lacks).
        relabelled: the relabelling run (None with ``relabel=False``).
        restored: samples whose corrected instances were put back after relabelling.
        seconds: wall time, and ``refine_seconds`` of it fine-tuning the head.
    """

    head: Path
    source: str
    corrections: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)
    relabelled: PredictReport | None = None
    restored: int = 0
    seconds: float = 0.0
    refine_seconds: float = 0.0

    def summary(self) -> str:
        """One or two lines for people."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.corrections.items())
        line = (
            f"refined on {sum(self.corrections.values())} corrections ({kinds}) -> {self.head} "
            f"({self.refine_seconds:.1f} s; {self.seconds:.1f} s in all)"
        )
        if self.relabelled is not None:
            line += f"\n  relabelled: {self.relabelled.summary()}; {self.restored} kept as reviewed"
        return line


def refine(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    field: str = "usam",
    head: str | Path | Head | None = None,
    out: str | Path | None = None,
    view_tag: str | None = None,
    config: RefineConfig | str | Path | None = None,
    relabel: bool = True,
    device: str | torch.device | None = None,
    progress: bool | ProgressCallback | None = None,
) -> RefineReport:
    """Fine-tunes the head that labelled ``field`` on the reviewer's corrections, and relabels.

    Args:
        dataset: a dataset name, dataset or view (the corrections are read from its samples;
            the relabelling covers them too).
        field: the prefix U-SAM wrote (``<field>_instances`` holds the corrections).
        head: the head to refine; default: the one recorded for ``field``.
        out: where the refined head goes; default ``<usam dir>/<dataset>/head-refined``.
        view_tag: only the samples with this tag.
        config: a `RefineConfig` or its YAML/JSON file.
        relabel: relabel the samples from the cache with the refined head (the run's own
            threshold, NMS and granularity), keeping every reviewed instance as reviewed.
        device: torch device of the head.
        progress: for the relabelling.

    Raises:
        ConfigError: no corrections, or ``field`` is not U-SAM's.
        StoreError: the store the labels came from no longer holds a corrected sample.
    """
    started = time.perf_counter()
    view = resolve_view(dataset, view_tag)
    destination = Path(out).expanduser() if out else usam_dir(view.dataset_name) / "head-refined"
    _restore_interrupted(view, field, destination)
    corrections = read_corrections(view, field)
    run = recorded_run(view, field) or {}
    if not corrections:
        raise ConfigError(
            f"no corrections on {field}_instances: in the App, tag wrong instances "
            "usam:wrong, confirm right ones with usam:ok, or edit their labels, then run this again"
        )
    if head is None and not run.get("head"):
        raise ConfigError(
            f"the run that wrote {field!r} names no head checkpoint (it was labelled with a "
            "head held in memory): pass the head to refine (--head DIR)"
        )
    model, source = resolve_head(head if head is not None else run["head"], device)
    store = _store(run, field)
    arrays, skipped = _arrays(store, corrections, model.classes)
    replay = _replay(store, view.values("id"))
    settings = (
        config
        if isinstance(config, RefineConfig)
        else (load_config(RefineConfig, config) if config is not None else RefineConfig())
    )
    tuned = time.perf_counter()
    refined = refine_head(model, arrays, replay, settings)
    refine_seconds = time.perf_counter() - tuned
    refined.provenance.setdefault("refinement", {}).update(
        dataset=view.dataset_name, field=field, source_head=source, store=str(store.path)
    )
    save_head(refined, destination)
    record_entry(
        view,
        HEADS_KEY,
        {"path": str(destination.resolve()), "stages": ["refined"], "refined_from": source},
    )
    report = RefineReport(destination, str(source), arrays.counts(), skipped)
    report.refine_seconds = refine_seconds
    if relabel:
        report.relabelled, report.restored = _relabel(
            view, field, run, corrections, destination, store, progress
        )
    report.seconds = time.perf_counter() - started
    logger.info("refine: %s", report.summary())
    return report


def _store(run: dict[str, Any], field: str) -> EmbeddingStore:
    """The store the field's labels were made from (its run record says which)."""
    path = run.get("store")
    if not path or not (Path(path) / "spec.json").is_file():
        raise StoreError(
            f"the labels of {field!r} name no EmbeddingStore that still exists ({path}): "
            "corrections read their masks' embeddings from it. Relabel with `usam predict` "
            "(it embeds the images again) and correct those labels"
        )
    return EmbeddingStore.open(path)


def _arrays(
    store: EmbeddingStore, corrections: list[Correction], classes: tuple[str, ...]
) -> tuple[Corrections, dict[str, str]]:
    """The corrections' embeddings and targets (a class index, or -1 for wrong)."""
    missing = sorted({c.sample_id for c in corrections if c.sample_id not in store})
    if missing:
        raise StoreError(
            f"the EmbeddingStore at {store.path} no longer holds {len(missing)} corrected "
            f"sample(s) (e.g. {missing[0]}): embed them again (`usam embed --store "
            f"{store.path}`) before refining"
        )
    rows, targets, kinds, skipped = [], [], [], {}
    by_sample = {c.sample_id for c in corrections}
    proposals = dict(store.iter_proposals(sorted(by_sample)))
    for c in corrections:
        if c.kind != "wrong" and c.label not in classes:
            skipped[c.label_id] = f"{c.label!r} is not a class of the head ({', '.join(classes)})"
            continue
        found = proposals[c.sample_id]
        rows.append(found.embeddings[c.source_index // found.masks_per_point])
        targets.append(-1 if c.kind == "wrong" else classes.index(c.label))
        kinds.append(c.kind)
    if not rows:
        raise ConfigError(
            "none of the corrections can be learnt: " + "; ".join(list(skipped.values())[:3])
        )
    return Corrections(np.stack(rows), np.asarray(targets, np.int64), tuple(kinds)), skipped


def _replay(store: EmbeddingStore, ids: list[str]) -> np.ndarray:
    """`(R, D)` embeddings of up to `REPLAY_SAMPLES` of the view's samples (every mask)."""
    chosen = [i for i in ids if i in store]
    if len(chosen) > REPLAY_SAMPLES:
        picks = np.random.default_rng(0).choice(len(chosen), REPLAY_SAMPLES, replace=False)
        chosen = [chosen[k] for k in sorted(picks)]
    if not chosen:
        return np.zeros((0, store.spec.embedding_dim), np.float16)
    if store.spec.on_grid:  # the embeddings alone, no mask read
        return store.load_embeddings(chosen).reshape(-1, store.spec.embedding_dim)
    return np.concatenate([p.embeddings for _, p in store.iter_proposals(chosen)])


def _relabel(
    view: fo.DatasetView,
    field: str,
    run: dict[str, Any],
    corrections: list[Correction],
    head: Path,
    store: EmbeddingStore,
    progress: bool | ProgressCallback | None,
) -> tuple[PredictReport, int]:
    """Relabels the view from the store with the run's settings; restores the reviewed.

    The reviewed instances are saved beside the refined head first (``reviewed.json``), so a
    run killed while relabelling loses none of them: the next `refine` puts them back first.
    """
    reviewed = corrected_detections(view, field, corrections)
    save_reviewed(head / REVIEWED, reviewed)
    settings = run.get("settings", {})
    report = predict(
        view,
        head=head,
        field=field,
        store=store.path,
        overwrite=True,
        prompt_field=settings.get("prompt_field"),
        keep_prompt_labels=bool(settings.get("keep_prompt_labels")),
        progress=progress,
        **{name: settings[name] for name in _SETTINGS if name in settings},
    )
    restored = restore_corrections(view, field, reviewed, report.classes)
    (head / REVIEWED).unlink()
    return report, restored


def _restore_interrupted(view: fo.DatasetView, field: str, folder: Path) -> None:
    """Puts back the reviewed instances of a refine killed while relabelling (if any)."""
    pending = folder / REVIEWED
    if not pending.is_file():
        return
    run = recorded_run(view, field) or {}
    classes = tuple(run.get("settings", {}).get("classes", ()))
    restored = restore_corrections(view, field, load_reviewed(pending), classes)
    logger.warning(
        "put back the reviewed instances of %d sample(s) of an interrupted refine", restored
    )
    pending.unlink()
