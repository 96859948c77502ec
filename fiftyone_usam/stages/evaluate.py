"""`evaluate`: mIoU, mAP50, boundary F of predictions on a view, stored as FiftyOne evaluations.

Two of FiftyOne's own evaluation runs are stored, so the App's evaluation panel shows them:

- ``eval_key``: ``evaluate_segmentations`` of the semantic maps, with mIoU, boundary F and
  foreground IoU added to its metrics (FiftyOne's segmentation evaluation has no mIoU);
- ``<eval_key>_det``: ``evaluate_detections(use_masks=True, compute_mAP=True)`` of the instances
  at IoU 0.5 (COCO-style mask AP), when both sides have instances.

Our own figures come from `fiftyone_usam.evaluation.metrics` on the whole view (pixels pooled
over images, VOC's 255 ignored), with classes matched by name (see `alignment`). When the raw
ids of prediction and ground truth do not already mean the same classes, or a side is given as
instances, the aligned maps are written to ``<eval_key>_gt`` / ``<eval_key>_pred`` so FiftyOne's
run compares like with like; they belong to the evaluation and go when it is deleted or redone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.alignment import (
    ClassSpace,
    class_space,
    normalise_name,
    semantic_from_detections,
)
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
from fiftyone_usam.evaluation.report import EvaluationReport, write_report
from fiftyone_usam.fiftyone_io.datasets import record_entry, resolve_view, root_dataset
from fiftyone_usam.fiftyone_io.writer import FieldExistsError
from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)

EVALUATIONS_KEY = "usam_evaluations"
METRIC_URIS = {
    "mIoU": "@fiftyone-usam/usam/mean_iou",
    "boundary_f1": "@fiftyone-usam/usam/boundary_f1",
    "foreground_iou": "@fiftyone-usam/usam/foreground_iou",
}
DEFAULT_BOUNDARY_TOLERANCE = 2.0
_SAVE_BATCH = 64


@dataclass(frozen=True)
class _Side:
    """One side of the comparison: a semantic field, or instances rendered into maps."""

    field: str
    kind: str  # "semantic" | "instances"
    targets: dict[int, str]
    instances: str | None  # the instances field for mAP, if any
    rename: dict[str, str] = dataclass_field(
        default_factory=dict
    )  # class -> superclass (ground truth)


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
    pred = _pred_side(root, pred_field, view)
    gt = _gt_side(root, gt_field, gt_instances_field, view)
    superclass = _superclass_of(groups) if groups is not None else {}
    key = eval_key or f"{_prefix(pred_field, pred)}_eval"
    det_key = f"{key}_det"
    _check_key(root, key, det_key, overwrite)
    rename = _relabelling(gt, pred, superclass)
    # claim the fields this run may write before writing them, so a crash leaves them ours
    record_entry(
        root,
        EVALUATIONS_KEY,
        {"eval_key": key, "state": "running", "derived_fields": list(_derived_names(key))},
        match="eval_key",
    )
    if rename:  # superclasses, or labels spelled otherwise than the prediction's (for mAP)
        gt = _grouped(view, gt, rename, f"{key}_gt_instances")
    if class_agnostic is None:
        class_agnostic = [v for k, v in pred.targets.items() if k != 0] == ["foreground"]
    space = class_space(pred.targets, gt.targets, class_agnostic)
    raw_ok = space.raw_targets is not None and pred.kind == "semantic" and gt.kind == "semantic"
    derived = {} if raw_ok else {"gt": f"{key}_gt", "pred": f"{key}_pred"}
    if derived and space.num_classes >= IGNORE_INDEX:
        raise ConfigError(
            f"{space.num_classes} classes do not fit the aligned uint8 maps FiftyOne's run needs "
            f"(at most {IGNORE_INDEX - 1}): give the prediction the ground truth's mask_targets"
        )

    cm, bcounts, skipped, ignored = _score(
        view, pred, gt, space, derived, boundary_tolerance, progress
    )
    notes = _notes(space, pred, gt, ignored, derived)
    ious = per_class_iou(cm)
    bscore = boundary_score(bcounts)
    result = EvaluationReport(
        dataset=root.name,
        eval_key=key,
        pred_field=pred.field,
        gt_field=gt.field,
        classes=list(space.classes),
        samples=len(view) - len(skipped),
        mean_iou=_num(mean_iou(cm)),
        mean_iou_objects=_num(mean_iou(cm, include_background=False)),
        foreground_iou=_num(per_class_iou(foreground_confusion(cm))[1]),
        pixel_accuracy=_num(pixel_accuracy(cm)),
        per_class_iou={n: _num(v) for n, v in zip(space.classes, ious, strict=True)},
        boundary={
            "precision": _num(bscore.precision),
            "recall": _num(bscore.recall),
            "f1": _num(bscore.f1),
            "tolerance_px": boundary_tolerance,
        },
        confusion_matrix=cm.tolist(),
        iou=iou,
        skipped=skipped,
        notes=notes,
    )
    fo_progress = progress if isinstance(progress, bool) else None
    _fiftyone_segmentation_run(view, pred, gt, space, derived, key, result, fo_progress)
    if pred.instances and gt.instances and not class_agnostic:
        _fiftyone_detection_run(
            view, pred.instances, gt.instances, det_key, iou, result, fo_progress
        )
    elif not class_agnostic:
        missing = "prediction" if not pred.instances else "ground truth"
        result.notes.append(f"no mAP: the {missing} has no instance field with masks")
    else:
        result.notes.append("class-agnostic evaluation: no mAP (labels are not compared)")
    if report is not None:
        write_report(result, report)
    record_entry(
        root,
        EVALUATIONS_KEY,
        {
            "eval_key": key,
            "det_eval_key": result.det_eval_key,
            "pred_field": pred.field,
            "gt_field": gt.field,
            "mean_iou": result.mean_iou,
            "map50": result.map50,
            "boundary_f1": result.boundary["f1"],
            "foreground_iou": result.foreground_iou,
            "samples": result.samples,
            "report_dir": result.report_dir,
            "derived_fields": [n for n in _derived_names(key) if root.has_field(n)],
            "state": "done",
        },
        match="eval_key",
    )
    logger.info("evaluate: %s", result.summary())
    return result


def _score(
    view: fo.DatasetView,
    pred: _Side,
    gt: _Side,
    space: ClassSpace,
    derived: dict[str, str],
    tolerance: float,
    progress: bool | ProgressCallback | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, str], int]:
    """Accumulates the confusion matrix and boundary counts; writes derived maps if asked."""
    import fiftyone as fo

    c = space.num_classes
    cm = np.zeros((c, c), dtype=np.int64)
    bcounts = np.zeros((c, 4), dtype=np.int64)
    skipped: dict[str, str] = {}
    ignored = 0
    pred_ids = {name: value for value, name in pred.targets.items()}
    gt_ids = {name: value for value, name in gt.targets.items()}
    if gt.kind == "instances" and gt.rename:  # raw labels are drawn as what they became
        gt_ids.update({old: gt_ids[new] for old, new in gt.rename.items() if new in gt_ids})
    bar = Progress(progress, len(view), "evaluate")
    samples = (
        view.iter_samples(autosave=True, batch_size=_SAVE_BATCH)
        if derived
        else view.select_fields([pred.field, gt.field]).iter_samples()
    )
    try:
        for sample in samples:
            gt_map = _read(sample, gt, gt_ids, None)
            size = (gt_map.shape[1], gt_map.shape[0]) if gt_map is not None else None
            pred_map = _read(sample, pred, pred_ids, size)
            if gt_map is None or pred_map is None:
                skipped[sample.id] = f"no {'ground truth' if gt_map is None else 'prediction'}"
                if derived:  # leave no stale aligned map behind
                    sample[derived["gt"]] = None
                    sample[derived["pred"]] = None
                bar.update(1)
                continue
            pred_map = _resize_nearest(pred_map, gt_map.shape)
            aligned_gt, aligned_pred, unknown = space.align(gt_map, pred_map)
            ignored += unknown
            cm += confusion_matrix(aligned_gt, aligned_pred, c)
            bcounts += boundary_counts(aligned_gt, aligned_pred, c, tolerance)
            if derived:
                sample[derived["gt"]] = fo.Segmentation(mask=aligned_gt.astype(np.uint8))
                sample[derived["pred"]] = fo.Segmentation(mask=aligned_pred.astype(np.uint8))
            bar.update(1)
    finally:
        bar.close()
    return cm, bcounts, skipped, ignored


def _read(
    sample: Any, side: _Side, ids: dict[str, int], size: tuple[int, int] | None
) -> np.ndarray | None:
    """A side's raw `(H, W)` map of one sample, or None when the sample has no label.

    Instances are rendered with ``ids`` (class name -> raw value) at ``size`` ``(W, H)``
    (default: the image's size).
    """
    label = sample[side.field]
    if label is None:
        return None
    if side.kind == "semantic":
        mask = label.get_mask()
        if mask is None:
            return None
        if mask.ndim == 3:
            raise ConfigError(
                f"field {side.field!r} holds RGB masks; U-SAM evaluates integer class maps"
            )
        return np.asarray(mask)
    if size is None:
        from PIL import Image

        with Image.open(sample.filepath) as image:
            size = image.size
    return semantic_from_detections(label, size, ids)


def _resize_nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    from PIL import Image

    logger.warning("resizing a %s prediction to the ground truth's %s", mask.shape, shape)
    image = Image.fromarray(mask.astype(np.int32), mode="I")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def _fiftyone_segmentation_run(
    view: fo.DatasetView,
    pred: _Side,
    gt: _Side,
    space: ClassSpace,
    derived: dict[str, str],
    key: str,
    report: EvaluationReport,
    progress: bool | None,
) -> None:
    """FiftyOne's segmentation evaluation, with our figures added to its metrics."""
    if derived:
        root = root_dataset(view)
        targets = dict(enumerate(space.classes))
        for name in derived.values():
            root.mask_targets[name] = targets
        root.save()
        pred_field, gt_field = derived["pred"], derived["gt"]
    else:
        assert space.raw_targets is not None
        targets, pred_field, gt_field = space.raw_targets, pred.field, gt.field
    results = view.evaluate_segmentations(
        pred_field, gt_field=gt_field, eval_key=key, mask_targets=targets, progress=progress
    )
    figures = {
        "mIoU": report.mean_iou,
        "boundary_f1": report.boundary["f1"],
        "foreground_iou": report.foreground_iou,
    }
    custom = dict(results.custom_metrics or {})
    for name, value in figures.items():
        if value is not None:
            custom[METRIC_URIS[name]] = {
                "key": name,
                "value": value,
                "label": name.replace("_", " "),
                "lower_is_better": False,
            }
    results.custom_metrics = custom
    results.save()


def _fiftyone_detection_run(
    view: fo.DatasetView,
    pred_field: str,
    gt_field: str,
    key: str,
    iou: float,
    report: EvaluationReport,
    progress: bool | None,
) -> None:
    """FiftyOne's COCO-style mask AP at one IoU threshold (mAP50 at 0.5)."""
    results = view.evaluate_detections(
        pred_field,
        gt_field=gt_field,
        eval_key=key,
        method="coco",
        iou=iou,
        iou_threshs=[iou],
        use_masks=True,
        compute_mAP=True,
        progress=progress,
    )
    report.det_eval_key = key
    report.map50 = _num(results.mAP())
    classwise = getattr(results, "_classwise_AP", None)
    if classwise is not None:
        report.per_class_ap = {
            name: (None if ap < 0 else float(ap))
            for name, ap in zip(results.classes, classwise, strict=True)
        }


def _superclass_of(groups: str | Path | Ontology) -> dict[str, str]:
    """Class name -> superclass name, from an ontology with superclasses."""

    ontology = load_ontology(groups)
    rename = {spec.name: spec.superclass for spec in ontology.classes if spec.superclass}
    if not rename:
        raise ConfigError(
            "groups: the ontology gives no superclasses (add `superclass:` to its classes)"
        )
    return {k: v for k, v in rename.items() if v is not None}


def _relabelling(gt: _Side, pred: _Side, superclass: dict[str, str]) -> dict[str, str]:
    """Ground-truth label -> the label it is scored as: its superclass if grouped, spelled as
    the prediction spells it (mAP compares label strings; "pottedplant" is "potted plant")."""

    group = {normalise_name(k): v for k, v in superclass.items()}
    spelling = {normalise_name(v): v for k, v in pred.targets.items() if k != 0}
    rename = {}
    for value, name in gt.targets.items():
        if value == 0:
            continue
        grouped = group.get(normalise_name(name), name)
        scored = spelling.get(normalise_name(grouped), grouped)
        if scored != name:
            rename[name] = scored
    return rename


def _grouped(view: fo.DatasetView, gt: _Side, rename: dict[str, str], target: str) -> _Side:
    """The ground truth with labels renamed; its instances are relabelled into ``target``."""

    by_key = {normalise_name(k): v for k, v in rename.items()}

    def group(name: str) -> str:
        return by_key.get(normalise_name(name), name)

    targets = {k: (v if k == 0 else group(v)) for k, v in gt.targets.items()}
    fine = {v: group(v) for k, v in gt.targets.items() if k != 0 and group(v) != v}
    instances = gt.instances
    if instances is not None:
        for sample in view.iter_samples(autosave=True, batch_size=_SAVE_BATCH):
            detections = sample[instances]
            if detections is not None:
                detections = detections.copy()
                for det in detections.detections:
                    det.label = group(det.label or "")
            sample[target] = detections
        instances = target
    return replace(gt, targets=targets, instances=instances, rename=fine)


def _pred_side(dataset: fo.Dataset, pred_field: str, view: fo.DatasetView) -> _Side:
    semantic, instances = f"{pred_field}_semantic", f"{pred_field}_instances"
    if _kind(dataset, semantic) == "semantic":
        inst = instances if _kind(dataset, instances) == "instances" else None
        return _Side(semantic, "semantic", _targets(dataset, semantic), inst)
    kind = _kind(dataset, pred_field)
    if kind == "semantic":
        return _Side(pred_field, kind, _targets(dataset, pred_field), None)
    if kind == "instances":
        _check_instance_masks(view, pred_field)
        return _Side(pred_field, kind, _label_targets(dataset, pred_field), pred_field)
    raise ConfigError(
        f"dataset {dataset.name!r} has no prediction field {pred_field!r} (nor "
        f"{semantic!r}): pass a prediction prefix such as `usam`, or a Segmentation or "
        f"Detections field. Label fields: {_label_fields(dataset)}"
    )


def _gt_side(
    dataset: fo.Dataset, gt_field: str, instances: str | None, view: fo.DatasetView
) -> _Side:
    kind = _kind(dataset, gt_field)
    if kind == "instances":
        _check_instance_masks(view, gt_field)
        return _Side(gt_field, kind, _label_targets(dataset, gt_field), gt_field)
    if kind != "semantic":
        raise ConfigError(
            f"dataset {dataset.name!r} has no ground-truth field {gt_field!r} of type "
            f"Segmentation or Detections. Label fields: {_label_fields(dataset)}"
        )
    if instances is None and _kind(dataset, f"{gt_field}_instances") == "instances":
        instances = f"{gt_field}_instances"
    if instances is not None:
        if _kind(dataset, instances) != "instances":
            raise ConfigError(f"gt_instances_field {instances!r} is not a Detections field")
        _check_instance_masks(view, instances)
    return _Side(gt_field, kind, _targets(dataset, gt_field), instances)


def _kind(dataset: fo.Dataset, name: str) -> str | None:
    import fiftyone as fo

    field = dataset.get_field(name)
    document_type = getattr(field, "document_type", None)
    if document_type is None:
        return None
    if issubclass(document_type, fo.Segmentation):
        return "semantic"
    if issubclass(document_type, fo.Detections):
        return "instances"
    return None


def _targets(dataset: fo.Dataset, field: str) -> dict[int, str]:
    targets = dataset.mask_targets.get(field) or dataset.default_mask_targets
    if not targets:
        raise ConfigError(
            f"field {field!r} has no mask_targets, so its pixel values have no class names: "
            f"set them, e.g. dataset.mask_targets[{field!r}] = {{0: 'background', 1: 'cat'}}; "
            "dataset.save()"
        )
    return {int(k): str(v) for k, v in targets.items()}


def _label_targets(dataset: fo.Dataset, field: str) -> dict[int, str]:
    labels = sorted(str(v) for v in dataset.distinct(f"{field}.detections.label") if v)
    return {0: "background", **{i + 1: name for i, name in enumerate(labels)}}


def _check_instance_masks(view: fo.DatasetView, field: str) -> None:
    from fiftyone import ViewField as F

    no_mask = view.filter_labels(field, (F("mask") == None) & (F("mask_path") == None))  # noqa: E711
    count = no_mask.count(f"{field}.detections")
    if count:
        raise ConfigError(
            f"{count} detections of {field!r} have no instance mask; U-SAM evaluates masks "
            "(mAP on masks, and the semantic map drawn from them): give a field with masks"
        )


def _label_fields(dataset: fo.Dataset) -> str:
    names = [n for n in dataset.get_field_schema() if _kind(dataset, n)]
    return ", ".join(names) or "none"


def _prefix(pred_field: str, pred: _Side) -> str:
    return pred_field if pred.field != pred_field else pred_field.removesuffix("_semantic")


def _check_key(dataset: fo.Dataset, key: str, det_key: str, overwrite: bool) -> None:
    """Refuses an existing evaluation unless ``overwrite`` (then deletes it and the fields it
    wrote); refuses to touch a field with one of our derived names that another wrote."""
    if not key.isidentifier():
        raise ConfigError(f"invalid eval_key {key!r}: use letters, digits and underscores")
    existing = [k for k in (key, det_key) if k in dataset.list_evaluations()]
    if existing and not overwrite:
        raise FieldExistsError(
            f"dataset {dataset.name!r} already has the evaluation {existing[0]!r}: pass "
            "--overwrite to redo it, or choose another --eval-key"
        )
    entries = dataset.info.get(EVALUATIONS_KEY, [])
    entry: dict[str, Any] = next((e for e in entries if e.get("eval_key") == key), {})
    ours = set(entry.get("derived_fields", []))
    taken = [n for n in _derived_names(key) if dataset.has_field(n) and n not in ours]
    if taken:
        raise FieldExistsError(
            f"the field {taken[0]!r} is not from a U-SAM evaluation {key!r}, and the "
            "evaluation would write it: choose another --eval-key"
        )
    for k in existing:
        dataset.delete_evaluation(k)
    for name in ours:
        if dataset.has_field(name):
            dataset.delete_sample_field(name)
        dataset.mask_targets.pop(name, None)
    dataset.save()


def _derived_names(key: str) -> tuple[str, ...]:
    """The fields an evaluation may write besides FiftyOne's own."""
    return (f"{key}_gt", f"{key}_pred", f"{key}_gt_instances")


def _notes(
    space: ClassSpace, pred: _Side, gt: _Side, ignored: int, derived: dict[str, str]
) -> list[str]:
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
    if IGNORE_INDEX in gt.targets:
        notes.append(f"ground-truth value {IGNORE_INDEX} ({gt.targets[IGNORE_INDEX]}) ignored")
    return notes


def _num(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
