"""`evaluate`: mIoU, mAP50, boundary F of predictions on a view, stored as FiftyOne evaluations.

Two of FiftyOne's own evaluation runs are stored, so the App's evaluation panel shows them:

- ``eval_key``: ``evaluate_segmentations`` of the semantic maps, with mIoU, boundary F and
  foreground IoU added to its metrics (FiftyOne's segmentation evaluation has no mIoU);
- ``<eval_key>_det``: ``evaluate_detections(use_masks=True, compute_mAP=True)`` of the instances
  at IoU 0.5 (COCO-style mask AP), when both sides have instances.

Our own figures come from `fiftyone_usam.evaluation.metrics` on the whole view (pixels pooled
over images, VOC's 255 ignored), with classes matched by name (see
`fiftyone_usam.evaluation.alignment`). When the raw ids of prediction and ground truth do not
already mean the same classes, or a side is given as instances, the aligned maps are written to
``<eval_key>_gt`` / ``<eval_key>_pred`` so FiftyOne's run compares like with like; they belong
to the evaluation and go when it is deleted or redone. Reading and writing the dataset is
`fiftyone_usam.fiftyone_io.evaluation`'s; this module composes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.alignment import (
    ClassSpace,
    class_space,
    is_class_agnostic,
    relabelling,
    superclass_of,
)
from fiftyone_usam.evaluation.metrics import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX
from fiftyone_usam.evaluation.report import EvaluationReport, write_report
from fiftyone_usam.evaluation.scoring import (
    PixelScores,
    Side,
    evaluation_notes,
    evaluation_report,
)
from fiftyone_usam.fiftyone_io.datasets import resolve_view, root_dataset
from fiftyone_usam.fiftyone_io.evaluation import (
    detection_run,
    gt_side,
    pred_side,
    relabelled,
    score_view,
    segmentation_run,
)
from fiftyone_usam.fiftyone_io.evaluation_records import (
    EVALUATIONS_KEY,
    check_key,
    claim_fields,
    record_done,
    record_failed,
)
from fiftyone_usam.progress import ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.ontology import Ontology

__all__ = ["DEFAULT_BOUNDARY_TOLERANCE", "EVALUATIONS_KEY", "EvaluationReport", "evaluate"]

logger = logging.getLogger(__name__)


def evaluate(
    dataset: str | fo.Dataset | fo.DatasetView,
    *,
    pred_field: str,
    gt_field: str,
    gt_instances_field: str | None = None,
    eval_key: str | None = None,
    view_tag: str | None = None,
    report: str | Path | None = None,
    iou: float = 0.5,
    boundary_tolerance: float = DEFAULT_BOUNDARY_TOLERANCE,
    class_agnostic: bool | None = None,
    groups: str | Path | Ontology | None = None,
    overwrite: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> EvaluationReport:
    """Evaluates predictions against ground truth and stores the evaluation on the dataset.

    Args:
        dataset: dataset name, dataset or view.
        pred_field: a prediction prefix (``usam`` -> ``usam_semantic`` + ``usam_instances``), or
            one ``fo.Segmentation`` or ``fo.Detections`` field.
        gt_field: ground truth: an ``fo.Segmentation`` field (255 = ignore), or ``fo.Detections``
            with instance masks (rendered to a semantic map; COCO crowds ignored).
        gt_instances_field: instance ground truth for mAP50 when ``gt_field`` is semantic;
            default ``<gt_field>_instances`` if it exists.
        eval_key: FiftyOne evaluation key; default ``<prefix>_eval``.
        view_tag: evaluate only samples with this tag.
        report: a directory for report.json, report.md and the PNG plots.
        iou: the IoU threshold of the instance AP (0.5: mAP50).
        boundary_tolerance: pixels within which boundaries match, for boundary F.
        class_agnostic: score "any object" vs background only (default: when the prediction's
            only class is ``foreground``, as the Otsu baseline's); mAP is then not computed.
        groups: an ontology with superclasses: ground-truth classes are scored as their
            superclass (for a head trained on superclasses, e.g. VOC's five). Instance ground
            truth is then copied, relabelled, to ``<eval_key>_gt_instances``.
        overwrite: replace an existing evaluation with the same key.
        progress: True for a bar, False for none, None for FiftyOne's default, or a callable.

    Raises:
        ConfigError: a field is missing or of the wrong type, or the key is invalid.
        FieldExistsError: the evaluation exists and ``overwrite`` is False.
    """
    view = resolve_view(dataset, view_tag)
    root = root_dataset(view)
    pred = pred_side(root, pred_field, view)
    gt = gt_side(root, gt_field, gt_instances_field, view)
    superclass = superclass_of(groups) if groups is not None else {}
    key = eval_key or f"{_prefix(pred_field, pred)}_eval"
    check_key(root, key, f"{key}_det", overwrite)
    rename = relabelling(gt.targets, pred.targets, superclass)
    claim_fields(root, key)
    try:
        result = _run(
            view, pred, gt, rename, key, iou, boundary_tolerance, class_agnostic, progress
        )
    except BaseException as e:
        record_failed(root, key, f"{type(e).__name__}: {e}")
        raise
    if report is not None:
        write_report(result, report)
    record_done(root, result)
    logger.info("evaluate: %s", result.summary())
    return result


def _run(
    view: fo.DatasetView,
    pred: Side,
    gt: Side,
    rename: dict[str, str],
    key: str,
    iou: float,
    boundary_tolerance: float,
    class_agnostic: bool | None,
    progress: bool | ProgressCallback | None,
) -> EvaluationReport:
    """Scores the view and runs FiftyOne's evaluations (after the key was claimed)."""
    if rename:  # superclasses, or labels spelled otherwise than the prediction's (for mAP)
        gt = relabelled(view, gt, rename, f"{key}_gt_instances")
    if class_agnostic is None:
        class_agnostic = is_class_agnostic(pred.targets)
    space = class_space(pred.targets, gt.targets, class_agnostic)
    derived = _derived_fields(space, pred, gt, key)
    result = _measure(view, pred, gt, space, derived, key, iou, boundary_tolerance, progress)
    fo_progress = progress if isinstance(progress, bool) else None
    segmentation_run(view, pred, gt, space, derived, result, fo_progress)
    _instance_run(view, pred, gt, result, class_agnostic, fo_progress)
    return result


def _derived_fields(space: ClassSpace, pred: Side, gt: Side, key: str) -> dict[str, str]:
    """The fields for aligned maps (``gt``, ``pred``), unless FiftyOne can compare the raw ones.

    Raises:
        ConfigError: the aligned classes do not fit a uint8 map.
    """
    raw_ok = space.raw_targets is not None and pred.kind == "semantic" and gt.kind == "semantic"
    derived = {} if raw_ok else {"gt": f"{key}_gt", "pred": f"{key}_pred"}
    if derived and space.num_classes >= IGNORE_INDEX:
        raise ConfigError(
            f"{space.num_classes} classes do not fit the aligned uint8 maps FiftyOne's run needs "
            f"(at most {IGNORE_INDEX - 1}): give the prediction the ground truth's mask_targets"
        )
    return derived


def _measure(
    view: fo.DatasetView,
    pred: Side,
    gt: Side,
    space: ClassSpace,
    derived: dict[str, str],
    key: str,
    iou: float,
    tolerance: float,
    progress: bool | ProgressCallback | None,
) -> EvaluationReport:
    """Our figures of the view (mAP still to come), writing the aligned maps if ``derived``."""
    scores = PixelScores(space, tolerance)
    skipped = score_view(view, pred, gt, scores, derived, progress)
    return evaluation_report(
        scores,
        dataset=root_dataset(view).name,
        eval_key=key,
        pred_field=pred.field,
        gt_field=gt.field,
        samples=len(view) - len(skipped),
        iou=iou,
        skipped=skipped,
        notes=evaluation_notes(space, gt.targets, scores.ignored, derived),
    )


def _instance_run(
    view: fo.DatasetView,
    pred: Side,
    gt: Side,
    result: EvaluationReport,
    class_agnostic: bool,
    progress: bool | None,
) -> None:
    """FiftyOne's mask AP as ``<eval_key>_det`` when both sides have instances; else a note."""
    if pred.instances and gt.instances and not class_agnostic:
        detection_run(
            view, pred.instances, gt.instances, f"{result.eval_key}_det", result, progress
        )
    elif not class_agnostic:
        missing = "prediction" if not pred.instances else "ground truth"
        result.notes.append(f"no mAP: the {missing} has no instance field with masks")
    else:
        result.notes.append("class-agnostic evaluation: no mAP (labels are not compared)")


def _prefix(pred_field: str, pred: Side) -> str:
    return pred_field if pred.field != pred_field else pred_field.removesuffix("_semantic")
