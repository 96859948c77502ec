"""Cheap checks behind the operators' forms, so a wrong value is caught before anything runs.

The App resolves a dynamic operator's form again at every change of its values, and FiftyOne
validates the resolved form before running it (and again when a worker runs a delegated one).
So these checks read only small things: the dataset's schema and info, an ontology file, a
head's ``head.json``, a store's ``spec.json`` (see `artifacts`); never weights or images. Each
returns what is wrong as a message for the form, or None, and calls the library's own check so
that a rule lives in one place. FiftyOne imports the plugin entry whenever it builds its
operator registry, so only torch-free library modules are imported here.
"""

from pathlib import Path

import fiftyone.operators.types as types

from fiftyone_usam.embeddings.sam_variants import (
    OFFICIAL_VARIANTS,
    resolve_variant,
    variant_config_path,
)
from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.writer import held_classes, output_fields
from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.sources.jobs import check_image_size, check_prompt
from fiftyone_usam.sources.pipelines import check_source


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


def no_dataset_form(ctx, label):
    """For an operator on the App's dataset: a form saying to open one when none is, else None."""
    if ctx.dataset is not None:
        return None
    inputs = types.Object()
    message = "open a dataset in the App first: this operator works on its samples"
    inputs.view("no_dataset", types.Warning(label="No dataset", description=message))
    return invalidate(types.Property(inputs, view=types.View(label=label)), message)


CLASSES_DESCRIPTION = (
    'Comma-separated ("person,dog,potted plant") or an ontology YAML file on the server.'
)


def classes_input(inputs, params, description=CLASSES_DESCRIPTION):
    """The required ``classes`` input, marked invalid when the list is."""
    prop = inputs.str("classes", required=True, label="Classes", description=description)
    return invalidate(prop, classes_error(params.get("classes")))


def classes_error(value):
    """What is wrong with a class list (comma-separated names or an ontology file), or None."""
    if value is None:
        return None  # a required property: FiftyOne says so itself
    return library_error(load_ontology, value)


def library_error(check, *args):
    """The message of the `USAMError` that ``check(*args)`` raises, or None."""
    try:
        check(*args)
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
    """Image sizes for diffusion models, as the library checks them."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None  # absent, or not a number: FiftyOne's type check says so
    return library_error(check_image_size, what, size)


def prompt_error(prompt):
    """A prompt template without ``{}`` for the class name, as the library checks it."""
    return library_error(check_prompt, prompt or None)


def sam_variant(sam, checkpoint, *, custom=False, described_choice="no variant"):
    """``(name, None)``: the SAM variant a variant choice and checkpoint mean, as the library
    resolves them; or ``(None, what is wrong)``. A missing checkpoint is left to `path_error`.

    Args:
        sam: the variant asked for (None: the one described beside the checkpoint, else vit_b).
        checkpoint: the weights on the server, if given.
        custom: the form's "custom" choice: the variant must be described beside the weights.
        described_choice: the form's choice that lets the file beside the weights decide.
    """
    if checkpoint and not Path(checkpoint).expanduser().exists():
        return None, None
    beside = variant_config_path(Path(checkpoint).expanduser()) if checkpoint else None
    if custom and (beside is None or not beside.is_file()):
        where = beside or "<checkpoint-stem>.json"
        return None, (
            f"a custom SAM is described by {where} beside its checkpoint: give such a "
            f"checkpoint, or choose one of {', '.join(OFFICIAL_VARIANTS)}"
        )
    try:
        return resolve_variant(sam, checkpoint).name, None
    except USAMError as e:
        described = beside is not None and beside.is_file()
        hint = f" (here: choose {described_choice} to use {beside.name})" if described else ""
        return None, f"{e}{hint}"


def pipeline_error(model):
    """A diffusers model that looks like a local path but is no pipeline directory, or None."""
    if not model:
        return None
    return library_error(check_source, model)


def field_prefix_error(field):
    """An output field prefix that is not letters, digits and underscores."""
    if field is None:
        return None
    return library_error(output_fields, field)


def other_classes(dataset, field, classes):
    """The classes a prefix's semantic field holds when they are not ``classes``, else None."""
    if dataset is None or field_prefix_error(field):
        return None
    held = held_classes(dataset, field, tuple(classes))
    if held is None or not dataset.has_field(output_fields(field)["semantic"]):
        return None
    return [name for label, name in held.items() if label != 0]


def collision_error(ctx, field, classes, *, overwrite):
    """The rule of ``fiftyone_usam.fiftyone_io.writer.plan_writes``: a semantic field that holds
    other classes is replaced only by overwriting it on the whole dataset (the operation's
    target view is counted only then: counting is a query)."""
    held = other_classes(ctx.dataset, field, classes)
    if held is None or (overwrite and len(ctx.target_view()) == len(ctx.dataset)):
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
    return [name for name in output_fields(field).values() if dataset.has_field(name)]
