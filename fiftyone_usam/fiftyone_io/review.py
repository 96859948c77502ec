"""What the App's U-SAM panel shows and the views it opens, as plain functions of a dataset.

A prediction prefix ``field`` names U-SAM's fields (``<field>_instances``, ``_semantic``,
``_uncertainty``; see `fiftyone_usam.fiftyone_io.writer`). `review_summary` gathers the run, the
instances' classes and confidences, the newest finished evaluation and the reviewer's
corrections (label tags and edited labels, `fiftyone_usam.fiftyone_io.corrections`) in a few
aggregations, as a JSON-able dict the panel keeps in its state. `uncertain_first` and
`class_view` are the views the panel's review buttons load in the App.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import ConfigError, DatasetNotFoundError
from fiftyone_usam.fiftyone_io.corrections import KINDS, OK_TAG, WRONG_TAG, written_label
from fiftyone_usam.fiftyone_io.datasets import root_dataset
from fiftyone_usam.fiftyone_io.evaluation_records import EVALUATIONS_KEY
from fiftyone_usam.fiftyone_io.writer import PREDICTIONS_KEY, output_fields, recorded_run

if TYPE_CHECKING:
    import fiftyone as fo

HISTOGRAM_BINS = 10  # equal bins over [0, 1]
ALL_CLASSES = "all"  # the key of the overall histogram


def usam_fields(dataset: fo.Dataset | fo.DatasetView) -> list[str]:
    """The prefixes U-SAM wrote on ``dataset``, newest run first: the runs recorded in
    ``dataset.info["usam_predictions"]`` whose ``<prefix>_instances`` field exists."""
    root = root_dataset(dataset)
    runs = root.info.get(PREDICTIONS_KEY, [])
    fields = []
    for run in reversed(runs):  # record_entry appends: the newest run is last
        field = run.get("field")
        if field and field not in fields and root.has_field(f"{field}_instances"):
            fields.append(field)
    return fields


def review_summary(dataset: fo.Dataset | fo.DatasetView, field: str) -> dict[str, Any]:
    """What a reviewer sees of the predictions under ``field``.

    Returns:
        A JSON-able dict: ``field``; ``run`` (``head``, ``classes``, ``threshold``,
        ``head_stage``, ``adapted``, ``adaptation``); ``samples`` and ``labelled`` (samples with
        a semantic map); ``instances`` (total) and ``counts`` (class -> instances, every class
        of the run listed); ``histogram`` (``edges``, ``HISTOGRAM_BINS + 1`` floats over [0, 1],
        and ``counts``: ``"all"`` and each class -> instances per bin); ``evaluation`` (the
        newest finished evaluation of this field: ``eval_key``, ``gt_field``, ``mean_iou``,
        ``map50``; None when there is none); ``corrections`` (class -> kind -> instances, kinds
        ``ok``, ``wrong``, ``relabel``; keyed by U-SAM's own label) and ``corrected`` (total).

    Raises:
        DatasetNotFoundError: ``field`` is not a U-SAM prefix of this dataset.
    """
    root = root_dataset(dataset)
    instances = _instances_field(root, field)
    run = recorded_run(root, field) or {}
    settings = run.get("settings", {})
    columns = _detection_columns(dataset, instances, written_label(run))
    labels = columns["label"]
    classes = list(settings.get("classes") or sorted({x for x in labels if x is not None}))
    counts = Counter(labels)
    semantic = output_fields(field)["semantic"]
    return {
        "field": field,
        "run": _run_description(run),
        "samples": dataset.count(),
        "labelled": dataset.count(semantic),
        "instances": len(labels),
        "counts": {c: counts.get(c, 0) for c in [*classes, *sorted(set(counts) - set(classes))]},
        "histogram": confidence_histogram(labels, columns["confidence"], classes),
        "evaluation": latest_evaluation(root, field),
        **_corrections(columns, classes),
    }


def uncertain_first(view: fo.Dataset | fo.DatasetView, field: str) -> fo.DatasetView:
    """``view`` sorted by ``<field>_uncertainty``, most uncertain first (samples without one
    last)."""
    uncertainty = output_fields(field)["uncertainty"]
    if not root_dataset(view).has_field(uncertainty):
        raise DatasetNotFoundError(
            f"dataset has no field {uncertainty!r}: label it with `usam predict --field {field}`"
        )
    return view.sort_by(uncertainty, reverse=True)


def class_view(
    view: fo.Dataset | fo.DatasetView, field: str, label: str, low: float, high: float
) -> fo.DatasetView:
    """The samples of ``view`` with an instance of class ``label`` whose confidence lies in
    ``[low, high]``, showing only those instances of ``<field>_instances``.

    Raises:
        ConfigError: the range is not within [0, 1] or ``low > high``.
        DatasetNotFoundError: ``field`` is not a U-SAM prefix of this dataset.
    """
    from fiftyone import ViewField as F

    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"invalid confidence range [{low}, {high}]: use 0 <= low <= high <= 1")
    instances = _instances_field(root_dataset(view), field)
    match = (F("label") == label) & (F("confidence") >= low) & (F("confidence") <= high)
    return view.filter_labels(instances, match)


def confidence_histogram(
    labels: Sequence[str | None], confidences: Sequence[float | None], classes: Iterable[str]
) -> dict[str, Any]:
    """Instances per confidence bin, overall (``"all"``) and per class; an instance without a
    confidence (a user's own label) is left out. ``edges`` holds the bins' bounds."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    pairs = [(x, c) for x, c in zip(labels, confidences, strict=True) if c is not None]

    def histogram(values: list[float]) -> list[int]:
        return [int(n) for n in np.histogram(np.clip(values, 0.0, 1.0), bins=edges)[0]]

    counts = {ALL_CLASSES: histogram([c for _, c in pairs])}
    for name in classes:
        counts[name] = histogram([c for x, c in pairs if x == name])
    return {"edges": [float(e) for e in edges], "counts": counts}


def latest_evaluation(dataset: fo.Dataset | fo.DatasetView, field: str) -> dict[str, Any] | None:
    """The newest finished U-SAM evaluation of ``field`` (``eval_key``, ``gt_field``,
    ``mean_iou``, ``map50``, ``det_eval_key``), or None."""
    names = {field, *output_fields(field).values()}
    entries = root_dataset(dataset).info.get(EVALUATIONS_KEY, [])
    for entry in reversed(entries):
        if entry.get("state") == "done" and entry.get("pred_field") in names:
            keys = ("eval_key", "gt_field", "mean_iou", "map50", "det_eval_key")
            return {key: entry.get(key) for key in keys}
    return None


def _instances_field(dataset: fo.Dataset, field: str) -> str:
    instances = output_fields(field)["instances"]
    if not dataset.has_field(instances):
        known = ", ".join(usam_fields(dataset)) or "none"
        raise DatasetNotFoundError(
            f"dataset {dataset.name!r} has no U-SAM field {instances!r} (U-SAM prefixes: "
            f"{known}): label it with `usam predict --field {field}`, or pick a listed prefix"
        )
    return instances


def _detection_columns(
    view: fo.Dataset | fo.DatasetView, instances: str, written: str
) -> dict[str, list[Any]]:
    """One flat list per attribute, one entry per instance, in one aggregation pipeline.

    ``written`` is the label as U-SAM wrote it (the attribute `written_label` names); ``head``
    is the head's, the key of the corrections.
    """
    import fiftyone as fo

    paths = {
        "label": "label",
        "confidence": "confidence",
        "tags": "tags",
        "head": "head_label",
        "written": written,
    }
    results = view.aggregate([fo.Values(f"{instances}.detections.{p}") for p in paths.values()])
    # one list per sample (None where a sample has no detections): flatten that level only, as
    # ``tags`` are lists themselves
    return {
        key: [value for sample in column or [] for value in sample or []]
        for key, column in zip(paths, results, strict=True)
    }


def _corrections(columns: dict[str, list[Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Corrections per class (U-SAM's label) and kind; a detection tagged and relabelled
    counts once in each of its kinds."""
    table = {name: dict.fromkeys(KINDS, 0) for name in classes}
    corrected = 0
    for label, tags, head, written in zip(
        columns["label"], columns["tags"], columns["head"], columns["written"], strict=True
    ):
        kinds = [k for k, tag in (("ok", OK_TAG), ("wrong", WRONG_TAG)) if tag in (tags or [])]
        if written is not None and label != written:
            kinds.append("relabel")
        if not kinds:
            continue
        corrected += 1
        row = table.setdefault(head or label or "", dict.fromkeys(KINDS, 0))
        for kind in kinds:
            row[kind] += 1
    return {"corrections": table, "corrected": corrected}


def _run_description(run: dict[str, Any]) -> dict[str, Any]:
    settings = run.get("settings", {})
    stage = run.get("head_stage")
    return {
        "head": run.get("head"),
        "classes": list(settings.get("classes", [])),
        "threshold": settings.get("threshold"),
        "head_stage": stage,
        "adapted": stage == "adapted" or bool(run.get("adaptation")),
        "adaptation": run.get("adaptation"),
        "updated_at": run.get("updated_at"),
    }
