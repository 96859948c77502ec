"""Reading images from disk into the HxWx3 uint8 RGB arrays that SAM expects.

Real datasets hold grayscale scans, 16-bit PNGs, RGBA cut-outs and phone photos whose pixels are
stored sideways with an EXIF orientation tag. Each is turned into what a viewer shows: EXIF
rotation applied (as the FiftyOne App does), gray replicated to three channels, 16-bit values
scaled by 255/65535, and transparency composited over white (as a browser shows it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fiftyone_usam.errors import ImageLoadError

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000x10000 image passes, a 15000x15000 one not


def load_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as an RGB array, EXIF orientation applied.

    Args:
        path: a local image file.
        max_pixels: refuse images of more pixels than this (None: no limit of ours; PIL's own
            decompression-bomb limit still applies), before any pixel is decoded.

    Returns:
        `(H, W, 3)` uint8 array, in the orientation a viewer shows.

    Raises:
        ImageLoadError: the file is missing, is not an image, is truncated, or is too large
            (a decompression bomb among them).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageLoadError(_too_large(path, width, height, max_pixels))
            image.load()  # decode now, so truncated files fail here
            ImageOps.exif_transpose(image, in_place=True)  # no copy of a large photo
            return to_rgb(image)
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"not a readable image (unknown or corrupt format): {path}") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            f"{path} is too large to decode safely ({e}); if it is a real image, downscale it, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as e:
        raise ImageLoadError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def _too_large(path: str | Path, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{path} is {width}x{height} = {width * height / 1e6:.0f} MP, above the limit of "
        f"{max_pixels / 1e6:.0f} MP: downscale it, or raise the limit (--max-pixels)"
    )


def to_rgb(image: Image.Image) -> np.ndarray:
    """Converts a PIL image of any mode to an `(H, W, 3)` uint8 RGB array."""
    if image.mode in _HIGH_BIT_MODES or image.mode == "F":
        return _gray_to_rgb(_scale_to_uint8(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps 16-bit (or 32-bit integer, or float) gray values onto 0..255."""
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(values, nan=low) - low) / max(high - low, 1e-12) * 255.0
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    # 32-bit integer images from PIL ("I" mode) usually carry 16-bit data; scale by the
    # range the type can hold unless the values exceed it.
    top = 65535 if values.size == 0 or values.max() <= 65535 else int(values.max())
    return np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)
