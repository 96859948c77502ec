"""`embed`: fill an EmbeddingStore with SAM mask proposals for the samples of a FiftyOne view.

Resumable: samples already in the store are skipped, finished work is flushed to disk in whole
shards, and an image that cannot be read, or that SAM fails on alone, is reported with its sample
id and skipped. The work itself (`execution.embedding.EmbedTask`) runs in this process or on
Ray actors (``engine``); this module plans it, records the store and reports.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.devices import Precision
from fiftyone_usam.embeddings.extractor import MASK_MODES, MaskEncoding, MaskMode, spec_for
from fiftyone_usam.embeddings.fast_attention import EncoderAttention
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec, spec_at, write_sam_record
from fiftyone_usam.embeddings.views import parse_view
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.execution.embedding import EmbedTask, make_extractor
from fiftyone_usam.execution.engines import execute
from fiftyone_usam.execution.work import Engine, ExecutionConfig
from fiftyone_usam.fiftyone_io.datasets import (
    default_store_path,
    locate_store,
    record_store,
    resolve_view,
)
from fiftyone_usam.fiftyone_io.prompts import FieldPrompts, read_prompts
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

logger = logging.getLogger(__name__)


@dataclass
class EmbedReport:
    """What an `embed` run did.

    Attributes:
        store: the store directory.
        spec: the store's spec.
        total: samples in the view.
        embedded: samples embedded by this run.
        already_done: samples that were already in the store.
        failed: sample id -> reason, for samples that could not be embedded.
        skipped: sample id -> reason, for samples with no usable prompt in the prompt field
            (not embedded, not an error).
        changed: samples embedded again because their image file (or their prompts) changed.
        seconds: wall time of the run.
        execution: where the work ran: ``engine``, ``workers``, the Ray ``address``, and on
            Ray ``workers_ran``, the actors that did work (a restarted one counts again).
    """

    store: Path
    spec: StoreSpec
    total: int = 0
    embedded: int = 0
    already_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    execution: dict[str, Any] = field(default_factory=lambda: {"engine": "local", "workers": 1})

    @property
    def images_per_second(self) -> float:
        """Images embedded per second of the run."""
        return self.embedded / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """One line for people."""
        where = ""
        if self.execution.get("engine") == "ray":
            where = f", on Ray with {self.execution['workers']} worker(s)"
        speed = f", {self.images_per_second:.2f} images/s" if self.embedded else ""
        skipped = f", {len(self.skipped)} without prompts" if self.skipped else ""
        return (
            f"{self.embedded} embedded, {self.already_done} already in the store, "
            f"{len(self.failed)} failed{skipped}, of {self.total} samples -> {self.store} "
            f"({self.seconds:.1f} s{where}{speed})"
        )


def embed(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    store: str | Path | None = None,
    sam: str | Path | Any | None = None,
    checkpoint: str | Path | None = None,
    view_tag: str | None = None,
    points_per_side: int = 10,
    prompt_field: str | FieldPrompts | None = None,
    view: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    precision: Precision = "auto",
    shard_size: int = 16,
    num_workers: int = 4,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    points_per_batch: int = 128,
    masks: MaskMode = "full",
    mask_encoding: MaskEncoding = "device",
    encoder_attention: EncoderAttention = "auto",
    encode_workers: int = 1,
    engine: Engine = "local",
    workers: int = 1,
    gpus_per_worker: float | None = None,
    ray_address: str | None = None,
    progress: bool | ProgressCallback | None = None,
) -> EmbedReport:
    """Computes SAM mask proposals for every sample of a view into an EmbeddingStore.

    Args:
        dataset: a dataset name, a dataset or a view.
        store: the store directory (created if absent; must have the same spec if present).
            Default: ``<FiftyOne dataset dir>/usam/<dataset>/embeddings-<variant>-p<points>``
            (``...-nomasks`` with ``masks="none"``).
        sam: a SAM variant (``vit_b``, ``vit_l``, ``vit_h``, a custom name or config file), a
            built ``segment_anything`` Sam / `LoadedSam`, or None: the variant described beside
            ``checkpoint`` (``<stem>.json``) if any, else ``vit_b``.
        checkpoint: SAM weights; default: the official checkpoint, found or downloaded.
        view_tag: only the samples with this tag.
        points_per_side: prompt grid size (``d = points_per_side**2``, 100 in the paper).
        prompt_field: prompt SAM with this label field instead of the grid: the boxes of a
            ``fo.Detections`` field (one mask each) or the points of a ``fo.Keypoints`` field
            (one prompt per label, three masks), each row named by its label's id. Default
            store: ``embeddings-<variant>-prompts-<field>``. A sample whose prompts changed is
            embedded again; one with no usable prompt is skipped and reported (``skipped``).
            The field's prompts already read (`fiftyone_io.prompts.read_prompts`, as
            `predict` does) are taken as they are, not read again.
        view: embed each image under an augmentation instead (``hflip``, ``scale:0.75``;
            `embeddings.views`), for `adapt`'s cross-view consistency: a view store (default
            ``...-view-<view>``, its spec records the view) keeps embeddings only (``masks``
            is then ``none``), row ``i`` at the image location of grid point ``i``.
        device: torch device. Default: CUDA if available, else the CPU (a built model passed as
            ``sam`` stays where it is).
        batch_size: images per image-encoder call.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
        shard_size: images per store shard; a killed run loses at most one unflushed shard.
        num_workers: threads reading images ahead of the model.
        max_pixels: an image of more pixels is not decoded and fails on its own (None: no
            limit but PIL's decompression-bomb check).
        points_per_batch: prompts per mask-decoder call, which bounds its memory.
        masks: ``full`` keeps SAM's masks (COCO RLE) and stability scores, which labelling
            needs; ``none`` keeps only the embeddings and predicted IoUs, all that training
            reads (about half the size, and no mask upsampling). A store holds one or the
            other: adding to a store of the other kind is refused.
        mask_encoding: ``device`` finds the masks' run lengths on the model's device and
            copies only those to the host; ``host`` copies the masks and encodes them there
            (the reference). The stored bytes are the same either way.
        encoder_attention: ``sdpa`` runs the image encoder's attention as one fused
            ``scaled_dot_product_attention`` (equal to ``reference`` within float rounding);
            ``auto`` is ``sdpa`` on CUDA, ``reference`` elsewhere.
        encode_workers: threads that turn runs into RLE strings while the device works on the
            next image and the next batch (0: in line). None of these three changes what is
            stored, so they are not in the store's spec: a store filled one way is resumed any
            other way.
        engine: ``local`` runs the work in this process; ``ray`` on Ray actors, each loading
            SAM once from ``sam`` (a variant name or config file) and ``checkpoint`` and
            writing whole shards into the store itself. The store's content is the same.
            Images and the store must be on storage every Ray node sees.
        workers: Ray actors (``engine="ray"``).
        gpus_per_worker: GPUs per actor; None: 1 when the cluster has GPUs, else 0.
        ray_address: the Ray cluster; None: ``RAY_ADDRESS`` if set, else a local Ray started
            for the run.
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` after each batch.

    Returns:
        An `EmbedReport`. The store's location is recorded on the dataset once it holds
        something. A sample whose image file changed since it was embedded (size or
        modification time) is embedded again.
    """
    started = time.perf_counter()
    augmentation = _check_view(view, prompt_field)
    keep = _keeps_masks(masks) and augmentation is None  # a view store keeps no masks
    execution = ExecutionConfig(engine, workers, gpus_per_worker, ray_address)
    on_ray = execution.engine == "ray"
    samples = resolve_view(dataset, view_tag)
    # on Ray the driver loads SAM on the CPU only for its identity; each worker loads its own
    loaded = load_sam(sam, checkpoint, device="cpu" if on_ray else device)
    settings: dict[str, Any] = {
        "points_per_side": points_per_side,
        "batch_size": batch_size,
        "precision": precision,
        "points_per_batch": points_per_batch,
        "masks": "full" if keep else "none",
        "mask_encoding": mask_encoding,
        "encoder_attention": encoder_attention,
        "encode_workers": encode_workers,
    }
    built = make_extractor(loaded, settings)  # checked before the store is touched
    prompts = read_prompts(samples, prompt_field) if isinstance(prompt_field, str) else prompt_field
    spec, path = _destination(samples, loaded, points_per_side, store, keep, prompts, augmentation)
    task = EmbedTask(
        store=str(path),
        spec=spec,
        extractor=settings,
        variant=loaded.variant_config,
        checkpoint=loaded.checkpoint,
        device=None if device is None else str(device),
        shard_size=max(1, shard_size),
        read_threads=num_workers,
        max_pixels=max_pixels,
        view=augmentation or "",
        loaded=loaded,
        built=built,
    )
    if on_ray:  # refused before anything is written when SAM cannot travel
        task = task.remote()
        execution = replace(execution, block_size=_block_size(batch_size, shard_size))
    target = EmbeddingStore.create(task.store, task.spec)
    write_sam_record(target.path, loaded)
    del loaded, built  # the driver's copies on Ray (the workers load their own)
    target.remove_stale_temp_files()
    report = EmbedReport(target.path, task.spec, execution=execution.describe())
    items = _plan(samples, target, prompts, report)
    if not items:
        record_store(samples, target)
    bar = Progress(progress, len(items), "embed")
    _run(task, items, execution, samples, target, report, bar)
    report.seconds = time.perf_counter() - started
    for sample_id, reason in report.failed.items():
        logger.warning("skipped sample %s: %s", sample_id, reason)
    logger.info("embed: %s", report.summary())
    return report


def _plan(
    view: fo.DatasetView,
    target: EmbeddingStore,
    prompts: FieldPrompts | None,
    report: EmbedReport,
) -> list[dict[str, Any]]:
    """The work items: the samples not in the store, or whose image file (or prompts)
    changed; fills the report's counts. ``seen``: whether the driver sees the image (a worker
    that does not is on other storage: `execution.embedding.check_visible`)."""
    ids, paths = view.values(["id", "filepath"])
    files = dict(zip(ids, paths, strict=True))
    report.total = len(ids)
    if prompts is not None:
        report.skipped = {i: prompts.skipped[i] for i in ids if i in prompts.skipped}
        files = {i: p for i, p in files.items() if i in prompts.sets}
    changed = set(target.changed_files(files))  # reads every shard header: damage fails here
    fingerprints = prompts.fingerprints() if prompts is not None else {}
    changed |= set(target.changed_prompts(fingerprints))
    todo = [(i, p) for i, p in files.items() if i not in target or i in changed]
    report.already_done = len(files) - len(todo)
    report.changed = sorted(changed)
    if changed:
        logger.warning(
            "%d sample(s) whose image file or prompts changed since they were embedded are "
            "embedded again: %s", len(changed), ", ".join(report.changed[:10]),
        )  # fmt: skip
    items = []
    for i, p in todo:
        item = {"key": i, "filepath": p, "replace": i in changed, "seen": os.path.exists(p)}
        if prompts is not None:
            item |= {"prompts": prompts.sets[i].to_item(), "fingerprint": fingerprints[i]}
        items.append(item)
    return items


def _destination(
    view: fo.DatasetView,
    loaded: LoadedSam,
    points: int,
    store: str | Path | None,
    keep: bool,
    prompts: FieldPrompts | None = None,
    augmentation: str | None = None,
) -> tuple[StoreSpec, Path]:
    """The spec of this SAM's embeddings (keeping the recorded name and hash of the store
    there when its weights are these, see `spec_for`) and the store they go to."""

    def of(like: StoreSpec | None) -> StoreSpec:
        spec = spec_for(loaded, points, like=like).with_masks(keep)
        if augmentation is not None:
            spec = spec.with_view(augmentation)
        return spec if prompts is None else spec.with_prompts(prompts.kind, prompts.field)

    fresh = of(None)
    spec = of(spec_at(store if store is not None else default_store_path(view.dataset_name, fresh)))
    path = locate_store(view, spec, store, default=True, masks=keep)
    assert path is not None  # with default=True and a StoreSpec, always a path
    return spec, path


def _run(
    task: EmbedTask,
    items: list[dict[str, Any]],
    execution: ExecutionConfig,
    view: fo.DatasetView,
    target: EmbeddingStore,
    report: EmbedReport,
    bar: Progress,
) -> None:
    """Runs the items, counts their outcomes into ``report``; records the store on the
    dataset with the first sample it holds."""
    ran: set[str] = set()
    try:
        with contextlib.closing(execute(task, items, execution, progress=bar.update)) as done:
            for outcome in done:
                ran.add(outcome.worker)
                if outcome.error is not None:
                    report.failed[outcome.key] = outcome.error
                else:
                    if report.embedded == 0:  # the store holds something: record it
                        record_store(view, target)
                    report.embedded += 1
    finally:
        bar.close()
        if execution.engine == "ray":
            report.execution["workers_ran"] = len(ran)
        if report.embedded == 0:  # stopped before an outcome: a shard may have been flushed
            target.refresh()
            if len(target):
                record_store(view, target)


def _block_size(batch_size: int, shard_size: int) -> int:
    """Items per Ray request: whole shards made of whole batches (the local run's batches)."""
    return math.lcm(max(1, batch_size), max(1, shard_size))


def _check_view(view: str | None, prompt_field: str | FieldPrompts | None) -> str | None:
    """The view's canonical name (None: no view).

    Raises:
        ConfigError: an unknown view, or a view with a prompt field (views are of the grid:
            they are for adapting a head, which reads grid embeddings).
    """
    if view is None:
        return None
    if prompt_field is not None:
        raise ConfigError(
            "views are embedded on the point grid, for `usam adapt`; a prompt field cannot "
            "have one: leave out --view or --prompt-field"
        )
    try:
        return parse_view(view).name
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _keeps_masks(masks: str) -> bool:
    """Whether ``masks`` (checked) keeps the masks."""
    if masks not in MASK_MODES:
        raise ConfigError(f"masks must be one of {', '.join(MASK_MODES)}, not {masks!r}")
    return masks == "full"
