"""Cheap checks behind the operators' forms, so a wrong value is caught before anything runs.

The App resolves a dynamic operator's form again at every change of its values, and FiftyOne
validates the resolved form before running it (and again when a worker runs a delegated one).
So these checks read only small things: the dataset's schema and info, an ontology file, a
head's ``head.json``, a store's ``spec.json``; never weights or images. Each returns what is
wrong as a message for the form, or None. The library is imported inside the functions: the
plugin entry is imported whenever FiftyOne builds its operator registry.
"""

import json
from pathlib import Path

import fiftyone.operators.types as types

# Mirror fiftyone_usam.head.checkpoint and fiftyone_usam.head.classifier, which import torch.
HEAD_METADATA = "head.json"
HEAD_STAGES = ("student", "teacher")
HEAD_FORMAT = "usam-head"
COMPATIBILITY_FIELDS = (
    "sam_variant",
    "checkpoint_sha256",
    "encoder_input_size",
    "embedding_dim",
    "points_per_side",
)
ONTOLOGY_SUFFIXES = (".yaml", ".yml", ".json")  # as fiftyone_usam.ontology.load_ontology


def invalidate(prop, message):
    """Marks a form property invalid when there is a ``message``: the App shows it and won't run."""
    if message:
        prop.invalid = True
        prop.error_message = message
    return prop


def show(inputs, name, message, *, label, warning=False):
    """Shows ``message`` in the form as a notice (or a warning) that does not stop the run."""
    if message:
        view = types.Warning if warning else types.Notice
        inputs.view(name, view(label=label, description=message))


def classes_error(value):
    """What is wrong with a class list (comma-separated names or an ontology file), or None."""
    if value is None:
        return None  # a required property: FiftyOne says so itself
    if not str(value).strip():
        return "the class list is empty: name at least one class"
    if str(value).lower().endswith(ONTOLOGY_SUFFIXES):
        path = Path(value).expanduser()
        if not path.is_file():
            return (
                f"no ontology file {path} on the server: give an existing YAML file, or the "
                "class names separated by commas"
            )
    from fiftyone_usam.errors import USAMError
    from fiftyone_usam.ontology import load_ontology

    try:
        load_ontology(value)
    except USAMError as e:
        return str(e)
    return None


def path_error(value, what):
    """``"<what> not found: <path>"`` when a path is given and nothing is there, else None."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists():
        return None
    return f"{what} not found: {path}. Check the path (it is a path on the server)"


def name_error(value, what):
    """An error for a name given but blank."""
    if value is not None and not str(value).strip():
        return f"the {what} name is empty"
    return None


def multiple_of_8_error(value, what):
    """Image sizes for diffusion models (as fiftyone_usam.sources.jobs checks them)."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None  # absent, or not a number: FiftyOne's type check says so
    if size < 8 or size % 8:
        return f"{what} must be a positive multiple of 8, got {value}"
    return None


def prompt_error(prompt):
    """A prompt template without ``{}`` for the class name (as fiftyone_usam.sources.jobs)."""
    if prompt and "{}" not in prompt:
        return f"the prompt {prompt!r} needs a {{}} for the class name"
    return None


def sam_variant(sam, checkpoint, *, custom=False):
    """``(name, None)``: the SAM variant a variant choice and checkpoint mean, as the library
    resolves them; or ``(None, what is wrong)``. A missing checkpoint is left to `path_error`.

    Args:
        sam: the variant asked for (None: the one described beside the checkpoint, else vit_b).
        checkpoint: the weights on the server, if given.
        custom: the form's "custom" choice: the variant must be described beside the weights.
    """
    if checkpoint and not Path(checkpoint).expanduser().exists():
        return None, None
    beside = Path(checkpoint).expanduser().with_suffix(".json") if checkpoint else None
    if custom and (beside is None or not beside.is_file()):
        where = beside or "<checkpoint-stem>.json"
        return None, (
            f"a custom SAM is described by {where} beside its checkpoint: give such a "
            "checkpoint, or choose vit_b, vit_l or vit_h"
        )
    from fiftyone_usam.embeddings.sam_variants import resolve_variant
    from fiftyone_usam.errors import USAMError

    try:
        return resolve_variant(sam, checkpoint).name, None
    except USAMError as e:
        return None, str(e)


def pipeline_error(model):
    """A diffusers model that looks like a local path but is no pipeline directory, or None.

    Mirrors the library's rule: an existing directory needs ``model_index.json``; a value that
    starts with ``/``, ``.`` or ``~`` or has more than one ``/`` is a path, not a Hub id.
    """
    if not model:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return None
        return f"{path} holds no diffusers pipeline (no model_index.json)"
    if path.exists():
        return f"{path} is a file: give a Hugging Face Hub id or a pipeline directory"
    text = str(model)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        return (
            f"no pipeline directory at {path}: give an existing directory written by "
            "save_pretrained, or a Hugging Face Hub id"
        )
    return None


