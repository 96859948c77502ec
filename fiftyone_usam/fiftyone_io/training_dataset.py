"""The FiftyOne dataset that training images go into, and the ontology stored with it.

A training dataset holds one image per sample with its class in ``ground_truth``
(`fo.Classification`) and where it came from (see the fields in `synthetic` and `crawled`).
Its ontology (`Ontology.to_dict`) is kept in ``dataset.info["usam_ontology"]`` and its class
names in ``dataset.classes["ground_truth"]``; each run is appended to
``dataset.info["usam_source_runs"]``.

Class ids are positions (class ``i`` has label id ``i + 1``), so a dataset's classes keep their
order: a later run into the same dataset may name all of its classes, only the first ones, or all
of them followed by new ones (which are appended). Any other class list is refused.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.datasets import root_dataset, usam_dir
from fiftyone_usam.ontology import Ontology, load_ontology, ontology_from_dict

if TYPE_CHECKING:
    import fiftyone as fo

ONTOLOGY_KEY = "usam_ontology"
RUNS_KEY = "usam_source_runs"
LABEL_FIELD = "ground_truth"
_MAX_RUNS_KEPT = 100


class OntologyMismatchError(ConfigError):
    """A run's classes do not fit the classes a dataset was built with."""


def stored_ontology(dataset: fo.Dataset | fo.DatasetView) -> Ontology | None:
    """The ontology stored with a training dataset, or None if it has none."""
    data = _root(dataset).info.get(ONTOLOGY_KEY)
    if data is None:
        return None
    return ontology_from_dict(data, source=f"dataset {dataset.name!r} (info[{ONTOLOGY_KEY!r}])")


def merge_ontologies(stored: Ontology | None, run: Ontology, dataset_name: str = "") -> Ontology:
    """The ontology a dataset holds after a run with ``run``'s classes.

    Compatible: ``run`` names the stored classes in order, or a leading part of them, or all
    of them followed by new ones. Classes named by the run take its prompts, synonyms and
    superclass; the others keep the stored ones. The run's default prompt is kept.

    Raises:
        OntologyMismatchError: the class lists are otherwise different.
    """
    if stored is None:
        return run
    old, new = stored.names, run.names
    shorter = min(len(old), len(new))
    if old[:shorter] != new[:shorter]:
        where = f"dataset {dataset_name!r}" if dataset_name else "the dataset"
        raise OntologyMismatchError(
            f"{where} was built for the classes [{', '.join(old)}], but this run names "
            f"[{', '.join(new)}]. Class ids follow the class order, so a dataset keeps its "
            "classes: name the same classes in the same order (you may leave out trailing ones "
            "or add new ones at the end), or write to another dataset."
        )
    by_name = {spec.name: spec for spec in run.classes}
    classes = tuple(by_name.get(spec.name, spec) for spec in stored.classes)
    return replace(run, classes=classes + run.classes[len(old) :])


def find_training_dataset(name: str, ontology: Ontology) -> fo.Dataset | None:
    """The existing dataset ``name`` after checking that a run with ``ontology`` may write to it.

    Writes nothing, so a run can check everything before it starts (and fail without leaving an
    empty dataset behind).

    Returns:
        The dataset, or None if there is none of that name.

    Raises:
        OntologyMismatchError: the dataset holds other classes.
        ConfigError: the dataset is not empty and was not made by U-SAM (it has no stored
            ontology), or it does not hold images.
    """
    import fiftyone as fo

    if not name or not name.strip():
        raise ConfigError("a dataset name is needed (--dataset NAME)")
    if not fo.dataset_exists(name):
        return None
    dataset = fo.load_dataset(name)
    _check_reusable(dataset)
    merge_ontologies(stored_ontology(dataset), ontology, name)
    return dataset


