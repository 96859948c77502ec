"""Known-answer tests of the segmentation metrics (hand-computed on tiny label maps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.metrics import (
    boundary_counts,
    boundary_score,
    confusion_matrix,
    foreground_confusion,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

GT = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])


def test_confusion_matrix_counts_pixels_and_skips_ignored():
    cm = confusion_matrix(GT, PRED, num_classes=2)
    # rows = truth: bg pixels -> (bg, fg) = (2, 1); fg pixels -> (1, 3); the 255 pixel is skipped
    np.testing.assert_array_equal(cm, [[2, 1], [1, 3]])
    assert cm.sum() == GT.size - 1


def test_iou_values_by_hand():
    cm = confusion_matrix(GT, PRED, num_classes=2)
    np.testing.assert_allclose(per_class_iou(cm), [2 / 4, 3 / 5])
    assert mean_iou(cm) == pytest.approx((0.5 + 0.6) / 2)
    assert mean_iou(cm, include_background=False) == pytest.approx(0.6)
    assert pixel_accuracy(cm) == pytest.approx(5 / 7)


def test_ignore_index_none_counts_every_value():
    with pytest.raises(ConfigError, match="255"):
        confusion_matrix(GT, PRED, num_classes=2, ignore_index=None)


def test_accumulated_over_view_not_averaged_per_image():
    # image a: 1 bg pixel right; image b: 3 fg pixels, 1 predicted as bg
    a = confusion_matrix(np.array([[0]]), np.array([[0]]), 2)
    b = confusion_matrix(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 0]]), 2)
    pooled = mean_iou(a + b)
    # pooled: bg IoU = 1 / (1 + 1) = 0.5, fg IoU = 3 / 4 -> 0.625
    assert pooled == pytest.approx(0.625)
    per_image = np.nanmean([mean_iou(a), mean_iou(b)])  # (1.0 + (0 + 0.75) / 2) / 2
    assert per_image == pytest.approx(0.6875)


def test_absent_classes_are_left_out_predicted_only_classes_count_zero():
    gt = np.array([[0, 1], [1, 1]])
    pred = np.array([[0, 1], [1, 3]])
    cm = confusion_matrix(gt, pred, num_classes=4)
    ious = per_class_iou(cm)
    assert ious[0] == 1.0 and ious[1] == pytest.approx(2 / 3)
    assert math.isnan(ious[2])  # in neither: no IoU
    assert ious[3] == 0.0  # predicted, never true
    assert mean_iou(cm) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert math.isnan(mean_iou(np.zeros((3, 3), int)))


def test_values_outside_the_classes_are_errors_that_say_what_to_do():
    with pytest.raises(ConfigError, match=r"class id 7.*mask_targets"):
        confusion_matrix(np.array([[0, 7]]), np.array([[0, 1]]), 2)
    with pytest.raises(ConfigError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)


def test_foreground_confusion_collapses_classes():
    cm = np.array([[5, 1, 2], [1, 4, 3], [0, 2, 6]])
    np.testing.assert_array_equal(foreground_confusion(cm), [[5, 3], [1, 15]])


def _square(top: int, left: int, size: int = 4, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.int64)
    m[top : top + size, left : left + size] = 1
    return m


def test_boundary_f_exact_and_shifted_by_one_pixel():
    gt = _square(2, 2)
    assert boundary_score(boundary_counts(gt, gt, 2, tolerance=0)).f1 == 1.0
    shifted = _square(2, 3)
    counts = boundary_counts(gt, shifted, 2, tolerance=0)
    # a 4x4 square's boundary ring has 12 pixels; the rings share the top and bottom rows'
    # 3 overlapping columns
    np.testing.assert_array_equal(counts[1], [6, 12, 6, 12])
    np.testing.assert_array_equal(counts[0], [0, 0, 0, 0])
    score = boundary_score(counts)
    assert (score.precision, score.recall, score.f1) == (0.5, 0.5, 0.5)
    assert boundary_score(boundary_counts(gt, shifted, 2, tolerance=1)).f1 == 1.0


def test_boundary_image_edge_is_not_a_boundary():
    full = np.ones((5, 5), dtype=np.int64)
    counts = boundary_counts(full, full, 2)
    assert counts.sum() == 0
    assert math.isnan(boundary_score(counts).f1)


def test_boundary_along_a_voc_ignore_band_is_the_outline():
    """A 2-px 255 band straddles the outline of a 20x20 square (1 px outside, 1 px inside)."""
    square = np.zeros((40, 40), dtype=np.int64)
    square[10:30, 10:30] = 1
    gt = square.copy()
    outer = np.zeros_like(square, bool)
    outer[9:31, 9:31] = True
    inner = np.zeros_like(square, bool)
    inner[11:29, 11:29] = True
    gt[outer & ~inner] = 255
    exact = boundary_counts(gt, square, 2, tolerance=0)
    np.testing.assert_array_equal(exact[1], [76, 76, 76, 76])  # the 20x20 ring: 4 * 19 px
    grown = np.zeros_like(square)
    grown[7:33, 7:33] = 1  # 3 px too large all round: beyond a 2 px tolerance
    assert boundary_score(boundary_counts(gt, grown, 2, tolerance=2)).f1 == 0.0
    near = np.zeros_like(square)
    near[9:31, 9:31] = 1  # 1 px too large: within tolerance
    assert boundary_score(boundary_counts(gt, near, 2, tolerance=2)).f1 == 1.0


def ring(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (outside the image counts as inside)."""
    inside = np.pad(mask, 1, constant_values=True)
    interior = inside[2:, 1:-1] & inside[:-2, 1:-1] & inside[1:-1, 2:] & inside[1:-1, :-2]
    return mask & ~interior


def test_boundary_counts_ignore_the_rest_of_the_image():
    """Counting near each class only gives the same counts as the whole image would."""
    rng = np.random.default_rng(0)
    gt = np.zeros((60, 80), dtype=np.int64)
    pred = np.zeros_like(gt)
    for c in (1, 2, 3):
        y, x = rng.integers(0, 40), rng.integers(0, 60)
        gt[y : y + 15, x : x + 18] = c
        pred[y + 2 : y + 16, x - 1 : x + 17] = c
    counts = boundary_counts(gt, pred, 4, tolerance=1.5)
    for c in (1, 2, 3):
        true, guess = gt == c, pred == c
        gt_edge, pred_edge = ring(true), ring(guess)
        near_gt = ndimage.distance_transform_edt(~gt_edge) <= 1.5
        near_pred = ndimage.distance_transform_edt(~pred_edge) <= 1.5
        expected = [
            (pred_edge & near_gt).sum(),
            pred_edge.sum(),
            (gt_edge & near_pred).sum(),
            gt_edge.sum(),
        ]
        np.testing.assert_array_equal(counts[c], expected)


def test_boundary_counts_accumulate_over_images():
    gt = _square(2, 2)
    a = boundary_counts(gt, gt, 2, tolerance=0)
    b = boundary_counts(gt, np.zeros_like(gt), 2, tolerance=0)  # a missed object
    score = boundary_score(a + b)
    assert score.precision == 1.0
    assert score.recall == 0.5
    assert score.f1 == pytest.approx(2 / 3)
