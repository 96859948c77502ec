"""Head checkpoints: a directory with safetensors weights and JSON metadata. Never a pickle.

Layout::

    <checkpoint>/head.safetensors    the MaskClassifier's state (weights + input statistics)
    <checkpoint>/head.json           classes, background convention, threshold, head and training
                                     configs, the EmbeddingStore spec, metrics, provenance, and
                                     the SHA-256 of head.safetensors

A checkpoint is written whole into a hidden temporary directory beside its target and renamed
into place, so an interrupted run leaves either the previous checkpoint or none, never a mix;
the recorded SHA-256 catches weights that do not belong to their metadata.

`train_head` writes ``<out>/teacher`` and ``<out>/student``; `load_head(out)` takes the student
when there is one, else the teacher.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from fiftyone_usam.config import config_from_dict, config_to_dict
from fiftyone_usam.embeddings.store import StoreSpec
from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.files import atomic_dir, fsync_files
from fiftyone_usam.head.classifier import BACKGROUND, BACKGROUND_CONVENTION, Head
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.layout import FORMAT, FORMAT_VERSION, METADATA, WEIGHTS, read_metadata
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from fiftyone_usam.version import __version__

logger = logging.getLogger(__name__)


def save_head(head: Head, path: str | Path) -> Path:
    """Writes ``head`` as the checkpoint directory ``path``, atomically, replacing an older one.

    Raises:
        CheckpointError: ``path`` exists and is neither a head checkpoint nor an empty directory.
    """
    from safetensors.torch import save_file

    target = Path(path).expanduser()
    _refuse_foreign(target)
    with atomic_dir(target, fsync=True) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in head.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        metadata = _metadata(head, _sha256(tmp / WEIGHTS))
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2))
        fsync_files(tmp, (WEIGHTS, METADATA))
    return target


def load_head(path: str | Path, *, device: str | torch.device | None = None) -> Head:
    """Reads a head checkpoint (no unpickling).

    Args:
        path: a checkpoint directory, its ``head.json``, or a training ``--out`` directory (its
            ``student``, else its ``teacher``).
        device: where to put the model; default the CPU.

    Raises:
        CheckpointError: nothing there, a half-written or tampered checkpoint, a format this
            version does not read, or weights that do not fit the recorded config.
    """
    from safetensors.torch import load_file

    folder, metadata = read_metadata(path)
    weights = folder / WEIGHTS
    if _sha256(weights) != metadata.get("weights_sha256"):
        raise CheckpointError(
            f"{weights} does not match its {METADATA} (SHA-256 differs): the checkpoint was "
            "modified or damaged; train the head again"
        )
    head = _head_from(metadata, folder)
    try:
        state = load_file(str(weights))
    except Exception as e:  # SafetensorError: not a safetensors file, whatever its hash says
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({type(e).__name__}: {e}): the "
            "checkpoint is damaged; train the head again"
        ) from None
    try:
        head.model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} does not fit its recorded head config: {e}") from None
    return head.to(device or "cpu")


def resolve_head(
    head: str | Path | Head, device: str | torch.device | None = None
) -> tuple[Head, str | None]:
    """A head given as a checkpoint path (loaded) or as a `Head` (moved to ``device`` if given).

    Returns:
        ``(head, path)``: the head, and the resolved checkpoint path it came from (None for a
        `Head` object).
    """
    if isinstance(head, (str, Path)):
        return load_head(head, device=device), str(Path(head).expanduser().resolve())
    if device is not None:
        head.to(device)
    return head, None


def _metadata(head: Head, weights_sha256: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": head.stage,
        "classes": list(head.classes),
        "background": {
            "convention": BACKGROUND_CONVENTION,
            "label_id": 0,
            "name": BACKGROUND,
            "description": "C outputs, one per class; a mask whose best class probability is "
            "below the threshold is background (label id 0); class i has label id i + 1",
        },
        "threshold": head.threshold,
        **head.config_dict(),
        "store_spec": config_to_dict(head.store_spec) if head.store_spec else None,
        "metrics": _jsonable(head.metrics),
        "provenance": _jsonable(head.provenance),
        "weights_sha256": weights_sha256,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fiftyone_usam_version": __version__,
    }


def _head_from(metadata: dict[str, Any], folder: Path) -> Head:
    source = str(folder / METADATA)
    try:
        classes = [str(c) for c in metadata["classes"]]
        head_config = config_from_dict(HeadConfig, metadata["head_config"], source=source)
        train = metadata.get("train_config")
        spec = metadata.get("store_spec")
        return Head(
            MaskClassifier(len(classes), head_config),
            classes,
            threshold=float(metadata["threshold"]),
            stage=str(metadata.get("stage", "student")),
            train_config=config_from_dict(TrainConfig, train, source=source) if train else None,
            store_spec=config_from_dict(StoreSpec, spec, source=source) if spec else None,
            metrics=metadata.get("metrics") or {},
            provenance=metadata.get("provenance") or {},
        )
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{source} is not a valid head description: {e}") from None


def _refuse_foreign(target: Path) -> None:
    """Never replace a directory that is not a head checkpoint (it may be the user's)."""
    if target.is_file() or (
        target.is_dir() and any(target.iterdir()) and not (target / METADATA).is_file()
    ):
        raise CheckpointError(
            f"{target} exists and is not a U-SAM head checkpoint: choose a new or empty directory"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Metrics and provenance as JSON (NaN becomes null, paths strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
