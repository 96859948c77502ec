"""Cheap reads of U-SAM's artifacts for the forms: heads (their ``head.json``, never the
weights) and EmbeddingStores (their ``spec.json``), through the library's own torch-free
readers, so a form refuses exactly what the stage would. Each check returns what is wrong, or
None.
"""

from dataclasses import replace
from pathlib import Path

from fiftyone_usam.config import config_from_dict
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec, spec_at
from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.datasets import default_head_path, locate_store, recorded_heads
from fiftyone_usam.head.layout import compatibility_fields, read_metadata
from fiftyone_usam.ontology import load_ontology

from .validation import classes_error, library_error


def read_head(value):
    """``(metadata, None)`` from a head's ``head.json``, or ``(None, what is wrong)``.

    Reads the JSON only (no weights, no torch), with the library's own reader, so the form
    refuses exactly what `load_head` refuses: ``value`` is a checkpoint directory, its
    ``head.json``, or a ``usam train --out`` directory (its ``student/``, else ``teacher/``).
    """
    path = Path(value).expanduser()
    if not path.exists():
        return None, f"no head at {path}: train one with U-SAM: train the semantic head"
    try:
        return read_metadata(path)[1], None
    except USAMError as e:
        return None, str(e)


def trained_spec(metadata):
    """``(spec, None)``: the `StoreSpec` a head was trained on, read as `load_head` reads it
    (None: a head trained from arrays of unknown origin); or ``(None, what is wrong)``."""
    spec = metadata.get("store_spec")
    if not spec:
        return None, None
    try:
        return config_from_dict(StoreSpec, spec, source="the head's store_spec"), None
    except USAMError as e:
        return None, str(e)


def newest_head(dataset):
    """The path of the head most recently trained on a dataset, or None."""
    heads = recorded_heads(dataset) if dataset is not None else []
    return heads[-1]["path"] if heads else None


def predicted_classes(head_classes, groups):
    """``(classes, None)`` a head predicts, merged into a grouping ontology's superclasses when
    one is given, as the predictor does; or ``(None, what is wrong with the ontology)``."""
    classes = [str(c) for c in head_classes]
    if not groups:
        return classes, None
    error = classes_error(groups)
    if error:
        return None, error
    ontology = load_ontology(groups)
    if not ontology.superclasses():
        return classes, None
    try:
        return list(dict.fromkeys(ontology.group_of(classes).values())), None
    except USAMError as e:
        return None, str(e)


def teacher_error(dataset, stage, out):
    """A ``student`` run distils from the head in ``<out>/teacher`` (``out``: where `train`
    writes for the dataset by default), which must load as `load_head` loads it."""
    if stage != "student" or (not out and dataset is None):
        return None
    folder = Path(out).expanduser() if out else default_head_path(dataset.name)
    teacher = folder / "teacher"
    try:
        read_metadata(teacher)
    except USAMError as e:
        return (
            f"stage 'student' distils from the teacher in {teacher}, but: {e}. Train it first "
            "with stage 'teacher' (or use stage 'both')"
        )
    return None


def training_store_error(dataset, value):
    """The store `train` reads: the one given, else the newest one recorded on the dataset."""
    if value:
        return library_error(EmbeddingStore.open, value)
    if dataset is None:
        return None
    try:
        recorded = locate_store(dataset, masks=None)  # training reads embeddings only
    except USAMError as e:
        return str(e)
    if recorded is None:
        return (
            "no EmbeddingStore is recorded on this dataset: run U-SAM: compute SAM mask "
            "embeddings first, or give the store directory"
        )
    return None


def new_store_error(value, variant, points_per_side):
    """A store to embed into that `EmbeddingStore.create` would refuse: a file, someone else's
    directory, or a store of another SAM variant or grid (the weights are not compared:
    hashing them is not cheap)."""
    if not value:
        return None
    try:
        found = spec_at(value)
    except USAMError as e:
        return str(e)
    if found is None:
        return None
    given = {"sam_variant": variant, "points_per_side": points_per_side}
    asked = {name: v for name, v in given.items() if v is not None}
    diffs = found.differences(replace(found, **asked), asked, ("store has", "asked for"))
    if diffs:
        return (
            f"the store at {Path(value).expanduser()} holds embeddings of another kind "
            f"({'; '.join(diffs)}): choose its SAM and grid to add to it, or another store "
            "directory"
        )
    return None


def compatibility_differences(trained, found):
    """How a store's spec differs from a head's training spec where it matters (the check of
    `Head.check_compatible`), as ``"<field>: head X, store Y"`` lines."""
    return trained.differences(found, compatibility_fields(trained, found), ("head", "store"))