def field_prefix_error(field):
    """An output field prefix that is not letters, digits and underscores."""
    if field is None:
        return None
    from fiftyone_usam.errors import USAMError
    from fiftyone_usam.fiftyone_io.writer import output_fields

    try:
        output_fields(field)
    except USAMError as e:
        return str(e)
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


def read_head(value):
    """``(metadata, None)`` from a head's ``head.json``, or ``(None, what is wrong)``.

    Reads the JSON only (no weights, no torch): ``value`` is a checkpoint directory, its
    ``head.json``, or a ``usam train --out`` directory (its ``student/``, else ``teacher/``).
    """
    path = Path(value).expanduser()
    if not path.exists():
        return None, f"no head at {path}: train one with U-SAM: train the semantic head"
    folder = path.parent if path.is_file() else path
    file = next(
        (
            f / HEAD_METADATA
            for f in (folder, *(folder / s for s in HEAD_STAGES))
            if (f / HEAD_METADATA).is_file()
        ),
        None,
    )
    if file is None:
        return None, (
            f"no U-SAM head checkpoint at {path} (no {HEAD_METADATA}, nor student/ or teacher/ "
            "with one): give a head directory or a U-SAM: train output directory"
        )
    try:
        metadata = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        return None, f"cannot read {file}: {e}; train the head again"
    if not isinstance(metadata, dict) or metadata.get("format") != HEAD_FORMAT:
        return None, f"{file} is not a U-SAM head checkpoint"
    if not isinstance(metadata.get("classes"), list) or not metadata["classes"]:
        return None, f"{file} names no classes: train the head again"
    return metadata, None


def predicted_classes(head_classes, groups):
    """``(classes, None)`` a head predicts, merged into a grouping ontology's superclasses when
    one is given, as the predictor does; or ``(None, what is wrong with the ontology)``."""
    classes = [str(c) for c in head_classes]
    if not groups:
        return classes, None
    error = classes_error(groups)
    if error:
        return None, error
    from fiftyone_usam.ontology import load_ontology

    ontology = load_ontology(groups)
    if not ontology.superclasses():
        return classes, None
    missing = [c for c in classes if c not in ontology]
    if missing:
        return None, (
            f"the head's class {missing[0]!r} is not in the grouping ontology "
            f"({', '.join(ontology.names)})"
        )
    merged = (ontology.spec(c).superclass or c for c in classes)
    return list(dict.fromkeys(merged)), None


def other_classes(dataset, field, classes):
    """The classes a prefix's semantic field holds when they are not ``classes``, else None."""
    if dataset is None or field_prefix_error(field):
        return None
    from fiftyone_usam.fiftyone_io.labels import mask_targets
    from fiftyone_usam.fiftyone_io.writer import output_fields

    semantic = output_fields(field)["semantic"]
    targets = dataset.mask_targets.get(semantic) if dataset.has_field(semantic) else None
    if not targets or {int(k): v for k, v in targets.items()} == mask_targets(classes):
        return None
    return [v for k, v in sorted(targets.items(), key=lambda kv: int(kv[0])) if int(k) != 0]


def collision_error(dataset, field, classes, *, overwrite, whole_dataset):
    """The rule of ``fiftyone_usam.fiftyone_io.writer.plan_writes``: a semantic field that holds
    other classes is replaced only by overwriting it on the whole dataset.

    Args:
        whole_dataset: a callable saying whether the run labels the whole dataset (called only
            when it matters: counting a view is a query).
    """
    held = other_classes(dataset, field, classes)
    if held is None or (overwrite and whole_dataset()):
        return None
    return (
        f"field {field}_semantic holds the classes {held}, these labels are {list(classes)}: "
        "choose another output field prefix, or tick Overwrite and label the whole dataset "
        "to replace the old labels everywhere"
    )


def existing_fields(dataset, field):
    """The output fields of a prefix that the dataset already has."""
    if dataset is None or field_prefix_error(field):
        return []
    from fiftyone_usam.fiftyone_io.writer import output_fields

    return [name for name in output_fields(field).values() if dataset.has_field(name)]


def recorded_store_specs(dataset):
    """The specs (dicts) of the stores recorded on a dataset that still exist, newest last."""
    return [s["spec"] for s in usable_stores(dataset)]


def teacher_error(dataset, stage, out):
    """A ``student`` run needs a teacher in ``<out>/teacher`` (``out``: default for the dataset)."""
    if stage != "student":
        return None
    if out:
        folder = Path(out).expanduser()
    elif dataset is not None:
        from fiftyone_usam.head.run import default_head_path

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
