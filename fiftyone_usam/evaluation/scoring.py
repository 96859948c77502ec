"""The figures of one evaluation, accumulated over a view's images (numpy; no FiftyOne).

`PixelScores` takes each image's raw ground-truth and predicted maps, puts them into the
evaluation's `ClassSpace` and adds their pixel counts up (pooled over images, as VOC does);
`evaluation_report` turns the totals into an `EvaluationReport`. A `Side` names what one side
of the comparison reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np

from fiftyone_usam.evaluation.alignment import ClassSpace, renamer
from fiftyone_usam.evaluation.metrics import (
    IGNORE_INDEX,
    boundary_counts,
    boundary_score,
    confusion_matrix,
    foreground_confusion,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)
from fiftyone_usam.evaluation.report import EvaluationReport

logger = logging.getLogger(__name__)

# the custom metrics added to FiftyOne's segmentation run, shown in the App's evaluation panel
METRIC_URIS = {
    "mIoU": "@fiftyone-usam/usam/mean_iou",
    "boundary_f1": "@fiftyone-usam/usam/boundary_f1",
    "foreground_iou": "@fiftyone-usam/usam/foreground_iou",
}


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a semantic field, or instances rendered into maps.

    Only names: reading the fields is `fiftyone_usam.fiftyone_io.evaluation`'s.

    Attributes:
        field: the field read for the semantic map.
        kind: ``"semantic"`` (`fo.Segmentation`) or ``"instances"`` (`fo.Detections`).
        targets: raw value -> class name; 0 is background.
        instances: the instances field for mAP, if any.
        rename: class -> the class it is scored as (ground truth, when grouped or respelled).
    """

    field: str
    kind: str
    targets: dict[int, str]
    instances: str | None
    rename: dict[str, str] = dataclass_field(default_factory=dict)

    def class_ids(self) -> dict[str, int]:
        """Label -> raw value, to draw instances with (renamed labels as what they became)."""
        ids = {name: value for value, name in self.targets.items()}
        if self.kind == "instances" and self.rename:
            ids.update({old: ids[new] for old, new in self.rename.items() if new in ids})
        return ids

    def grouped(self, rename: Mapping[str, str], instances: str | None) -> Side:
        """This side with labels renamed (see `renamer`), its instances in ``instances``."""
        group = renamer(rename)
        targets = {k: (v if k == 0 else group(v)) for k, v in self.targets.items()}
        fine = {v: group(v) for k, v in self.targets.items() if k != 0 and group(v) != v}
        return replace(self, targets=targets, instances=instances, rename=fine)


class PixelScores:
    """The confusion matrix and boundary counts of a view, added up image by image.

    Attributes:
        space: the aligned classes the counts are indexed by.
        tolerance: pixels within which boundaries match, for boundary F.
        confusion: `(C, C)` int64 pixel counts, rows = ground truth.
        boundary: `(C, 4)` int64 boundary counts (see `boundary_counts`).
        ignored: pixels left out because a side's value has no class name.
    """

    def __init__(self, space: ClassSpace, tolerance: float) -> None:
        c = space.num_classes
        self.space = space
        self.tolerance = tolerance
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.boundary = np.zeros((c, 4), dtype=np.int64)
        self.ignored = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts one image.

        Args:
            gt: `(H, W)` raw ground-truth values.
            pred: raw predicted values, resized (nearest) to ``gt``'s shape if it differs.

        Returns:
            The `(H, W)` aligned ground truth and prediction (int64), as `ClassSpace.align`.
        """
        aligned_gt, aligned_pred, unknown = self.space.align(gt, resize_nearest(pred, gt.shape))
        c = self.space.num_classes
        self.ignored += unknown
        self.confusion += confusion_matrix(aligned_gt, aligned_pred, c)
        self.boundary += boundary_counts(aligned_gt, aligned_pred, c, self.tolerance)
        return aligned_gt, aligned_pred


def evaluation_report(
    scores: PixelScores,
    *,
    dataset: str,
    eval_key: str,
    pred_field: str,
    gt_field: str,
    samples: int,
    iou: float,
    skipped: dict[str, str],
    notes: list[str],
) -> EvaluationReport:
    """The report of the accumulated counts (mAP is filled in by the instance evaluation)."""
    cm, space = scores.confusion, scores.space
    ious = per_class_iou(cm)
    bscore = boundary_score(scores.boundary)
    return EvaluationReport(
        dataset=dataset,
        eval_key=eval_key,
        pred_field=pred_field,
        gt_field=gt_field,
        classes=list(space.classes),
        samples=samples,
        mean_iou=finite(mean_iou(cm)),
        mean_iou_objects=finite(mean_iou(cm, include_background=False)),
        foreground_iou=finite(per_class_iou(foreground_confusion(cm))[1]),
        pixel_accuracy=finite(pixel_accuracy(cm)),
        per_class_iou={n: finite(v) for n, v in zip(space.classes, ious, strict=True)},
        boundary={
            "precision": finite(bscore.precision),
            "recall": finite(bscore.recall),
            "f1": finite(bscore.f1),
            "tolerance_px": scores.tolerance,
        },
        confusion_matrix=cm.tolist(),
        iou=iou,
        skipped=skipped,
        notes=notes,
    )


def evaluation_notes(
    space: ClassSpace, gt_targets: Mapping[int, str], ignored: int, derived: Mapping[str, str]
) -> list[str]:
    """What a reader of the figures should know: classes one side lacks, ignored pixels, ..."""
    notes = []
    if space.pred_only:
        notes.append(
            f"predicted classes the ground truth never names (IoU 0 when predicted): "
            f"{', '.join(space.pred_only)}"
        )
    if space.gt_only:
        notes.append(
            f"ground-truth classes the prediction cannot predict: {', '.join(space.gt_only)}"
        )
    if ignored:
        notes.append(f"{ignored} pixels had values missing from mask_targets and were ignored")
    if derived:
        notes.append(
            f"aligned maps for FiftyOne's run written to {derived['gt']!r} and {derived['pred']!r}"
        )
    if IGNORE_INDEX in gt_targets:
        notes.append(f"ground-truth value {IGNORE_INDEX} ({gt_targets[IGNORE_INDEX]}) ignored")
    return notes


def custom_metrics(report: EvaluationReport) -> dict[str, dict[str, Any]]:
    """Our figures as the ``custom_metrics`` of FiftyOne's run (those that are defined)."""
    figures = {
        "mIoU": report.mean_iou,
        "boundary_f1": report.boundary["f1"],
        "foreground_iou": report.foreground_iou,
    }
    return {
        METRIC_URIS[name]: {
            "key": name,
            "value": value,
            "label": name.replace("_", " "),
            "lower_is_better": False,
        }
        for name, value in figures.items()
        if value is not None
    }


def resize_nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` resized (nearest neighbour) to ``shape`` `(H, W)`; itself when already so."""
    if mask.shape == shape:
        return mask
    from PIL import Image

    logger.warning("resizing a %s prediction to the ground truth's %s", mask.shape, shape)
    image = Image.fromarray(mask.astype(np.int32), mode="I")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def finite(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN (undefined)."""
    value = float(value)
    return None if math.isnan(value) else value
