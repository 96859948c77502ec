"""Which SAM a labeler needs, and checking that a SAM or a store is that one.

A trained head says what its proposals must be (the spec of the store it was trained on); a
labeler without a head (the SAM+CLIP baseline) is given a `StoreSpec`. Loading SAM happens here,
once, before any image is labelled, so a mismatch is refused once and not per sample.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import config_from_dict
from fiftyone_usam.embeddings.extractor import spec_for
from fiftyone_usam.embeddings.sam_backend import LoadedSam, load_sam
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS, SamVariant
from fiftyone_usam.embeddings.store import StoreSpec
from fiftyone_usam.errors import StoreError
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.head.layout import compatibility_fields

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def head_spec(head: Head) -> StoreSpec:
    """The spec of the embeddings a head was trained on.

    Raises:
        StoreError: the head was trained from bare arrays, so nothing says which SAM to use.
    """
    if head.store_spec is None:
        raise StoreError(
            "this head was trained from arrays of unknown origin, so it does not say which SAM "
            "and grid made its embeddings: pass the EmbeddingStore to predict from (--store), "
            "or the SAM to run (--sam / --checkpoint)"
        )
    return head.store_spec


def check_spec(found: StoreSpec, wanted: StoreSpec) -> None:
    """Refuses proposals made otherwise than ``wanted`` (SAM, weights, input size, grid).

    Raises:
        StoreError: naming the fields that differ.
    """
    diffs = wanted.differences(found, compatibility_fields(wanted, found), ("wanted", "found"))
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
    if sam is None and checkpoint is None:
        sam = spec.sam_variant
    loaded = load_sam(sam, checkpoint, device=device)
    check_spec(spec_for(loaded, spec.points_per_side, like=spec), spec)
    return loaded


def recorded_sam(head: Head) -> tuple[str | SamVariant, str | None]:
    """The SAM a head's training store was embedded with, as ``(variant, checkpoint)``.

    From the record the store kept (checkpoint path and variant settings); an official variant
    whose recorded file is gone falls back to its official checkpoint (found or downloaded).

    Raises:
        StoreError: a custom SAM whose recorded checkpoint no longer exists, saying where it
            looked and what to pass.
    """
    assert head.store_spec is not None
    name = head.store_spec.sam_variant
    record = head.provenance.get("sam") or {}
    path = record.get("checkpoint")
    if path and Path(path).is_file():
        settings = record.get("variant")
        variant = config_from_dict(SamVariant, settings) if settings else name
        return variant, str(path)
    if name in OFFICIAL_VARIANTS:
        return name, None
    looked = f" (its checkpoint was {path}, which no longer exists)" if path else ""
    raise StoreError(
        f"this head was trained on embeddings of the custom SAM variant {name!r}{looked}: pass "
        "that SAM's weights with --checkpoint (and its variant with --sam or a <stem>.json "
        "beside the checkpoint)"
    )


def sam_for_head(
    head: Head,
    sam: Any = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    points_per_side: int = 10,
) -> tuple[LoadedSam, int]:
    """Loads the SAM whose embeddings the head was trained on, and checks that it is that one.

    A head trained from bare arrays (no store spec) cannot say which SAM made its embeddings: an
    explicitly given SAM is then used with a warning (only the embedding size is checked), and
    none given is an error.

    Args:
        head: the trained head.
        sam: SAM variant or built model; default: the variant recorded with the head.
        checkpoint: SAM weights; default: that variant's official checkpoint.
        device: torch device.
        points_per_side: the grid, for a head that does not record one.

    Returns:
        ``(sam, points_per_side)``: the loaded SAM and the grid to prompt it with.

    Raises:
        StoreError: the SAM (variant, weights, input size) is not the head's, or the head does
            not say which SAM to use and none was given.
    """
    if head.store_spec is None:
        if sam is None and checkpoint is None:
            head_spec(head)  # raises, saying what to pass
        loaded = load_sam(sam, checkpoint, device=device)
        logger.warning(
            "this head was trained from arrays of unknown origin: it cannot confirm that %s "
            "made its embeddings; using it as given",
            loaded.variant,
        )
        head.check_compatible(spec_for(loaded, points_per_side))
        return loaded, points_per_side
    spec = head.store_spec
    if sam is None and checkpoint is None:
        sam, checkpoint = recorded_sam(head)
    loaded = load_sam(sam, checkpoint, device=device)
    head.check_compatible(spec_for(loaded, spec.points_per_side, like=spec))
    return loaded, spec.points_per_side
