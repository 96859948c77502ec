"""Point-prompt grids (pure numpy).

The grid is SAM's own (`segment_anything.utils.amg.build_point_grid`): ``n`` points per side,
evenly spaced with a half-step margin, ordered row by row (x fastest).
"""

from __future__ import annotations

import numpy as np


def point_grid(points_per_side: int) -> np.ndarray:
    """Returns a uniform grid of points in the unit square.

    Args:
        points_per_side: points along each side; the grid has ``points_per_side**2`` points.

    Returns:
        `(d, 2)` float64 array of (x, y) in ``[0, 1]``, row-major (x varies fastest).
    """
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1.0 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def grid_points_for_image(points_per_side: int, height: int, width: int) -> np.ndarray:
    """Returns the grid scaled to an image, in pixel coordinates.

    Args:
        points_per_side: points along each side.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        `(d, 2)` float64 array of (x, y) pixel coordinates.
    """
    return point_grid(points_per_side) * np.array([width, height], dtype=np.float64)
