"""Reading a head's training set from a FiftyOne view: each image's `fo.Classification` label
and its embeddings (the checks themselves are `head.training_set`'s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import DatasetNotFoundError
from fiftyone_usam.head.training_set import TrainingSet, build_training_set
from fiftyone_usam.ontology import Ontology

if TYPE_CHECKING:
    import fiftyone as fo


def load_training_set(
    view: fo.Dataset | fo.DatasetView,
    *,
    label_field: str,
    store: EmbeddingStore,
    ontology: Ontology | None = None,
    superclasses: bool = False,
) -> TrainingSet:
    """Reads the labels of ``view`` and their embeddings from ``store``.

    Args:
        view: the training images.
        label_field: a `fo.Classification` field with each image's class.
        store: an EmbeddingStore holding the view's samples.
        ontology: the classes, in output order; default: the distinct labels, sorted.
        superclasses: train on the ontology's superclasses (see `build_training_set`).

    Raises:
        DatasetNotFoundError: the field is missing or not a `fo.Classification` field.
        TrainingDataError: no labels, fewer than two classes, labels outside the ontology.
        StoreError: none of the samples is in the store, or an embedding is NaN/inf.
    """
    _check_field(view, label_field)
    ids, names = view.values(["id", f"{label_field}.label"])
    return build_training_set(
        list(zip(ids, names, strict=True)),
        store,
        label_field=label_field,
        ontology=ontology,
        superclasses=superclasses,
        source=_name(view),
    )


def _check_field(view: fo.Dataset | fo.DatasetView, label_field: str) -> None:
    import fiftyone as fo

    schema = view.get_field_schema(embedded_doc_type=fo.Classification)
    if label_field in schema:
        return
    known = ", ".join(sorted(schema)) or "none"
    exists = label_field in view.get_field_schema()
    raise DatasetNotFoundError(
        f"field {label_field!r} of dataset {_name(view)!r} "
        + ("is not a fo.Classification field" if exists else "does not exist")
        + f": the training labels must be one fo.Classification per image (fo.Classification "
        f"fields here: {known}); pass it as label_field / --label-field"
    )


def _name(view: fo.Dataset | fo.DatasetView) -> str:
    """The dataset's name, for a dataset or a view."""
    return str(getattr(view, "dataset_name", None) or view.name)
