"""What a head checkpoint is on disk, and which store fields a head depends on (no torch here,
so the App's forms can check a head cheaply)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import CheckpointError
from fiftyone_usam.version import __version__

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.store_spec import StoreSpec

logger = logging.getLogger(__name__)

WEIGHTS = "head.safetensors"
METADATA = "head.json"
FORMAT = "usam-head"
FORMAT_VERSION = 1
# The sub-directories of a `usam train --out` directory, in the order load_head prefers them.
STAGES = ("student", "teacher")

# The spec fields that decide what a mask embedding means (and how many masks an image has).
COMPATIBILITY_FIELDS = (
    "sam_variant",
    "checkpoint_sha256",
    "encoder_input_size",
    "embedding_dim",
    "points_per_side",
)


def compatibility_fields(*specs: StoreSpec) -> tuple[str, ...]:
    """The fields two specs must share for a head of one to label the other's proposals: SAM
    and the embedding, and the grid when both are grids. A label field's boxes or points are
    decoded by the same SAM into the same four mask tokens, so a head trained on the grid
    names their masks: prompts are not compared then."""
    if all(spec.on_grid for spec in specs):
        return COMPATIBILITY_FIELDS
    return tuple(f for f in COMPATIBILITY_FIELDS if f != "points_per_side")


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names (see `load_head`).

    Raises:
        CheckpointError: no checkpoint there, with what to do.
    """
    folder = Path(path).expanduser()
    if folder.name == METADATA or folder.name == WEIGHTS:
        folder = folder.parent
    if (folder / METADATA).is_file():
        return folder
    for stage in STAGES:
        if (folder / stage / METADATA).is_file():
            return folder / stage
        if any(folder.glob(f".{stage}.*")):
            logger.warning("%s: an interrupted write left no %s checkpoint", folder, stage)
    hint = (
        " (an interrupted write leaves only hidden .tmp directories: train again)"
        if folder.is_dir()
        else ""
    )
    raise CheckpointError(
        f"no U-SAM head checkpoint at {folder}{hint}: train one with `usam train --out {folder}`"
    )


def read_metadata(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint directory ``path`` names and its ``head.json``, checked (no torch).

    The one reader of ``head.json``: `load_head` and the App's forms both use it, so a form never
    accepts a head that loading would refuse.

    Raises:
        CheckpointError: no checkpoint, unreadable JSON, another format or format version, no
            classes, or no weights file beside it; each with what to do.
    """
    folder = find_checkpoint(path)
    file = folder / METADATA
    try:
        metadata = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {file}: {e}; train the head again") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a U-SAM head checkpoint")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format version {metadata.get('format_version')}; this fiftyone-usam "
            f"({__version__}) reads version {FORMAT_VERSION}: retrain the head or upgrade"
        )
    if not isinstance(metadata.get("classes"), list) or not metadata["classes"]:
        raise CheckpointError(f"{file} names no classes: train the head again")
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} has {METADATA} but no {WEIGHTS}: train the head again")
    return folder, metadata
