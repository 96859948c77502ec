"""`adapt`: adapt a trained head to a dataset's own images, without labels (``usam adapt``).

The target's grid embeddings come from its EmbeddingStore (SAM runs only for the samples it
lacks, into the store `predict` then reads); with ``view``, an augmented view of each image
(``hflip``, ``scale:0.75``) is embedded into a view store beside it, point ``i`` of the view at
the image location of point ``i``. `head.adapt.adapt_head` does the rest, on arrays; the adapted
head is written as a checkpoint (``stage="adapted"``, its provenance naming the dataset, the
view and the stores) and recorded on the dataset, with the label-free figures before and after.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import load_config
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.embeddings.views import parse_view
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.fiftyone_io.datasets import (
    HEADS_KEY,
    locate_store,
    record_entry,
    resolve_view,
    usam_dir,
)
from fiftyone_usam.head.adapt import TargetFigures, adapt_head
from fiftyone_usam.head.adapt_config import INGREDIENTS, AdaptConfig
from fiftyone_usam.head.checkpoint import resolve_head, save_head
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.inference.sam_match import sam_for_head
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.embed import embed
from fiftyone_usam.stages.proposals import ensure_embeddings

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.head.classifier import Head

logger = logging.getLogger(__name__)


@dataclass
class AdaptReport:
    """What an `adapt` run did.

    Attributes:
        head: the adapted head's checkpoint directory.
        source: the head it was adapted from.
        images: target images adapted on.
        view: the augmented view used for consistency (None: none).
        before: the label-free figures of the source head on the target.
        after: those of the adapted head.
        failed: sample id -> reason, for samples that could not be embedded.
        used_sam: whether SAM ran (for target or view embeddings the stores lacked).
        seconds: wall time.
    """

    head: Path
    source: str
    images: int
    view: str | None
    before: TargetFigures
    after: TargetFigures
    failed: dict[str, str]
    used_sam: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """Three lines for people: what was done, then the figures before and after."""
        view = f", view {self.view}" if self.view else ""
        return (
            f"adapted on {self.images} images{view} -> {self.head} ({self.seconds:.1f} s)\n"
            f"  before: {self.before.summary()}\n  after:  {self.after.summary()}"
        )


def adapt(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    head: str | Path | Head,
    out: str | Path | None = None,
    view: str | None = None,
    store: str | Path | None = None,
    view_store: str | Path | None = None,
    view_tag: str | None = None,
    ingredients: Sequence[str] | None = None,
    config: AdaptConfig | str | Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    shard_size: int = 16,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool | ProgressCallback | None = None,
) -> AdaptReport:
    """Adapts a trained head to the samples of a view, without labels.

    Args:
        dataset: a dataset name, dataset or view: the images to be labelled.
        head: a head checkpoint directory (or ``usam train --out`` directory), or a `Head`.
        out: where the adapted head is written; default ``<usam dir>/<dataset>/head-adapted``.
        view: an augmented view for cross-view consistency: ``hflip`` or ``scale:<s>``
            (``embeddings.views``); None: no views (consistency is then off).
        store: the target's EmbeddingStore; default: the one recorded on the dataset that fits
            the head (samples it lacks are embedded into it, as `predict` would).
        view_store: the view's store; default: beside the target's, recorded on the dataset.
        view_tag: only the samples with this tag.
        ingredients: which of `INGREDIENTS` to use; default: all (see `AdaptConfig`).
        config: an `AdaptConfig` or its YAML/JSON file; ``ingredients``, ``epochs`` and
            ``seed`` override it.
        epochs, seed: see `AdaptConfig`.
        sam, checkpoint, device, batch_size, shard_size, max_pixels: for embedding what the
            stores lack (the head's SAM by default).
        progress: for that embedding.

    Returns:
        An `AdaptReport`. The adapted head records the dataset, view and stores in its
        provenance; ``dataset.info["usam_heads"]`` records it with stage ``adapted``.

    Raises:
        ConfigError: an unknown ingredient or view, or too few images to adapt on.
        StoreError: a view store of another SAM or grid, or one lacking target samples.
    """
    started = time.perf_counter()
    settings = _config(config, ingredients, epochs, seed)
    parsed = None if view is None else parse_view(view)
    target_view = resolve_view(dataset, view_tag)
    model, head_path = resolve_head(head, device)
    options: dict[str, Any] = {"sam": sam, "checkpoint": checkpoint, "device": device}
    sizes: dict[str, Any] = {
        "batch_size": batch_size,
        "shard_size": shard_size,
        "max_pixels": max_pixels,
    }
    target_store, failed, used_sam = ensure_embeddings(
        target_view, model, store=store, progress=progress, **options, **sizes
    )
    ids = [i for i in target_view.values("id") if i not in failed]
    views = None
    if parsed is not None:
        views_store, view_failed, view_sam = _view_store(
            target_view.select(ids),
            model,
            target_store,
            parsed.name,
            view_store,
            options,
            sizes,
            progress,
        )
        failed.update(view_failed)
        used_sam |= view_sam
        ids = [i for i in ids if i not in view_failed]
        views = views_store.load_embeddings(ids)
    target = target_store.load_embeddings(ids)
    adapted = adapt_head(model, target, views, settings)
    adapted.provenance["adaptation"].update(
        dataset=target_view.dataset_name,
        view=view,
        store=str(target_store.path),
        source_head=head_path,
    )
    destination = (
        Path(out).expanduser() if out else usam_dir(target_view.dataset_name) / "head-adapted"
    )
    save_head(adapted, destination)
    _record(target_view, destination, adapted, head_path)
    figures = adapted.metrics["adaptation"]  # measured by adapt_head, before and after
    report = AdaptReport(
        destination,
        str(head_path),
        len(ids),
        view,
        TargetFigures.from_dict(figures["before"]),
        TargetFigures.from_dict(figures["after"]),
        failed,
        used_sam,
        time.perf_counter() - started,
    )
    logger.info("adapt: %s (%.1f s of training)", report.summary(), figures["seconds"])
    return report


def _view_store(
    view: fo.DatasetView,
    model: Head,
    target: EmbeddingStore,
    name: str,
    path: str | Path | None,
    options: dict[str, Any],
    sizes: dict[str, Any],
    progress: bool | ProgressCallback | None,
) -> tuple[EmbeddingStore, dict[str, str], bool]:
    """The view's store, holding every sample of ``view`` (embedded now, with the head's SAM,
    where it lacks them or their image changed).

    Raises:
        StoreError: the store there holds another SAM's, grid's or view's embeddings.
    """
    wanted = target.spec.with_view(name)
    where = locate_store(view, wanted, path, default=True, masks=False)
    assert where is not None
    if (where / "spec.json").is_file():
        found = EmbeddingStore.open(where)
        differences = found.spec.differences(wanted, labels=("view store has", "needed"))
        if differences:
            raise StoreError(
                f"the view store at {where} does not hold the {name} view of the target's "
                f"embeddings ({'; '.join(differences)}): pass another --view-store, or leave it "
                "out to use the default one"
            )
        ids, paths = view.values(["id", "filepath"])
        changed = found.changed_files(dict(zip(ids, paths, strict=True)))
        if not changed and all(i in found for i in ids):
            return found, {}, False
    loaded, points = sam_for_head(model, options["sam"], options["checkpoint"], options["device"])
    report = embed(
        view,
        store=where,
        sam=loaded,
        points_per_side=points,
        view=name,
        device=options["device"],
        progress=progress,
        **sizes,
    )
    opened = EmbeddingStore.open(report.store, wanted)
    missing = [i for i in view.values("id") if i not in opened and i not in report.failed]
    if missing:
        raise StoreError(
            f"the view store at {opened.path} lacks {len(missing)} target sample(s) "
            f"(e.g. {missing[0]}): the views' sample ids must be the target's"
        )
    return opened, report.failed, True


def _config(
    config: AdaptConfig | str | Path | None,
    ingredients: Sequence[str] | None,
    epochs: int | None,
    seed: int | None,
) -> AdaptConfig:
    """The `AdaptConfig` of these settings (overrides on the given or default config)."""
    base = (
        config
        if isinstance(config, AdaptConfig)
        else (load_config(AdaptConfig, config) if config is not None else AdaptConfig())
    )
    changes: dict[str, Any] = {}
    if ingredients is not None:
        unknown = sorted(set(ingredients) - set(INGREDIENTS))
        if unknown:
            raise ConfigError(
                f"unknown ingredient(s) {', '.join(unknown)}: choose from {', '.join(INGREDIENTS)}"
            )
        changes |= {name: name in ingredients for name in INGREDIENTS}
    if epochs is not None:
        changes["epochs"] = epochs
    if seed is not None:
        changes["seed"] = seed
    assert {f.name for f in fields(AdaptConfig)} >= set(changes)
    return replace(base, **changes)


def _record(view: fo.DatasetView, path: Path, adapted: Head, source: str | None) -> None:
    """Records the adapted head in ``dataset.info["usam_heads"]`` (stage ``adapted``)."""
    record_entry(
        view,
        HEADS_KEY,
        {
            "path": str(path.resolve()),
            "stages": ["adapted"],
            "classes": list(adapted.classes),
            "adapted_from": source,
        },
    )
