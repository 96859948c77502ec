"""What a head checkpoint is on disk, and which store fields a head depends on (no torch here,
so the App's forms can check a head cheaply)."""

from __future__ import annotations

import logging
from pathlib import Path

from fiftyone_usam.errors import CheckpointError

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
