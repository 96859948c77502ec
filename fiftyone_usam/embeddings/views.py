"""Augmented views of an image for label-free adaptation (pure numpy, PIL for resizing).

A view is the same image under an augmentation that keeps its content: mirrored (``hflip``) or
resized (``scale:<factor>``). Adapting a head (`fiftyone_usam.head.adapt`) asks the masks of a
view to agree with the original's, so point ``i`` of a view must prompt the same image location
as point ``i`` of the original: `view_points` maps the original's prompts into the view's pixels.
For the mirrored view, SAM's own grid on the mirrored image is the original grid permuted
(`grid_flip_permutation`), so the view can be embedded with the ordinary grid and reordered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

ViewKind = Literal["hflip", "scale"]
VIEW_NAMES = ("hflip", "scale:<factor>")  # e.g. "scale:0.75"; the factor in (0, 4]
MAX_SCALE = 4.0


@dataclass(frozen=True)
class View:
    """An augmentation of an image.

    Attributes:
        kind: ``hflip`` (mirrored left to right) or ``scale`` (resized by ``factor``).
        factor: the scale factor (1.0 for ``hflip``).
    """

    kind: ViewKind
    factor: float = 1.0

    @property
    def name(self) -> str:
        """The name `parse_view` reads back: ``hflip`` or ``scale:<factor>``."""
        return "hflip" if self.kind == "hflip" else f"scale:{self.factor:g}"

    def size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the view of an image of that size."""
        if self.kind == "hflip":
            return height, width
        return max(1, round(height * self.factor)), max(1, round(width * self.factor))


def parse_view(name: str) -> View:
    """Reads a view's name: ``"hflip"`` or ``"scale:<factor>"`` (e.g. ``"scale:0.75"``).

    Raises:
        ValueError: any other name, or a factor that is not a number in ``(0, 4]``.
    """
    text = name.strip().lower()
    if text == "hflip":
        return View("hflip")
    kind, _, value = text.partition(":")
    if kind == "scale" and value:
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not 0.0 < factor <= MAX_SCALE:  # also refuses NaN
            raise ValueError(
                f"the scale factor of view {name!r} must be a number in (0, {MAX_SCALE:g}], "
                "e.g. 'scale:0.75'"
            )
        return View("scale", factor)
    raise ValueError(
        f"unknown view {name!r}; supported views are {', '.join(VIEW_NAMES)} "
        "(e.g. 'hflip' or 'scale:0.75')"
    )


def view_image(image: np.ndarray, view: View) -> np.ndarray:
    """The image under the view.

    Args:
        image: `(H, W, 3)` uint8 RGB.
        view: the augmentation.

    Returns:
        `(H', W', 3)` uint8: the mirrored image (same size), or the image resized (bilinear) to
        ``view.size(H, W)``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if view.kind == "hflip":
        return np.ascontiguousarray(image[:, ::-1])
    height, width = view.size(*image.shape[:2])
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def view_points(points: np.ndarray, view: View, height: int, width: int) -> np.ndarray:
    """The original image's prompt points in the view's pixel coordinates.

    Point ``i`` of the result is the image location of point ``i`` of ``points``: ``x -> W - x``
    for ``hflip``; for ``scale``, each axis times the view's actual size over the original's
    (``round(W * factor) / W``, which differs slightly from the factor).

    Args:
        points: `(d, 2)` float pixel coordinates (x, y) in the original image.
        view: the augmentation.
        height: the original image's height in pixels.
        width: the original image's width in pixels.

    Returns:
        `(d, 2)` float64 (x, y) in the view's pixels.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected (d, 2) points (x, y), got shape {pts.shape}")
    if view.kind == "hflip":
        return np.stack([width - pts[:, 0], pts[:, 1]], axis=1)
    new_height, new_width = view.size(height, width)
    return pts * np.array([new_width / width, new_height / height])


def grid_flip_permutation(points_per_side: int) -> np.ndarray:
    """Where SAM's grid lands when the image is mirrored left to right.

    The grid (`prompts.point_grid`, row-major, x fastest) is symmetric: mirrored, point ``i``
    at ``(x, y)`` lands exactly on grid point ``perm[i]`` at ``(1 - x, y)``, the same row with
    the column reversed. So the view embedded with the ordinary grid gives mask ``perm[i]`` for
    the original's mask ``i``: ``view_embeddings[perm]`` lines up with the original's.

    Args:
        points_per_side: ``n``; the grid has ``d = n * n`` points.

    Returns:
        `(d,)` int64, a permutation of ``0..d-1`` (its own inverse).
    """
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
    n = points_per_side
    grid = np.arange(n * n, dtype=np.int64).reshape(n, n)
    return grid[:, ::-1].ravel()
