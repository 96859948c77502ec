"""Semantic-segmentation metrics on integer label maps (numpy; no FiftyOne, no torch).

Conventions, as in PASCAL VOC:

- a confusion matrix has rows = ground truth, columns = prediction, and is *accumulated over a
  whole view* (pixel counts summed over images), never averaged per image;
- ground-truth pixels labelled ``ignore_index`` (255: VOC's object boundaries, COCO crowds) are
  left out of every count;
- mIoU averages the per-class IoU over the classes, background included by default; a class absent
  from both ground truth and prediction has no IoU (NaN) and is left out of the mean.

Boundary precision / recall / F follow the usual "boundary F" score (DAVIS; Csurka et al., 2013):
a predicted boundary pixel is correct when a ground-truth boundary pixel of the same class lies
within ``tolerance`` pixels (Euclidean), and vice versa for recall. VOC's 255 bands lie along the
outlines, so for boundaries they are filled from the nearest labelled pixels (the outline is then
mid-band) rather than left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiftyone_usam.errors import ConfigError

IGNORE_INDEX = 255
# pixels within which a predicted and a true boundary pixel match, for boundary F
DEFAULT_BOUNDARY_TOLERANCE = 2.0


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> np.ndarray:
    """Pixel confusion matrix of one image; add the matrices of several images to accumulate.

    Args:
        gt: `(H, W)` ground-truth class ids in ``[0, num_classes)``, or ``ignore_index``.
        pred: `(H, W)` predicted class ids in ``[0, num_classes)``.
        num_classes: C, background (0) included.
        ignore_index: ground-truth value whose pixels are not counted (None: none).

    Returns:
        `(C, C)` int64; entry ``[i, j]`` counts pixels of true class i predicted as j.

    Raises:
        ConfigError: shapes differ, or a value is outside ``[0, C)`` (and not ``ignore_index``).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ConfigError(
            f"ground truth {gt.shape} and prediction {pred.shape} differ in shape: resize the "
            "prediction to the ground truth's image size first"
        )
    gt = gt.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    if ignore_index is not None:
        keep = gt != ignore_index
        gt, pred = gt[keep], pred[keep]
    _check_range(gt, num_classes, "ground truth")
    _check_range(pred, num_classes, "prediction")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU of each class from an accumulated confusion matrix.

    Args:
        cm: `(C, C)` counts, rows = ground truth.

    Returns:
        `(C,)` float64: TP / (TP + FP + FN); NaN for a class absent from both.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(cm: np.ndarray, include_background: bool = True) -> float:
    """Mean IoU over the classes present in ground truth or prediction.

    Args:
        cm: `(C, C)` accumulated counts, rows = ground truth; class 0 is background.
        include_background: count class 0 in the mean (the PASCAL VOC convention).

    Returns:
        The mean in [0, 1], or NaN when no class is present.
    """
    ious = per_class_iou(cm)
    if not include_background:
        ious = ious[1:]
    present = ious[~np.isnan(ious)]
    return float(present.mean()) if present.size else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels whose class is right (NaN when nothing was counted)."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def foreground_confusion(cm: np.ndarray) -> np.ndarray:
    """Collapses every non-background class into one "foreground" class.

    Args:
        cm: `(C, C)` counts, class 0 = background.

    Returns:
        `(2, 2)` counts: background / foreground.
    """
    cm = np.asarray(cm)
    return np.array(
        [[cm[0, 0], cm[0, 1:].sum()], [cm[1:, 0].sum(), cm[1:, 1:].sum()]], dtype=cm.dtype
    )


@dataclass(frozen=True)
class BoundaryScore:
    """Boundary precision, recall and F of accumulated boundary-pixel counts."""

    precision: float
    recall: float
    f1: float


