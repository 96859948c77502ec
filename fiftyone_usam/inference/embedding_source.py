"""Where a prediction's mask proposals come from: the dataset's EmbeddingStore when it has them
(SAM is then never loaded), else SAM, whose new embeddings are added to the store.

What the proposals must be is said by a trained head (its training store's spec) or, for a
labeler without a head such as the SAM+CLIP baseline, by a `StoreSpec` (see `proposal_spec`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import StoreError

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.embeddings.sam_backend import LoadedSam
    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
    from fiftyone_usam.head.classifier import Head
    from fiftyone_usam.progress import ProgressCallback

logger = logging.getLogger(__name__)


def head_spec(head: Head) -> StoreSpec:
    """The spec of the embeddings a head was trained on.

    Raises:
        StoreError: the head was trained from bare arrays, so nothing says which SAM to use.
    """
    if head.store_spec is None:
        raise StoreError(
            "this head was trained from arrays of unknown origin, so it does not say which SAM "
            "and grid made its embeddings: pass the EmbeddingStore to predict from (--store)"
        )
    return head.store_spec


def check_spec(found: StoreSpec, wanted: StoreSpec) -> None:
    """Refuses proposals made otherwise than ``wanted`` (SAM, weights, input size, grid).

    Raises:
        StoreError: naming the fields that differ.
    """
    from fiftyone_usam.head.classifier import COMPATIBILITY_FIELDS

    diffs = [
        f"{name}: wanted {getattr(wanted, name)!r}, found {getattr(found, name)!r}"
        for name in COMPATIBILITY_FIELDS
        if getattr(wanted, name) != getattr(found, name)
    ]
    if diffs:
        raise StoreError(
            "these mask proposals were made with another SAM or grid (" + "; ".join(diffs) + "). "
            f"Wanted: {wanted.describe()}. Pass the SAM variant and checkpoint that made the "
            "store (--sam, --checkpoint), or another --store"
        )


def sam_for_spec(
    spec: StoreSpec,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
) -> LoadedSam:
    """Loads the SAM that made proposals of ``spec``, and checks that it is that one.

    Args:
        spec: the proposals' spec.
        sam: SAM variant or built model; default: the variant recorded in ``spec``.
        checkpoint: SAM weights; default: the official checkpoint of that variant.
        device: torch device.

    Raises:
        StoreError: the SAM (variant, weights, input size) is not the spec's.
    """
    from fiftyone_usam.embeddings.run import spec_for
    from fiftyone_usam.embeddings.sam_backend import load_sam

    if sam is None and checkpoint is None:
        sam = spec.sam_variant
    loaded = load_sam(sam, checkpoint, device=device)
    check_spec(spec_for(loaded, spec.points_per_side), spec)
    return loaded


def sam_for_head(
    head: Head,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
) -> LoadedSam:
    """Loads the SAM whose embeddings the head was trained on, and checks that it is that one.

    Args:
        head: the trained head.
        sam: SAM variant or built model; default: the variant recorded with the head.
        checkpoint: SAM weights; default: the official checkpoint of that variant.
        device: torch device.

    Raises:
        StoreError: the SAM (variant, weights, input size) is not the head's.
    """
    from fiftyone_usam.embeddings.run import spec_for
    from fiftyone_usam.embeddings.sam_backend import load_sam

    spec = head_spec(head)
    if sam is None and checkpoint is None:
        sam = spec.sam_variant
    loaded = load_sam(sam, checkpoint, device=device)
    head.check_compatible(spec_for(loaded, spec.points_per_side))
    return loaded


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
    from fiftyone_usam.embeddings.run import spec_for
    from fiftyone_usam.embeddings.sam_backend import load_sam
    from fiftyone_usam.embeddings.store import EmbeddingStore
    from fiftyone_usam.fiftyone_io.datasets import find_store

    if store is not None and (Path(store).expanduser() / "spec.json").exists():
        return EmbeddingStore.open(store).spec, None
    if store is None and sam is None and checkpoint is None:
        recorded = find_store(view)
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
    progress: bool | ProgressCallback | None = None,
) -> tuple[EmbeddingStore, dict[str, str], bool]:
    """Makes sure the view's samples are in an EmbeddingStore that fits ``wanted``.

    Args:
        view: the samples to predict.
        wanted: a trained head (the store must fit it), or the spec of the proposals wanted.
        store: the store to read (and add to); default: the store recorded on the dataset with
            the wanted spec, else a new one at the default location.
        sam, checkpoint, device, batch_size: for embedding samples the store lacks.
        progress: for that embedding.

    Returns:
        ``(store, failed, used_sam)``: the store, sample id -> reason for samples that could not
        be embedded, and whether SAM was loaded.
    """
    from fiftyone_usam.embeddings.run import embed
    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
    from fiftyone_usam.fiftyone_io.datasets import default_store_path, find_store

    spec = wanted if isinstance(wanted, StoreSpec) else head_spec(wanted)
    path = Path(store).expanduser() if store is not None else find_store(view, spec)
    opened = (
        EmbeddingStore.open(path) if path is not None and (path / "spec.json").exists() else None
    )
    if opened is not None:
        if isinstance(wanted, StoreSpec):
            check_spec(opened.spec, spec)
        else:
            wanted.check_compatible(opened.spec)
        missing = [i for i in view.values("id") if i not in opened]
        if not missing:
            return opened, {}, False
        logger.info("%d sample(s) are not in %s yet: running SAM on them", len(missing), path)
    else:
        missing = view.values("id")
    if isinstance(wanted, StoreSpec):
        loaded = sam_for_spec(spec, sam, checkpoint, device)
    else:
        loaded = sam_for_head(wanted, sam, checkpoint, device)
    report = embed(
        view.select(missing),
        store=path or default_store_path(view.dataset_name, spec),
        sam=loaded,
        points_per_side=spec.points_per_side,
        batch_size=batch_size,
        progress=progress,
    )
    return EmbeddingStore.open(report.store), report.failed, True