def open_training_dataset(name: str, ontology: Ontology) -> fo.Dataset:
    """Opens or creates (persistent) the training dataset ``name`` and stores the ontology.

    The stored ontology becomes ``merge_ontologies(stored, ontology)``.

    Raises:
        OntologyMismatchError, ConfigError: see `find_training_dataset`.
    """
    import fiftyone as fo

    dataset = find_training_dataset(name, ontology) or fo.Dataset(name, persistent=True)
    merged = merge_ontologies(stored_ontology(dataset), ontology, name)
    dataset.info[ONTOLOGY_KEY] = merged.to_dict()
    dataset.classes = {**dataset.classes, LABEL_FIELD: list(merged.names)}
    dataset.save()
    return dataset


def declare_fields(dataset: fo.Dataset, fields: dict[str, type]) -> None:
    """Adds ``ground_truth`` and the provenance ``fields`` (name -> str, int or float) if absent.

    Declared up front, so a field is in the schema (and the App's sidebar) even while all its
    values are None, e.g. ``negative_prompt``.
    """
    import fiftyone as fo

    kinds = {str: fo.StringField, int: fo.IntField, float: fo.FloatField}
    schema = dataset.get_field_schema()
    if LABEL_FIELD not in schema:
        dataset.add_sample_field(
            LABEL_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification
        )
    for name, kind in fields.items():
        if name not in schema:
            dataset.add_sample_field(name, kinds[kind])


def resolve_ontology(classes: Any | None, dataset: str) -> Ontology:
    """The ontology of a run: ``classes`` loaded, or else the one stored with ``dataset``.

    Raises:
        ConfigError: no classes given and the dataset has none stored.
    """

    if classes is not None:
        return load_ontology(classes)
    import fiftyone as fo

    stored = stored_ontology(fo.load_dataset(dataset)) if fo.dataset_exists(dataset) else None
    if stored is None:
        raise ConfigError(
            f"no classes given and dataset {dataset!r} has none stored: name them, e.g. "
            '--classes "person,dog,potted plant" or --classes ontology.yaml'
        )
    return stored


def default_images_dir(dataset_name: str) -> Path:
    """Where a dataset's images go when no folder is named: beside FiftyOne's dataset files."""
    return usam_dir(dataset_name) / "images"


def training_sample(
    path: Path,
    label: str,
    *,
    width: int,
    height: int,
    num_channels: int,
    mime_type: str,
    size_bytes: int,
    **provenance: Any,
) -> fo.Sample:
    """A training image as a sample: its metadata, its class (``ground_truth``) and where it
    came from (``source`` and the source's own fields)."""
    import fiftyone as fo

    return fo.Sample(
        filepath=str(path),
        metadata=fo.ImageMetadata(
            width=width,
            height=height,
            num_channels=num_channels,
            mime_type=mime_type,
            size_bytes=size_bytes,
        ),
        **{LABEL_FIELD: fo.Classification(label=label)},
        **provenance,
    )


def record_run(dataset: fo.Dataset, kind: str, settings: dict[str, Any], summary: str) -> None:
    """Appends a run (its kind, settings and one-line summary) to ``dataset.info``."""
    runs = list(dataset.info.get(RUNS_KEY, []))[-(_MAX_RUNS_KEPT - 1) :]
    runs.append(
        {
            "kind": kind,
            "settings": settings,
            "summary": summary,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }
    )
    dataset.info[RUNS_KEY] = runs
    dataset.save()


def _check_reusable(dataset: fo.Dataset) -> None:
    if dataset.media_type not in (None, "image") and len(dataset):
        raise ConfigError(
            f"dataset {dataset.name!r} holds {dataset.media_type} samples: training images need "
            "an image dataset; choose another --dataset name"
        )
    if ONTOLOGY_KEY not in dataset.info and len(dataset):
        raise ConfigError(
            f"dataset {dataset.name!r} already has {len(dataset)} samples and was not made by "
            "`usam generate` or `usam crawl` (it has no stored ontology): choose a new --dataset "
            "name, so your own samples are not mixed with generated or downloaded ones"
        )


def _root(collection: fo.Dataset | fo.DatasetView) -> fo.Dataset:
    return root_dataset(collection)
