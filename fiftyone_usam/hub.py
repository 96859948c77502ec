"""Where a pretrained model comes from: a Hugging Face Hub id, or a local directory."""

from __future__ import annotations

from pathlib import Path

from fiftyone_usam.errors import CheckpointError


def model_source(
    model: str | Path, *, marker: str, kind: str, noun: str, option: str, save: str, example: str
) -> str:
    """Checks a model given as a hub id or a directory written by ``save_pretrained``.

    Args:
        model: the hub id or directory.
        marker: the file such a directory holds (``model_index.json``, ``config.json``).
        kind: what the model is, for messages ("diffusers pipeline").
        noun: the directory's short name, for messages ("pipeline").
        option: the CLI option that takes it ("--model").
        save: how to save one into a directory, for messages.
        example: a hub id to suggest.

    Returns:
        The directory (as a string) or the hub id.

    Raises:
        CheckpointError: a directory without ``marker``, a file, or a path to nothing (a value
            that starts with ``/``, ``.`` or ``~``, or has more than one ``/``, is a path).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise CheckpointError(
                f"{path} holds no {kind} (no {marker}). Save one there with {save}, then pass "
                f"{option} DIR"
            )
        return str(path)
    if path.exists():
        raise CheckpointError(
            f"{path} is a file: {option} takes a hub id or a {noun} directory written by "
            "save_pretrained"
        )
    text = str(model)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        raise CheckpointError(
            f"no {noun} directory at {path}: pass an existing directory written by "
            f"save_pretrained, or a Hugging Face Hub id such as {example}"
        )
    return text
