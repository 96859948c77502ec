"""Where a prediction's mask proposals come from: the dataset's EmbeddingStore when it has them
(SAM is then never loaded), else SAM, whose new embeddings are added to the store.
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


def ensure_embeddings(
    view: fo.DatasetView,
    head: Head,
    *,
    store: str | Path | None = None,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    progress: bool | ProgressCallback | None = None,
) -> tuple[EmbeddingStore, dict[str, str], bool]:
    """Makes sure the view's samples are in an EmbeddingStore the head fits.

    Args:
        view: the samples to predict.
        head: the trained head.
        store: the store to read (and add to); default: the store recorded on the dataset with
            the head's spec, else a new one at the default location.
        sam, checkpoint, device, batch_size: for embedding samples the store lacks.
        progress: for that embedding.

    Returns:
        ``(store, failed, used_sam)``: the store, sample id -> reason for samples that could not
        be embedded, and whether SAM was loaded.
    """
    from fiftyone_usam.embeddings.run import embed
    from fiftyone_usam.embeddings.store import EmbeddingStore
    from fiftyone_usam.fiftyone_io.datasets import default_store_path, find_store

    spec = head_spec(head)
    path = Path(store).expanduser() if store is not None else find_store(view, spec)
    opened = (
        EmbeddingStore.open(path) if path is not None and (path / "spec.json").exists() else None
    )
    if opened is not None:
        head.check_compatible(opened.spec)
        missing = [i for i in view.values("id") if i not in opened]
        if not missing:
            return opened, {}, False
        logger.info("%d sample(s) are not in %s yet: running SAM on them", len(missing), path)
    else:
        missing = view.values("id")
    target = path or default_store_path(view.dataset_name, spec)
    report = embed(
        view.select(missing),
        store=target,
        sam=sam_for_head(head, sam, checkpoint, device),
        points_per_side=spec.points_per_side,
        batch_size=batch_size,
        progress=progress,
    )
    return EmbeddingStore.open(report.store), report.failed, True
