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
        changed: samples embedded again because their image file changed.
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
        return (
            f"{self.embedded} embedded, {self.already_done} already in the store, "
            f"{len(self.failed)} failed, of {self.total} samples -> {self.store} "
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
    keep = _keeps_masks(masks)
    execution = ExecutionConfig(engine, workers, gpus_per_worker, ray_address)
    on_ray = execution.engine == "ray"
    view = resolve_view(dataset, view_tag)
    # on Ray the driver loads SAM on the CPU only for its identity; each worker loads its own
    loaded = load_sam(sam, checkpoint, device="cpu" if on_ray else device)
    settings: dict[str, Any] = {
        "points_per_side": points_per_side,
        "batch_size": batch_size,
        "precision": precision,
        "points_per_batch": points_per_batch,
        "masks": masks,
        "mask_encoding": mask_encoding,
        "encoder_attention": encoder_attention,
        "encode_workers": encode_workers,
    }
    built = make_extractor(loaded, settings)  # checked before the store is touched
    spec, path = _destination(view, loaded, points_per_side, store, keep)
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
    ids, paths = view.values(["id", "filepath"])
    files = dict(zip(ids, paths, strict=True))
    changed = set(target.changed_files(files))  # reads every shard header: damage fails here
    todo = [(i, p) for i, p in files.items() if i not in target or i in changed]
    report = EmbedReport(target.path, task.spec, len(ids), already_done=len(ids) - len(todo))
    report.changed = sorted(changed)
    report.execution = execution.describe()
    if changed:
        logger.warning(
            "%d sample(s) whose image file changed since they were embedded are embedded "
            "again: %s", len(changed), ", ".join(report.changed[:10]),
        )  # fmt: skip
    if not todo:
        record_store(view, target)
    bar = Progress(progress, len(todo), "embed")
    _run(task, _items(todo, changed), execution, view, target, report, bar)
    report.seconds = time.perf_counter() - started
    for sample_id, reason in report.failed.items():
        logger.warning("skipped sample %s: %s", sample_id, reason)
    logger.info("embed: %s", report.summary())
    return report


def _items(todo: list[tuple[str, str]], changed: set[str]) -> list[dict[str, Any]]:
    """The work items; ``seen``: whether the driver sees the image (a worker that does not
    is on other storage: `execution.embedding.check_visible`)."""
    return [
        {"key": i, "filepath": p, "replace": i in changed, "seen": os.path.exists(p)}
        for i, p in todo
    ]


def _destination(
    view: fo.DatasetView, loaded: LoadedSam, points: int, store: str | Path | None, keep: bool
) -> tuple[StoreSpec, Path]:
    """The spec of this SAM's embeddings (keeping the recorded name and hash of the store
    there when its weights are these, see `spec_for`) and the store they go to."""
    fresh = spec_for(loaded, points).with_masks(keep)
    like = spec_at(store if store is not None else default_store_path(view.dataset_name, fresh))
    spec = spec_for(loaded, points, like=like).with_masks(keep)
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


def _keeps_masks(masks: str) -> bool:
    """Whether ``masks`` (checked) keeps the masks."""
    if masks not in MASK_MODES:
        raise ConfigError(f"masks must be one of {', '.join(MASK_MODES)}, not {masks!r}")
    return masks == "full"
