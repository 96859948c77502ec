"""Writing predictions into a dataset: field checks, labels (in the document or on disk),
``mask_targets`` and the run record.

A prediction run writes three fields for a prefix ``field``: ``<field>_semantic``
(`fo.Segmentation`), ``<field>_instances`` (`fo.Detections`) and ``<field>_uncertainty`` (float).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.datasets import record_entry, root_dataset
from fiftyone_usam.fiftyone_io.labels import (
    PROMPTS_FINGERPRINT,
    detections_document,
    mask_targets,
    segmentation_document,
    to_detections,
    to_segmentation,
)

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.inference.predictor import Prediction

PREDICTIONS_KEY = "usam_predictions"
SUFFIXES = ("semantic", "instances", "uncertainty")


class FieldExistsError(USAMError):
    """A prediction would overwrite or contradict fields already on the dataset."""


def output_fields(field: str) -> dict[str, str]:
    """``{"semantic": "<field>_semantic", "instances": ..., "uncertainty": ...}``."""
    if not field or not field.replace("_", "").isalnum():
        raise FieldExistsError(
            f"invalid field prefix {field!r}: use letters, digits and underscores, e.g. usam"
        )
    return {suffix: f"{field}_{suffix}" for suffix in SUFFIXES}


def recorded_run(collection: fo.Dataset | fo.DatasetView, field: str) -> dict[str, Any] | None:
    """The run record of the predictions under ``field``, if any."""
    runs = root_dataset(collection).info.get(PREDICTIONS_KEY, [])
    return next((run for run in reversed(runs) if run.get("field") == field), None)


def plan_writes(
    view: fo.DatasetView,
    field: str,
    classes: tuple[str, ...],
    settings: dict[str, Any],
    overwrite: bool,
) -> list[str]:
    """Checks the output fields and returns the ids of the view's samples to (re)label.

    - No output field exists: every sample.
    - They exist from a run with the same settings: the samples not labelled yet (a re-run
      resumes, and an unchanged re-run does nothing).
    - Otherwise: an error, unless ``overwrite`` (then every sample of the view).
    Whatever ``overwrite`` says, classes that differ from the field's ``mask_targets`` are
    refused unless the whole dataset is relabelled (then the old fields are cleared first).
    With ``overwrite``, the view's output fields are cleared before anything is written.

    Raises:
        FieldExistsError: with what to do.
    """
    dataset = root_dataset(view)
    names = output_fields(field)
    _check_field_types(dataset, field, names, overwrite)
    existing = [name for name in names.values() if dataset.has_field(name)]
    ids = view.values("id")
    if not existing:
        return ids
    held = held_classes(dataset, field, classes)
    if held is not None:
        if not (overwrite and len(ids) == len(dataset)):
            raise FieldExistsError(
                f"field {names['semantic']!r} holds the classes {list(held.values())}, this "
                f"head predicts {list(classes)}: write to another --field, or pass --overwrite "
                "on the whole dataset to replace the old predictions everywhere"
            )
        dataset.delete_sample_fields(existing)
        return ids
    run = recorded_run(dataset, field)
    if overwrite:
        # cleared now, so a killed overwrite resumes with the old labels gone, not taken for new
        view.clear_sample_fields(existing)
        return ids
    if run is not None and run.get("settings") == settings:
        labelled = view.exists(names["semantic"]).values("id")
        done = set(labelled)
        return [i for i in ids if i not in done]
    raise FieldExistsError(
        f"the dataset already has {', '.join(existing)}"
        + (" from a run with other settings" if run is not None else "")
        + ": pass --overwrite to replace them, or choose another --field"
    )


def held_classes(
    dataset: fo.Dataset, field: str, classes: tuple[str, ...]
) -> dict[int, str] | None:
    """The ``mask_targets`` of the prefix's semantic field when they are not those of
    ``classes`` (which `plan_writes` then refuses to mix with); None when they are, or unset."""
    targets = dataset.mask_targets.get(output_fields(field)["semantic"])
    if not targets:
        return None
    held = {int(k): v for k, v in sorted(targets.items(), key=lambda kv: int(kv[0]))}
    return None if held == mask_targets(classes) else held


def _check_field_types(
    dataset: fo.Dataset, field: str, names: dict[str, str], overwrite: bool
) -> None:
    """Refuses, before anything is cleared or written, output fields of another type.

    A field of another type is deleted only when ``overwrite`` is given and U-SAM's own run
    record says that it wrote under this prefix; the user's own fields are never touched.

    Raises:
        FieldExistsError: with what to do.
    """
    import fiftyone as fo

    expected = _label_types()
    schema = dataset.get_field_schema()
    wrong = []
    for kind, name in names.items():
        if name not in schema:
            continue
        found = schema[name]
        document = getattr(found, "document_type", None)
        ok = (
            isinstance(found, fo.FloatField)
            if expected[kind] is None
            else isinstance(found, fo.EmbeddedDocumentField) and document is expected[kind]
        )
        if not ok:
            wrong.append((name, document.__name__ if document else type(found).__name__))
    if not wrong:
        return
    described = ", ".join(f"{name} is a {kind}" for name, kind in wrong)
    if overwrite and recorded_run(dataset, field) is not None:
        dataset.delete_sample_fields([name for name, _ in wrong])
        return
    raise FieldExistsError(
        f"{described}, not what U-SAM writes there (fo.Segmentation, fo.Detections, float): "
        "U-SAM never replaces a field it did not write, even with --overwrite. Choose "
        "another --field prefix"
    )


def sample_labels(
    prediction: Prediction,
    classes: tuple[str, ...],
    *,
    mask_dir: str | Path | None = None,
    sample_id: str = "",
) -> dict[str, Any]:
    """A prediction as the values of the three output fields (keys: `SUFFIXES`).

    With ``mask_dir``, masks are written as PNGs (``<mask_dir>/<sample_id>/semantic.png`` and
    ``instance_<i>.png``) and the labels hold their paths, keeping documents small.
    """
    semantic = to_segmentation(prediction.semantic)
    instances = to_detections(prediction.instances, prediction.image_size, classes)
    if prediction.prompts_fingerprint is not None:
        instances[PROMPTS_FINGERPRINT] = prediction.prompts_fingerprint
    if mask_dir is not None:
        semantic.mask_path, paths = _mask_files(prediction, mask_dir, sample_id)
        semantic.mask = None
        for detection, path in zip(instances.detections, paths, strict=True):
            detection.mask_path, detection.mask = path, None
    return {"semantic": semantic, "instances": instances, "uncertainty": prediction.uncertainty}


def sample_documents(
    prediction: Prediction,
    classes: tuple[str, ...],
    *,
    mask_dir: str | Path | None = None,
    sample_id: str = "",
) -> dict[str, Any]:
    """`sample_labels` as the documents FiftyOne stores, for bulk writes without its object
    layer: the same labels (and PNG files with ``mask_dir``), built from the instances' crops."""
    semantic_path, mask_paths = None, None
    if mask_dir is not None:
        semantic_path, mask_paths = _mask_files(prediction, mask_dir, sample_id)
    semantic = segmentation_document(
        prediction.semantic if semantic_path is None else None, semantic_path
    )
    return {
        "semantic": semantic,
        "instances": detections_document(
            prediction.instances,
            prediction.image_size,
            classes,
            mask_paths,
            prediction.prompts_fingerprint,
        ),
        "uncertainty": float(prediction.uncertainty),
    }


