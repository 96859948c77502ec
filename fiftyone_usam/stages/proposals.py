"""Where a labelling run's mask proposals come from: the dataset's EmbeddingStore when it has
them (SAM is then never loaded), else SAM, whose new embeddings are added to the store.

What the proposals must be is said by a trained head (its training store's spec) or, for a
labeler without a head such as the SAM+CLIP baseline, by a `StoreSpec` (see `proposal_spec`).
Labelling needs SAM's masks: a store embedded with ``masks="none"`` is never read here (a head
trained from one labels from a store with masks of the same SAM and grid).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.extractor import spec_for
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import StoreError
from fiftyone_usam.execution.work import LOCAL, ExecutionConfig
from fiftyone_usam.fiftyone_io.datasets import locate_store
from fiftyone_usam.fiftyone_io.prompts import FieldPrompts
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.inference.sam_match import check_spec, sam_for_head, sam_for_spec
from fiftyone_usam.progress import ProgressCallback
from fiftyone_usam.stages.embed import embed

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

logger = logging.getLogger(__name__)


def proposal_spec(
    view: fo.DatasetView,
    *,
    store: str | Path | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    points_per_side: int = 10,
    device: str | torch.device | None = None,
) -> tuple[StoreSpec, LoadedSam | None]:
    """Which proposals a labeler without a head reads, for `ensure_embeddings`.

    In order: the spec of ``store`` if it exists; else, when neither ``sam`` nor ``checkpoint``
    is given, the newest store recorded on the dataset (made by ``usam embed`` or ``predict``);
    else the spec of that SAM (loaded here) with a ``points_per_side`` grid.

    Returns:
        ``(spec, loaded)``: the spec, and the SAM when it had to be loaded (pass it on as
        ``sam`` so it is not loaded twice), else None.
    """
    if store is not None and (Path(store).expanduser() / "spec.json").exists():
        return EmbeddingStore.open(store).spec, None
    if store is None and sam is None and checkpoint is None:
        recorded = locate_store(view)
        if recorded is not None:
            return EmbeddingStore.open(recorded).spec, None
    loaded = load_sam(sam, checkpoint, device=device)
    return spec_for(loaded, points_per_side), loaded


def ensure_embeddings(
    view: fo.DatasetView,
    wanted: Head | StoreSpec,
    *,
    store: str | Path | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    shard_size: int = 16,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    execution: ExecutionConfig = LOCAL,
    progress: bool | ProgressCallback | None = None,
    prompts: FieldPrompts | None = None,
) -> tuple[EmbeddingStore, dict[str, str], bool]:
    """Makes sure the view's samples are in an EmbeddingStore that fits ``wanted``.

    Args:
        view: the samples to label.
        wanted: a trained head (the store must fit it), or the spec of the proposals wanted.
        store: the store to read (and add to); default: the store recorded on the dataset with
            the wanted spec and masks, else a new one at the default location. A store without
            masks (``masks="none"``) is refused.
        sam, checkpoint, device, batch_size, shard_size, max_pixels: for embedding the samples
            the store lacks, or whose image file changed since they were embedded.
        execution: where that embedding runs (`embed`'s ``engine``, ``workers``, ...).
        progress: for that embedding.
        prompts: the view's prompts from a label field (`read_prompts`; every sample of the
            view has some): the store is then one of those prompts, and a sample whose
            prompts changed since it was embedded is embedded again.

    Returns:
        ``(store, failed, used_sam)``: the store, sample id -> reason for samples that could not
        be embedded, and whether SAM was loaded.

    Raises:
        StoreError: ``store`` holds no masks, or does not fit ``wanted``.
    """
    spec = wanted if isinstance(wanted, StoreSpec) else wanted.store_spec
    if spec is not None and prompts is not None:
        spec = spec.with_prompts(prompts.kind, prompts.field)
    # A head of unknown origin (trained from arrays) names no spec: only the store or the SAM
    # given decide, never whichever store happens to be recorded on the dataset.
    path = None if spec is None and store is None else locate_store(view, spec, store)
    opened = (
        EmbeddingStore.open(path) if path is not None and (path / "spec.json").exists() else None
    )
    if opened is not None:
        _require_masks(opened)
        _check_fits(opened, wanted, prompts)
        missing = _missing(view, opened, prompts)
        if not missing:
            return opened, {}, False
        logger.info("%d sample(s) are not in %s yet: running SAM on them", len(missing), path)
    else:
        missing = view.values("id")
    if isinstance(wanted, StoreSpec):
        loaded, points = sam_for_spec(wanted, sam, checkpoint, device), wanted.points_per_side
    else:
        loaded, points = sam_for_head(wanted, sam, checkpoint, device)
    fresh = spec_for(loaded, points)
    if prompts is not None:
        fresh = fresh.with_prompts(prompts.kind, prompts.field)
    report = embed(
        view.select(missing),
        store=path or locate_store(view, fresh, default=True),
        sam=loaded,
        points_per_side=points,
        prompt_field=prompts,  # read once, by the caller
        batch_size=batch_size,
        shard_size=shard_size,
        max_pixels=max_pixels,
        device=device,
        progress=progress,
        **execution.options(),
    )
    return EmbeddingStore.open(report.store), {**report.skipped, **report.failed}, True


def _check_fits(
    store: EmbeddingStore, wanted: Head | StoreSpec, prompts: FieldPrompts | None
) -> None:
    """Refuses a store whose proposals ``wanted`` cannot label (another SAM, or grid) or
    that holds other prompts than ``prompts``."""
    _require_masks(store)
    if isinstance(wanted, StoreSpec):
        check_spec(store.spec, wanted)
    else:
        wanted.check_compatible(store.spec)
    asked = ("grid", None) if prompts is None else (prompts.kind, prompts.field)
    if (store.spec.prompt_kind, store.spec.prompt_field) != asked:
        what = "the point grid" if prompts is None else f"the {asked[0]} of field {asked[1]!r}"
        raise StoreError(
            f"the EmbeddingStore at {store.path} holds proposals of {store.spec.describe()}, "
            f"not of {what}: pass another --store (or leave it out to use the default one)"
        )


def _missing(
    view: fo.DatasetView, store: EmbeddingStore, prompts: FieldPrompts | None
) -> list[str]:
    """The view's samples the store lacks, or whose image file or prompts changed."""
    ids, paths = view.values(["id", "filepath"])
    changed = set(store.changed_files(dict(zip(ids, paths, strict=True))))
    if prompts is not None:
        fingerprints = prompts.fingerprints()
        changed |= set(store.changed_prompts({i: fingerprints[i] for i in ids}))
    return [i for i in ids if i not in store or i in changed]


def _require_masks(store: EmbeddingStore) -> None:
    """Refuses a store embedded without masks: labelling reads SAM's masks."""
    if not store.spec.has_masks:
        raise StoreError(
            f"the EmbeddingStore at {store.path} holds no masks (it was embedded with "
            "--masks none, which is enough for training only), and labelling needs SAM's "
            "masks: embed these images again with --masks full into another store (`usam embed "
            "--masks full --store OTHER_DIR`) and label from that, or leave --store out"
        )
