"""Augmented views: names, images, prompt points mapped into a view, the mirrored grid."""

import numpy as np
import pytest

from fiftyone_usam.embeddings.prompts import grid_points_for_image, point_grid
from fiftyone_usam.embeddings.views import (
    View,
    grid_flip_permutation,
    parse_view,
    view_image,
    view_points,
)


def test_parse_view_reads_the_supported_names_and_writes_them_back():
    assert parse_view("hflip") == View("hflip")
    assert parse_view(" HFlip ") == View("hflip")
    assert parse_view("scale:0.75") == View("scale", 0.75)
    assert parse_view("scale:2") == View("scale", 2.0)
    for name in ("hflip", "scale:0.75", "scale:1.5"):
        assert parse_view(name).name == name


@pytest.mark.parametrize("name", ["rotate", "vflip", "scale", "scale:", "crop:0.5", ""])
def test_parse_view_refuses_unknown_names_listing_the_supported_ones(name):
    with pytest.raises(ValueError, match=r"supported views are hflip, scale:<factor>"):
        parse_view(name)


@pytest.mark.parametrize("name", ["scale:abc", "scale:0", "scale:-0.5", "scale:5", "scale:nan"])
def test_parse_view_refuses_bad_scale_factors(name):
    with pytest.raises(ValueError, match=r"must be a number in \(0, 4\]"):
        parse_view(name)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [0]), (2, [1, 0, 3, 2]), (3, [2, 1, 0, 5, 4, 3, 8, 7, 6])],
)
def test_grid_flip_permutation_known_answers(n, expected):
    perm = grid_flip_permutation(n)
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(perm, expected)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 32])
def test_mirrored_grid_points_are_the_permuted_grid_points(n):
    grid = point_grid(n)
    perm = grid_flip_permutation(n)
    mirrored = np.stack([1.0 - grid[:, 0], grid[:, 1]], axis=1)
    np.testing.assert_allclose(mirrored, grid[perm], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n * n))
    np.testing.assert_array_equal(perm[perm], np.arange(n * n))  # mirroring twice: identity


def test_hflip_view_points_of_the_grid_are_the_permuted_grid_in_pixels():
    height, width, n = 48, 64, 4
    pixels = grid_points_for_image(n, height, width)
    mapped = view_points(pixels, View("hflip"), height, width)
    np.testing.assert_allclose(mapped, pixels[grid_flip_permutation(n)], atol=1e-9)


def test_grid_flip_permutation_refuses_an_empty_grid():
    with pytest.raises(ValueError, match=r"at least 1"):
        grid_flip_permutation(0)


def test_hflip_image_is_mirrored_left_to_right():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    flipped = view_image(image, View("hflip"))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped[0, 0], image[0, 2])


def test_scaled_image_has_the_rounded_size_and_keeps_a_flat_image_flat():
    image = np.full((10, 15, 3), 77, np.uint8)
    scaled = view_image(image, parse_view("scale:0.75"))
    assert scaled.shape == (8, 11, 3) and scaled.dtype == np.uint8  # round(7.5), round(11.25)
    assert (scaled == 77).all()
    assert view_image(image, View("scale", 2.0)).shape == (20, 30, 3)


def test_view_image_refuses_other_than_rgb_uint8():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        view_image(np.zeros((4, 4), np.uint8), View("hflip"))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        view_image(np.zeros((4, 4, 3), np.float32), View("hflip"))


def test_hflip_points_known_values_and_same_image_content():
    points = np.array([[0.0, 1.0], [2.5, 3.0], [10.0, 4.5]])
    mapped = view_points(points, View("hflip"), height=6, width=10)
    np.testing.assert_allclose(mapped, [[10.0, 1.0], [7.5, 3.0], [0.0, 4.5]])
    # a marked pixel (centre x + 0.5) is under its mapped point in the mirrored image
    image = np.zeros((6, 10, 3), np.uint8)
    image[3, 2] = 255
    ((x, y),) = view_points(np.array([[2.5, 3.5]]), View("hflip"), 6, 10)
    assert view_image(image, View("hflip"))[int(y), int(x), 0] == 255


def test_scale_points_use_the_actual_size_ratio():
    points = np.array([[0.0, 0.0], [15.0, 10.0], [3.0, 5.0]])
    mapped = view_points(points, View("scale", 0.75), height=10, width=15)
    ratio = np.array([11 / 15, 8 / 10])  # the view is 8 x 11, not 7.5 x 11.25
    np.testing.assert_allclose(mapped, points * ratio)
    assert not np.allclose(mapped, points * 0.75)


def test_scale_points_land_on_the_same_content():
    image = np.zeros((40, 60, 3), np.uint8)
    image[20:24, 30:34] = 255  # a 4x4 block centred at (32, 22)
    view = View("scale", 0.5)
    ((x, y),) = view_points(np.array([[32.0, 22.0]]), view, 40, 60)
    np.testing.assert_allclose((x, y), (16.0, 11.0))
    assert view_image(image, view)[int(y), int(x), 0] > 128


def test_view_points_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"\(d, 2\) points"):
        view_points(np.zeros((3, 3)), View("hflip"), 4, 4)
