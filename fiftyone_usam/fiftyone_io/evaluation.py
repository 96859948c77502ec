"""An evaluation's FiftyOne side, which `fiftyone_usam.stages.evaluate` composes.

`pred_side` / `gt_side` read which fields are compared; `score_view` reads each sample's maps
into `PixelScores` (and writes the aligned maps FiftyOne's run may need); `segmentation_run` /
`detection_run` are FiftyOne's own runs, shown in the App's evaluation panel. The record of which
evaluations and derived fields are ours is `fiftyone_io.evaluation_records`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.alignment import (
    BACKGROUND,
    ClassSpace,
    normalise_name,
    paint_instances,
    renamer,
)
from fiftyone_usam.evaluation.metrics import IGNORE_INDEX
from fiftyone_usam.evaluation.report import EvaluationReport
from fiftyone_usam.evaluation.scoring import PixelScores, Side, custom_metrics, finite
from fiftyone_usam.fiftyone_io.datasets import root_dataset
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

_SAVE_BATCH = 64


def pred_side(dataset: fo.Dataset, pred_field: str, view: fo.DatasetView) -> Side:
    """The prediction: ``<prefix>_semantic`` (+ ``_instances``), or one label field.

    Raises:
        ConfigError: no such Segmentation or Detections field, or instances without masks.
    """
    semantic, instances = f"{pred_field}_semantic", f"{pred_field}_instances"
    if _kind(dataset, semantic) == "semantic":
        inst = instances if _kind(dataset, instances) == "instances" else None
        return Side(semantic, "semantic", _targets(dataset, semantic), inst)
    kind = _kind(dataset, pred_field)
    if kind == "semantic":
        return Side(pred_field, kind, _targets(dataset, pred_field), None)
    if kind == "instances":
        _check_instance_masks(view, pred_field)
        return Side(pred_field, kind, _label_targets(dataset, pred_field), pred_field)
    raise ConfigError(
        f"dataset {dataset.name!r} has no prediction field {pred_field!r} (nor "
        f"{semantic!r}): pass a prediction prefix such as `usam`, or a Segmentation or "
        f"Detections field. Label fields: {_label_fields(dataset)}"
    )


def gt_side(
    dataset: fo.Dataset, gt_field: str, instances: str | None, view: fo.DatasetView
) -> Side:
    """The ground truth: a Segmentation field (with ``instances`` for mAP), or Detections.

    Raises:
        ConfigError: no such field, a non-Detections ``instances``, instances without masks.
    """
    kind = _kind(dataset, gt_field)
    if kind == "instances":
        _check_instance_masks(view, gt_field)
        return Side(gt_field, kind, _label_targets(dataset, gt_field), gt_field)
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
    return Side(gt_field, kind, _targets(dataset, gt_field), instances)


def relabelled(view: fo.DatasetView, gt: Side, rename: Mapping[str, str], target: str) -> Side:
    """The ground truth with labels renamed; its instances are relabelled into ``target``."""
    group = renamer(rename)
    if gt.instances is None:
        return gt.grouped(rename, None)
    for sample in view.iter_samples(autosave=True, batch_size=_SAVE_BATCH):
        detections = sample[gt.instances]
        if detections is not None:
            detections = detections.copy()
            for det in detections.detections:
                det.label = group(det.label or "")
        sample[target] = detections
    return gt.grouped(rename, target)


def score_view(
    view: fo.DatasetView,
    pred: Side,
    gt: Side,
    scores: PixelScores,
    derived: Mapping[str, str],
    progress: bool | ProgressCallback | None,
) -> dict[str, str]:
    """Adds every sample's maps to ``scores``; writes the aligned maps to ``derived`` if any.

    Returns:
        Sample id -> why it was not counted (no ground truth, no prediction).
    """
    skipped: dict[str, str] = {}
    pred_ids, gt_ids = pred.class_ids(), gt.class_ids()
    bar = Progress(progress, len(view), "evaluate")
    samples = (
        view.iter_samples(autosave=True, batch_size=_SAVE_BATCH)
        if derived
        else view.select_fields([pred.field, gt.field]).iter_samples()
    )
    try:
        for sample in samples:
            gt_map = read_map(sample, gt, gt_ids, None)
            size = (gt_map.shape[1], gt_map.shape[0]) if gt_map is not None else None
            pred_map = read_map(sample, pred, pred_ids, size)
            aligned: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
            if gt_map is None or pred_map is None:
                skipped[sample.id] = f"no {'ground truth' if gt_map is None else 'prediction'}"
            else:
                aligned = scores.add(gt_map, pred_map)
            if derived:  # None where not counted: leave no stale aligned map behind
                _write_aligned(sample, derived, *aligned)
            bar.update(1)
    finally:
        bar.close()
    return skipped


def _write_aligned(
    sample: Any, derived: Mapping[str, str], gt: np.ndarray | None, pred: np.ndarray | None
) -> None:
    import fiftyone as fo

    for name, values in ((derived["gt"], gt), (derived["pred"], pred)):
        sample[name] = None if values is None else fo.Segmentation(mask=values.astype(np.uint8))


def read_map(
    sample: Any, side: Side, ids: Mapping[str, int], size: tuple[int, int] | None
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


def semantic_from_detections(
    detections: fo.Detections | None,
    frame_size: tuple[int, int],
    class_ids: Mapping[str, int],
    crowd_attribute: str = "iscrowd",
) -> np.ndarray:
    """Renders instance masks into a semantic map, as `paint_instances` paints them.

    Crowd regions (``crowd_attribute`` truthy, as in COCO) become ``IGNORE_INDEX`` wherever no
    instance covers them; a smaller instance lying on a larger one stays visible. Detections
    without a mask fill their box.

    Args:
        detections: the instances (None: an empty image).
        frame_size: ``(width, height)`` of the image.
        class_ids: label name -> id; labels not in it are ignored (``IGNORE_INDEX``).

    Returns:
        `(H, W)` uint8 map, 0 = background.
    """
    width, height = frame_size
    dets = list(detections.detections) if detections is not None else []
    by_key = {normalise_name(k): v for k, v in class_ids.items()}
    crowd = [bool(d.has_field(crowd_attribute) and d.get_field(crowd_attribute)) for d in dets]
    return paint_instances(
        [det.to_segmentation(frame_size=frame_size, target=1).mask > 0 for det in dets],
        [by_key.get(normalise_name(det.label or ""), IGNORE_INDEX) for det in dets],
        crowd,
        (height, width),
    )


def segmentation_run(
    view: fo.DatasetView,
    pred: Side,
    gt: Side,
    space: ClassSpace,
    derived: Mapping[str, str],
    report: EvaluationReport,
    progress: bool | None,
) -> None:
    """FiftyOne's segmentation evaluation ``report.eval_key``, with our figures in its metrics.

    It compares the ``derived`` aligned maps if any, else the raw fields (whose values then
    mean the same classes: ``space.raw_targets``).
    """
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
        pred_field,
        gt_field=gt_field,
        eval_key=report.eval_key,
        mask_targets=targets,
        progress=progress,
    )
    custom = {**(results.custom_metrics or {}), **custom_metrics(report)}
    results.custom_metrics = custom
    results.save()


def detection_run(
    view: fo.DatasetView,
    pred_field: str,
    gt_field: str,
    key: str,
    report: EvaluationReport,
    progress: bool | None,
) -> None:
    """FiftyOne's COCO-style mask AP at ``report.iou`` (mAP50 at 0.5), stored as ``key``."""
    results = view.evaluate_detections(
        pred_field,
        gt_field=gt_field,
        eval_key=key,
        method="coco",
        iou=report.iou,
        iou_threshs=[report.iou],
        use_masks=True,
        compute_mAP=True,
        progress=progress,
    )
    report.det_eval_key = key
    report.map50 = finite(results.mAP())
    classwise = getattr(results, "_classwise_AP", None)
    if classwise is not None:
        report.per_class_ap = {
            name: (None if ap < 0 else float(ap))
            for name, ap in zip(results.classes, classwise, strict=True)
        }


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
    return {0: BACKGROUND, **{i + 1: name for i, name in enumerate(labels)}}


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