def boundary_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    tolerance: float = DEFAULT_BOUNDARY_TOLERANCE,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """Per-class boundary-pixel counts of one image; add several images' counts to accumulate.

    A class's boundary is the set of its pixels with a 4-neighbour of another class (the image
    edge is not a boundary). Ground-truth pixels of ``ignore_index`` (VOC's bands *along* the
    object outlines) take the class of the nearest labelled pixel first, so the true boundary
    lies where the outline is, mid-band, and a prediction on the outline scores 1.

    Args:
        gt: `(H, W)` ground-truth ids, ``ignore_index`` allowed.
        pred: `(H, W)` predicted ids.
        num_classes: C, background included (background boundaries are not counted: they are
            the objects' boundaries again).
        tolerance: distance in pixels within which two boundary pixels match.
        ignore_index: ground-truth value to fill from its neighbours (None: none).

    Returns:
        `(C, 4)` int64 per class: matched predicted boundary pixels, predicted boundary pixels,
        matched ground-truth boundary pixels, ground-truth boundary pixels. Row 0 is zeros.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ConfigError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if ignore_index is not None:
        gt = _fill_ignored(gt, gt == ignore_index)
    _check_range(gt, num_classes, "ground truth")
    _check_range(pred, num_classes, "prediction")
    counts = np.zeros((num_classes, 4), dtype=np.int64)
    margin = int(np.ceil(tolerance)) + 1
    present = np.union1d(np.unique(gt), np.unique(pred))
    for c in present[present > 0]:
        window = _window(gt == c, pred == c, margin)  # work near the class only (speed)
        true, guess = gt[window] == c, pred[window] == c
        gt_edge, pred_edge = _boundary(true), _boundary(guess)
        counts[c] = (
            (pred_edge & _near(gt_edge, tolerance)).sum(),
            pred_edge.sum(),
            (gt_edge & _near(pred_edge, tolerance)).sum(),
            gt_edge.sum(),
        )
    return counts


def boundary_score(counts: np.ndarray) -> BoundaryScore:
    """Boundary precision / recall / F over all classes from `boundary_counts` sums.

    Args:
        counts: `(C, 4)` or `(4,)` counts as `boundary_counts` returns them (summed over images).

    Returns:
        Pixel-pooled precision and recall, and their harmonic mean; NaN where undefined
        (precision with no predicted boundary, recall with no true boundary).
    """
    matched_pred, pred_total, matched_gt, gt_total = np.asarray(counts).reshape(-1, 4).sum(axis=0)
    precision = matched_pred / pred_total if pred_total else float("nan")
    recall = matched_gt / gt_total if gt_total else float("nan")
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BoundaryScore(float(precision), float(recall), float(f1))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it; the image edge counts as inside."""
    from scipy import ndimage

    if not mask.any():
        return mask
    inner = ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(2, 1), border_value=1
    )
    return mask & ~inner


def _fill_ignored(gt: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """``gt`` with each ignored pixel set to its nearest labelled pixel's value."""
    from scipy import ndimage

    if not ignored.any():
        return gt
    if ignored.all():
        return np.zeros_like(gt)
    nearest = ndimage.distance_transform_edt(ignored, return_distances=False, return_indices=True)
    return gt[tuple(nearest)]


def _window(a: np.ndarray, b: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of ``a | b`` grown by ``margin`` pixels (clipped to the image)."""
    rows = np.flatnonzero((a | b).any(axis=1))
    cols = np.flatnonzero((a | b).any(axis=0))
    height, width = a.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, height)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, width)),
    )


def _near(edge: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within ``tolerance`` (Euclidean) of any pixel of ``edge``."""
    from scipy import ndimage

    if not edge.any():
        return np.zeros_like(edge)
    return ndimage.distance_transform_edt(~edge) <= tolerance


def _check_range(values: np.ndarray, num_classes: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)][0]
        raise ConfigError(
            f"{what} has class id {int(bad)}, outside 0..{num_classes - 1}: its mask_targets do "
            "not list that value (map it to a listed class, or to 255 to ignore it)"
        )