def declare_output_fields(dataset: fo.Dataset, field: str) -> None:
    """Adds the three output fields to the schema (as saving labels would) if missing."""
    import fiftyone as fo

    for kind, name in output_fields(field).items():
        if dataset.has_sample_field(name):
            continue
        label_type = _label_types()[kind]
        if label_type is None:
            dataset.add_sample_field(name, fo.FloatField)
        else:
            dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=label_type)


def set_mask_targets(
    collection: fo.Dataset | fo.DatasetView, field: str, classes: tuple[str, ...]
) -> None:
    """Sets ``mask_targets`` of ``<field>_semantic`` (0 is background)."""
    set_field_mask_targets(collection, output_fields(field)["semantic"], classes)


def set_field_mask_targets(
    collection: fo.Dataset | fo.DatasetView, semantic_field: str, classes: tuple[str, ...]
) -> None:
    """Sets the ``mask_targets`` of a semantic field (0 is background)."""
    dataset = root_dataset(collection)
    dataset.mask_targets = {**dataset.mask_targets, semantic_field: mask_targets(classes)}
    dataset.save()


def record_run(
    collection: fo.Dataset | fo.DatasetView, field: str, details: dict[str, Any]
) -> None:
    """Records a prediction run (head, SAM, settings) in ``dataset.info["usam_predictions"]``."""
    record_entry(collection, PREDICTIONS_KEY, {"field": field, **details}, match="field")


def _mask_files(
    prediction: Prediction, mask_dir: str | Path, sample_id: str
) -> tuple[str, list[str]]:
    """Writes ``<mask_dir>/<sample_id>/semantic.png`` and ``instance_<i>.png`` (each instance's
    crop, 0/255); returns their paths."""
    folder = Path(mask_dir).expanduser() / sample_id
    folder.mkdir(parents=True, exist_ok=True)
    semantic = _write_png(folder / "semantic.png", prediction.semantic)
    instances = [
        _write_png(folder / f"instance_{i}.png", crop.astype(np.uint8) * 255)
        for i, crop in enumerate(prediction.instances.crops)
    ]
    return semantic, instances


def _label_types() -> dict[str, Any]:
    """The label type of each output field (None: a float field)."""
    import fiftyone as fo

    return {"semantic": fo.Segmentation, "instances": fo.Detections, "uncertainty": None}


def _write_png(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    mode = "I;16" if array.dtype == np.uint16 else "L"
    Image.fromarray(array, mode=mode).save(tmp)
    os.replace(tmp, path)
    return str(path)
