"""Our own file names for training images, and atomic writes.

File names never come from a URL or a prompt: a class gets an ASCII folder name (its *slug*),
and each image a name built from what identifies it (a content hash, or a generation recipe and
index). Files are written to a temporary name in the target folder and renamed, so a killed run
never leaves a half-written image under a real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import unicodedata
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_TMP_MARK = ".usam-tmp-"


def slug(name: str) -> str:
    """An ASCII folder name for a class: ``"Potted Plant"`` -> ``"potted-plant"``.

    Names with no ASCII letter or digit (``"猫"``) get ``class-<8 hex digits of their hash>``.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:60].strip("-")
    return text or "class-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_image_atomic(path: Path, image: Image.Image, format: str = "PNG") -> None:
    """Saves a PIL image to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        image.save(tmp, format=format)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path, older_than_s: float = 600.0) -> int:
    """Deletes temporary files that a killed run left in ``folder``'s class folders.

    Only files older than ``older_than_s`` go, so a run writing there right now is left alone.
    """
    if not folder.is_dir():
        return 0
    removed = 0
    now = time.time()
    for tmp in folder.glob(f"*/.*{_TMP_MARK}*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
