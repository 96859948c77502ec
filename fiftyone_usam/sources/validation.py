"""Is a downloaded file a usable, new training image? Decoding, size limits and duplicates.

Every web download passes `check_image` (it decodes fully as an image, is large enough, is not
too large) and then a `DuplicateIndex` (not the same bytes as, nor a near-copy of, an image
already kept) before it enters a dataset. A file that fails raises `Rejected` with one of the
reasons in `REASONS`, which crawl reports count.

Near-copies (re-encoded, resized, lightly recompressed) are found by a 64-bit perceptual hash:
the signs of the 8x8 lowest frequencies of the 2-D DCT of the 32x32 grayscale image, relative to
their median (the pHash of the `imagehash` package, computed here with numpy).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError

DOWNLOAD_FAILED = "download_failed"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
REASONS = (DOWNLOAD_FAILED, NOT_AN_IMAGE, CORRUPT, TOO_SMALL, TOO_LARGE, DUPLICATE, NEAR_DUPLICATE)

# Formats kept byte for byte (browsers, and so the FiftyOne App, show them); any other format
# PIL decodes (TIFF, ICO, PPM, ...) is stored re-encoded as PNG.
_KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_HASH_SIZE = 8
_HASH_INPUT = 32


class Rejected(Exception):
    """A candidate image was not kept. ``reason`` is one of `REASONS`; ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """What a kept web image must satisfy.

    Attributes:
        min_size: the shorter side, in pixels, is at least this.
        max_bytes: the file is at most this many bytes.
        max_pixels: width x height is at most this (guards against decompression bombs).
        near_duplicate_distance: a perceptual hash at most this many bits (of 64) away from a kept
            image's is a near-duplicate; -1 turns near-duplicate detection off.
    """

    min_size: int = 128
    max_bytes: int = 20_000_000
    max_pixels: int = 50_000_000
    near_duplicate_distance: int = 6


@dataclass(frozen=True)
class CheckedImage:
    """A downloaded file that decodes as an image and is within the limits.

    Attributes:
        data: the bytes to store (the download itself, or a PNG re-encoding of rarer formats).
        extension: file extension for ``data``, without the dot (``jpg``, ``png``, ...).
        width: pixels.
        height: pixels.
        sha256: hex SHA-256 of the downloaded bytes (exact-duplicate key).
        phash: 64-bit perceptual hash (near-duplicate key).
        mime_type: MIME type of ``data``.
        num_channels: channels of the decoded image.
    """

    data: bytes
    extension: str
    width: int
    height: int
    sha256: str
    phash: int
    mime_type: str
    num_channels: int


def check_image(data: bytes, limits: ImageLimits) -> CheckedImage:
    """Decodes ``data`` completely and checks it against ``limits``.

    Args:
        data: a downloaded file.
        limits: size limits.

    Returns:
        The `CheckedImage`.

    Raises:
        Rejected: ``too_large``, ``not_an_image``, ``corrupt`` (a truncated or damaged image) or
            ``too_small``.
    """
    if len(data) > limits.max_bytes:
        raise Rejected(TOO_LARGE, f"{len(data)} bytes > {limits.max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected(NOT_AN_IMAGE, _describe(data)) from None
    except Image.DecompressionBombError as e:
        raise Rejected(TOO_LARGE, str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise Rejected(CORRUPT, str(e)) from None
    with image:
        width, height = image.size
        # before decoding, so a decompression bomb costs nothing
        if width * height > limits.max_pixels:
            raise Rejected(TOO_LARGE, f"{width}x{height} pixels > {limits.max_pixels}")
        try:
            image.load()  # decodes every pixel: truncated files fail here
        except (OSError, ValueError, SyntaxError) as e:
            raise Rejected(CORRUPT, f"{image.format} does not decode: {e}") from None
        if min(width, height) < limits.min_size:
            raise Rejected(TOO_SMALL, f"{width}x{height}, shorter side < {limits.min_size}")
        return _checked(data, image)


def _checked(data: bytes, image: Image.Image) -> CheckedImage:
    extension = _KEPT_FORMATS.get(image.format or "")
    stored = data
    if extension is None:
        extension = "png"
        buffer = io.BytesIO()
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG")
        stored = buffer.getvalue()
    return CheckedImage(
        data=stored,
        extension=extension,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=perceptual_hash(image),
        mime_type=_MIME.get(extension, f"image/{extension}"),
        num_channels=len(image.getbands()),
    )


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of an image (as ``imagehash.phash``), as an int.

    Args:
        image: any PIL image; it is converted to 32x32 grayscale first.

    Returns:
        An int in ``[0, 2**64)``; bit ``63 - k`` is coefficient ``k`` (row-major) of the top-left
        8x8 DCT block being above the block's median.
    """
    gray = image.convert("L").resize((_HASH_INPUT, _HASH_INPUT), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    basis = _dct_basis(_HASH_INPUT)[:_HASH_SIZE]  # (8, 32): the 8 lowest frequencies
    low = basis @ pixels @ basis.T  # (8, 8)
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


@lru_cache(maxsize=2)
def _dct_basis(n: int) -> np.ndarray:
    """`(n, n)` DCT-II basis: row k is cos(pi k (2i + 1) / 2n), i = 0..n-1 (unnormalised)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


class DuplicateIndex:
    """The images already kept, by exact content hash and by perceptual hash.

    Args:
        near_duplicate_distance: see `ImageLimits`; -1 checks exact duplicates only.
    """

    def __init__(self, near_duplicate_distance: int = 6) -> None:
        self.near_duplicate_distance = near_duplicate_distance
        self._sha: set[str] = set()
        self._phashes: list[int] = []
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._sha)

    def add(self, sha256: str, phash: int) -> None:
        """Records a kept image."""
        self._sha.add(sha256)
        self._phashes.append(phash)
        self._array = None

    def check(self, image: CheckedImage) -> None:
        """Raises `Rejected` (``duplicate`` or ``near_duplicate``) if ``image`` is not new."""
        if image.sha256 in self._sha:
            raise Rejected(DUPLICATE, f"same bytes as a kept image (sha256 {image.sha256[:12]})")
        if self.near_duplicate_distance < 0 or not self._phashes:
            return
        if self._array is None:
            self._array = np.array(self._phashes, dtype=np.uint64)
        distances = _popcount(self._array ^ np.uint64(image.phash))
        nearest = int(distances.min())
        if nearest <= self.near_duplicate_distance:
            raise Rejected(
                NEAR_DUPLICATE,
                f"perceptual hash {nearest} bit(s) from a kept image's "
                f"(limit {self.near_duplicate_distance})",
            )


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    as_bytes = values.view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1)


def _describe(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if head.startswith((b"{", b"[")):
        return "JSON or text"
    if not data:
        return "an empty file"
    return f"unknown format ({len(data)} bytes starting {data[:8].hex()})"
