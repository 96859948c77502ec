"""Cheap reads of U-SAM's artifacts for the forms: heads (their ``head.json``, never the
weights) and EmbeddingStores (their ``spec.json``). Each check returns what is wrong, or None.
"""

import json
from pathlib import Path

from fiftyone_usam.head.layout import COMPATIBILITY_FIELDS
from fiftyone_usam.head.layout import METADATA as HEAD_METADATA

from .validation import classes_error


def read_head(value):
    """``(metadata, None)`` from a head's ``head.json``, or ``(None, what is wrong)``.

    Reads the JSON only (no weights, no torch), with the library's own reader, so the form
    refuses exactly what `load_head` refuses: ``value`` is a checkpoint directory, its
    ``head.json``, or a ``usam train --out`` directory (its ``student/``, else ``teacher/``).
    """
    from fiftyone_usam.errors import USAMError
    from fiftyone_usam.head.layout import read_metadata

    path = Path(value).expanduser()
    if not path.exists():
        return None, f"no head at {path}: train one with U-SAM: train the semantic head"
    try:
        return read_metadata(path)[1], None
    except USAMError as e:
        return None, str(e)


def predicted_classes(head_classes, groups):
    """``(classes, None)`` a head predicts, merged into a grouping ontology's superclasses when
    one is given, as the predictor does; or ``(None, what is wrong with the ontology)``."""
    classes = [str(c) for c in head_classes]
    if not groups:
        return classes, None
    error = classes_error(groups)
    if error:
        return None, error
    from fiftyone_usam.errors import USAMError
    from fiftyone_usam.ontology import load_ontology

    ontology = load_ontology(groups)
    if not ontology.superclasses():
        return classes, None
    try:
        return list(dict.fromkeys(ontology.group_of(classes).values())), None
    except USAMError as e:
        return None, str(e)


def teacher_error(dataset, stage, out):
    """A ``student`` run needs a teacher in ``<out>/teacher`` (``out``: default for the dataset)."""
    if stage != "student":
        return None
    if out:
        folder = Path(out).expanduser()
    elif dataset is not None:
        from fiftyone_usam.stages.train import default_head_path

        folder = default_head_path(dataset.name)
    else:
        return None
    teacher = folder / "teacher"
    if (teacher / HEAD_METADATA).is_file():
        return None
    return (
        f"stage 'student' distils from the teacher in {teacher}, which holds none: train it "
        "first with stage 'teacher' (or use stage 'both')"
    )


def read_store_spec(value):
    """The spec (a dict) of the EmbeddingStore at a path, or None if there is none."""
    spec_file = Path(value).expanduser() / "spec.json"
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def usable_stores(dataset):
    """The stores recorded on a dataset whose directories still hold a store, newest last."""
    if dataset is None:
        return []
    from fiftyone_usam.fiftyone_io.datasets import recorded_stores

    return [s for s in recorded_stores(dataset) if (Path(s["path"]) / "spec.json").is_file()]


def recorded_store_specs(dataset):
    """The specs (dicts) of the stores recorded on a dataset that still exist, newest last."""
    return [s["spec"] for s in usable_stores(dataset)]


def training_store_error(dataset, value):
    """The store `train` reads: the one given, else one recorded on the dataset."""
    if value:
        if read_store_spec(value) is None:
            path = Path(value).expanduser()
            return (
                f"no EmbeddingStore at {path} (no spec.json): compute the embeddings there with "
                "U-SAM: compute SAM mask embeddings, or leave the store empty"
            )
        return None
    if dataset is not None and not usable_stores(dataset):
        return (
            "no EmbeddingStore is recorded on this dataset: run U-SAM: compute SAM mask "
            "embeddings first, or give the store directory"
        )
    return None


def new_store_error(value, variant, points_per_side):
    """A store to embed into that is a file, someone else's directory, or a store of another
    SAM variant or grid (its weights are not compared: hashing them is not cheap)."""
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    spec = read_store_spec(value)
    if spec is None:
        return f"{path} exists and is not an EmbeddingStore: choose an empty or new directory"
    wanted = {"sam_variant": variant, "points_per_side": points_per_side}
    diffs = [
        f"{name} {spec.get(name)!r}, not {asked!r}"
        for name, asked in wanted.items()
        if asked is not None and spec.get(name) != asked
    ]
    if diffs:
        return (
            f"the store at {path} holds embeddings of another kind ({'; '.join(diffs)}): "
            "choose its SAM and grid to add to it, or another store directory"
        )
    return None


def spec_differences(wanted, found):
    """``"name: head X, store Y"`` for each compatibility field in which two specs differ."""
    return [
        f"{name}: head {wanted.get(name)!r}, store {found.get(name)!r}"
        for name in COMPATIBILITY_FIELDS
        if wanted.get(name) != found.get(name)
    ]


def describe_spec(spec):
    """A store spec (a dict) in a few words."""
    points = spec.get("points_per_side")
    sha = str(spec.get("checkpoint_sha256", ""))[:12]
    return f"SAM {spec.get('sam_variant')} (weights {sha}), {points}x{points} points"
