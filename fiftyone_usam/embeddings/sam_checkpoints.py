"""Finding, downloading and fingerprinting SAM checkpoints.

An official checkpoint is looked for, in order, in the fiftyone-usam cache directory and in
FiftyOne's model zoo directory (where ``foz.load_zoo_model("segment-anything-vitb-torch")``
leaves it), then downloaded into the cache with a progress bar and a SHA-256 check. Offline, the
error names the exact file, address and directory to use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from fiftyone_usam.embeddings.sam_variants import SamVariant
from fiftyone_usam.errors import CheckpointError
from fiftyone_usam.files import write_text_atomic
from fiftyone_usam.settings import model_zoo_dir

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """The package's cache root: ``$USAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/fiftyone-usam``."""
    if os.environ.get("USAM_CACHE_DIR"):
        return Path(os.environ["USAM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fiftyone-usam"


def resolve_checkpoint(
    variant: SamVariant,
    checkpoint: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> Path:
    """Returns the path of the checkpoint to load for ``variant``.

    Args:
        variant: the SAM variant.
        checkpoint: an explicit checkpoint path; used as is (no checksum: it may be fine-tuned).
        cache_dir: cache root (default `default_cache_dir`); checkpoints go in ``<root>/sam``.
        download: fetch the official checkpoint when no copy is found.

    Raises:
        CheckpointError: the file is missing, corrupt, or cannot be downloaded; the message says
            which file to put where.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"SAM checkpoint not found: {path}. Check the --checkpoint path.")
        return path
    if not variant.checkpoint_filename:
        raise CheckpointError(
            f"SAM variant {variant.name!r} has no official checkpoint to look up: "
            "pass --checkpoint PATH to its weights"
        )
    sam_dir = Path(cache_dir or default_cache_dir()).expanduser() / "sam"
    zoo = model_zoo_dir()
    candidates = [sam_dir / variant.checkpoint_filename]
    if zoo is not None:
        candidates.append(zoo / variant.checkpoint_filename)
    for path in candidates:
        if path.is_file():
            _verify(path, variant)
            logger.info("using SAM checkpoint %s", path)
            return path
    if not download:
        raise CheckpointError(_missing_message(variant, candidates, "downloads are turned off"))
    return download_checkpoint(variant, sam_dir / variant.checkpoint_filename, candidates)


def download_checkpoint(variant: SamVariant, dest: Path, searched: list[Path]) -> Path:
    """Downloads ``variant``'s official checkpoint to ``dest``, checking its SHA-256."""
    assert variant.checkpoint_url is not None
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".{os.getpid()}.part")
    digest = hashlib.sha256()
    logger.info("downloading %s to %s", variant.checkpoint_url, dest)
    try:
        with (
            urllib.request.urlopen(variant.checkpoint_url, timeout=60) as response,
            open(part, "wb") as out,
            tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None,
                unit="B",
                unit_scale=True,
                desc=dest.name,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(
            _missing_message(variant, searched, f"download failed: {reason}")
        ) from None
    if variant.checkpoint_sha256 and digest.hexdigest() != variant.checkpoint_sha256:
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"downloaded {variant.checkpoint_url} but its SHA-256 is {digest.hexdigest()}, not "
            f"{variant.checkpoint_sha256}: the download was corrupted or the file changed. "
            "Try again, or download it by hand and pass --checkpoint PATH."
        )
    os.replace(part, dest)
    _remember_hash(dest, digest.hexdigest())
    return dest


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so large checkpoints hash once."""
    path = Path(path).resolve()
    key = _hash_key(path)
    known = _read_hash_cache().get(key)
    if known:
        return str(known)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    _remember_hash(path, digest.hexdigest())
    return digest.hexdigest()


def known_content_hash(file_sha: str) -> str | None:
    """The state-dict identity (``state:<sha256>``) of the checkpoint file with this SHA-256,
    when it was loaded before (remembered in the cache)."""
    known = _read_hash_cache().get(f"content:{file_sha}")
    return str(known) if known else None


def remember_content_hash(file_sha: str, content: str) -> None:
    """Remembers a checkpoint file's state-dict identity (best effort)."""
    _write_cache_entry(f"content:{file_sha}", content)


def _verify(path: Path, variant: SamVariant) -> None:
    if variant.checkpoint_sha256 and file_sha256(path) != variant.checkpoint_sha256:
        raise CheckpointError(
            f"{path} does not match the official {variant.name} checkpoint (SHA-256 "
            f"{file_sha256(path)}, expected {variant.checkpoint_sha256}); it is probably an "
            "incomplete download. Delete it and run again, or pass it with --checkpoint to use "
            "it as it is."
        )


def _missing_message(variant: SamVariant, searched: list[Path], why: str) -> str:
    size = f" ({variant.checkpoint_bytes / 1e6:.0f} MB)" if variant.checkpoint_bytes else ""
    return (
        f"SAM checkpoint for {variant.name} not found ({why}). Looked for "
        f"{' and '.join(str(p) for p in searched)}. Download {variant.checkpoint_url}{size} "
        f"and save it as {searched[0]} (SHA-256 {variant.checkpoint_sha256}), "
        "or pass --checkpoint PATH to a copy you have."
    )


def _hash_cache_file() -> Path:
    return default_cache_dir() / "sha256.json"


def _hash_key(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_hash_cache() -> dict[str, str]:
    try:
        return dict(json.loads(_hash_cache_file().read_text()))
    except (OSError, ValueError):
        return {}


def _remember_hash(path: Path, sha256: str) -> None:
    _write_cache_entry(_hash_key(path.resolve()), sha256)


def _write_cache_entry(key: str, value: str) -> None:
    """Best effort: a cache that cannot be written only costs a re-hash next time."""
    cache = _read_hash_cache()
    cache[key] = value
    target = _hash_cache_file()
    try:
        write_text_atomic(target, json.dumps(cache, indent=0))
    except OSError as e:
        logger.debug("cannot write the checksum cache %s: %s", target, e)
