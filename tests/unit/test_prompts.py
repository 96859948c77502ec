import numpy as np
import pytest
from segment_anything.utils.amg import build_point_grid

from fiftyone_usam.embeddings.prompts import grid_points_for_image, point_grid


@pytest.mark.parametrize("n", [1, 2, 10, 32])
def test_grid_is_sams_own_grid(n):
    np.testing.assert_allclose(point_grid(n), build_point_grid(n))


def test_grid_known_values_and_order():
    grid = point_grid(2)
    np.testing.assert_allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])


def test_grid_scaled_to_image_in_xy_pixels():
    points = grid_points_for_image(2, height=100, width=40)
    np.testing.assert_allclose(points, [[10, 25], [30, 25], [10, 75], [30, 75]])


def test_grid_rejects_empty():
    with pytest.raises(ValueError, match=r"at least 1"):
        point_grid(0)
