"""Atomic file writes, in one place.

Every file the package writes (images, store shards and specs, head checkpoints, masks, reports,
caches) goes to a hidden temporary name in the target folder and is renamed into place, so a
killed run never leaves a half-written file under a real name. The temporary name carries the
writer's process id, so leftovers of writers that are gone can be found and removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

TMP_MARK = ".usam-tmp-"
_OWNER = re.compile(re.escape(TMP_MARK) + r"(\d+)-")


def temp_path(target: Path) -> Path:
    """A hidden temporary name beside ``target``: ``.<name>.usam-tmp-<pid>-<8 hex>``."""
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(target: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is renamed to ``target``.

    The folder is created. On an exception the temporary file is removed and ``target`` is left
    as it was. With ``fsync`` the data reaches the disk before the rename (store shards).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Writes ``data`` to ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_image_atomic(path: str | Path, image: Image.Image, format: str = "PNG") -> None:
    """Saves a PIL image to ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=format)


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary folder to fill; on success it replaces the folder ``target``.

    An old ``target`` is moved aside first and deleted after the new one is in place, so at every
    moment either the old or the new folder is whole. With ``fsync`` the rename reaches the disk
    (the parent folder is flushed) before the old folder is deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = temp_path(target)
            os.replace(target, old)
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_files(folder: Path, names: tuple[str, ...]) -> None:
    """Flushes the named files of ``folder`` to the disk."""
    for name in names:
        with open(folder / name, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(
    folder: Path, pattern: str = "*/", older_than_s: float = 600.0, *, owner_gone: bool = False
) -> int:
    """Deletes temporary files that killed writers left under ``folder``.

    Args:
        folder: where to look.
        pattern: the glob of folders below ``folder`` to search (default: each subfolder; ``""``
            for ``folder`` itself).
        older_than_s: only files older than this go, so a run writing there right now is left
            alone.
        owner_gone: instead of their age, remove the files whose writer's process is gone
            (for folders that several live processes write into, e.g. a store's shards).

    Returns:
        How many were removed.
    """
    if not folder.is_dir():
        return 0
    removed = 0
    now = time.time()
    for tmp in folder.glob(f"{pattern}.*{TMP_MARK}*"):
        try:
            stale = (
                not _owner_alive(tmp) if owner_gone else now - tmp.stat().st_mtime > older_than_s
            )
            if stale:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _owner_alive(tmp: Path) -> bool:
    match = _OWNER.search(tmp.name)
    if match is None:
        return True
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
