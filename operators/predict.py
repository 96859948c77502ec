"""Operator: label the dataset's images with a trained head."""

from pathlib import Path

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.embeddings.store import EmbeddingStore, spec_at
from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.datasets import locate_store
from fiftyone_usam.fiftyone_io.prompts import prompt_fields, prompt_kind
from fiftyone_usam.inference.predictor import DEFAULT_NMS_IOU, GRANULARITIES

from .artifacts import (
    compatibility_differences,
    newest_head,
    predicted_classes,
    read_head,
    trained_spec,
)
from .engine import engine_inputs, engine_kwargs
from .progress import progress_callback, usam_config
from .validation import (
    collision_error,
    existing_fields,
    field_prefix_error,
    invalidate,
    no_dataset_form,
    path_error,
    show,
)

_LABEL = "U-SAM: label images with a trained head"


class PredictOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "predict",
            _LABEL.removeprefix("U-SAM: "),
            (
                "Writes semantic masks, instances and a per-sample uncertainty for your "
                "classes; reuses cached SAM embeddings when the dataset has them."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, _LABEL):
            return form
        inputs = types.Object()
        inputs.view_target(ctx)
        head = inputs.str(
            "head",
            required=True,
            default=newest_head(ctx.dataset),
            label="Head",
            description="A head checkpoint directory, or a `usam train --out` directory.",
        )
        field = inputs.str(
            "field",
            default="usam",
            required=True,
            label="Output field prefix",
            description="Writes <prefix>_semantic, <prefix>_instances, <prefix>_uncertainty.",
        )
        _prompt_inputs(ctx, inputs)
        inputs.float(
            "threshold",
            min=0.0,
            max=1.0,
            label="Threshold (optional)",
            description="Minimum class probability; default: the head's own.",
        )
        inputs.float("nms_iou", default=DEFAULT_NMS_IOU, min=0.0, max=1.0, label="NMS mask IoU")
        inputs.enum(
            "granularity",
            list(GRANULARITIES),
            default="best",
            label="Mask granularity",
            description="best: SAM's pick; coarse: whole objects; fine: parts; all: NMS decides.",
        )
        inputs.bool("class_agnostic_nms", default=False, label="Class-agnostic NMS")
        groups = inputs.str(
            "groups",
            label="Superclass ontology (optional)",
            description="A YAML ontology with superclasses to merge the classes into.",
        )
        inputs.bool(
            "overwrite",
            default=False,
            label="Overwrite existing fields",
            description="Replaces labels of another head or settings (other classes: only "
            "when labelling the whole dataset).",
        )
        store = inputs.str(
            "store",
            label="Store directory (optional)",
            description="The EmbeddingStore to read and add to. Default: the one recorded on "
            "the dataset that fits the head.",
        )
        checkpoint = inputs.str(
            "checkpoint",
            label="SAM checkpoint (optional)",
            description="For images without cached embeddings; default: the official "
            "checkpoint of the head's SAM.",
        )
        inputs.str(
            "mask_dir",
            label="Mask directory (optional)",
            description="Write masks as PNG files here instead of into the samples "
            "(for large images).",
        )
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        engine_inputs(
            inputs,
            ctx.params,
            work="SAM runs for the images the store lacks (labelling stays in this process)",
        )
        invalidate(checkpoint, path_error(ctx.params.get("checkpoint"), "SAM checkpoint"))
        invalidate(field, field_prefix_error(ctx.params.get("field", "usam")))
        _check_head(ctx, inputs, {"head": head, "field": field, "groups": groups, "store": store})
        return types.Property(inputs, view=types.View(label=_LABEL))

    def execute(self, ctx):
        from fiftyone_usam.stages.predict import predict

        params = ctx.params
        threshold = params.get("threshold")
        report = predict(
            ctx.target_view(),
            head=params["head"],
            field=params.get("field") or "usam",
            threshold=None if threshold is None else float(threshold),
            nms_iou=float(params.get("nms_iou", DEFAULT_NMS_IOU)),
            granularity=params.get("granularity") or "best",
            class_agnostic_nms=bool(params.get("class_agnostic_nms")),
            groups=params.get("groups") or None,
            overwrite=bool(params.get("overwrite")),
            store=params.get("store") or None,
            checkpoint=params.get("checkpoint") or None,
            mask_dir=params.get("mask_dir") or None,
            device=params.get("device") or None,
            **engine_kwargs(params),
            prompt_field=params.get("prompt_field") or None,
            keep_prompt_labels=bool(params.get("keep_prompt_labels")),
            progress=progress_callback(ctx, "images"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
            "skipped": report.skipped,
            "agreement": None if report.agreement is None else report.agreement.as_dict(),
            "fields": report.fields,
            "labelled": report.labelled,
            "already_done": report.already_done,
            "failed": report.failed,
            "used_sam": report.used_sam,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        return types.Property(outputs)


def _prompt_inputs(ctx, inputs):
    """The prompt field (the dataset's boxes or keypoints) and whether to keep their labels."""
    fields = prompt_fields(ctx.dataset)
    if not fields:
        return
    prompt = inputs.enum(
        "prompt_field",
        fields,
        label="Prompt field (optional)",
        description="Label your own boxes (Detections) or clicks (Keypoints): each becomes one "
        "instance named by the head. Default: SAM's point grid.",
    )
    if not ctx.params.get("prompt_field"):
        return
    inputs.bool(
        "keep_prompt_labels",
        default=False,
        label="Keep the prompts' labels",
        description="Write each prompt's own label (SAM gives the mask); the head's opinion "
        "becomes the head_label attribute. Disagreements are tagged usam:disagree either way.",
    )
    if ctx.params.get("granularity") == "all":
        invalidate(prompt, "granularity 'all' makes three masks per prompt: choose another")


def _check_head(ctx, inputs, props):
    """The head loads; its classes fit the output fields; where its embeddings come from."""
    params = ctx.params
    if not params.get("head"):
        return
    metadata, error = read_head(params["head"])
    if invalidate(props["head"], error).invalid:
        return
    spec, error = trained_spec(metadata)
    if invalidate(props["head"], error).invalid:
        return
    classes, error = predicted_classes(metadata["classes"], params.get("groups"))
    if invalidate(props["groups"], error).invalid:
        return
    field = params.get("field", "usam")
    error = collision_error(ctx, field, classes, overwrite=bool(params.get("overwrite")))
    existing = existing_fields(ctx.dataset, field)
    if not invalidate(props["field"], error).invalid and existing and not params.get("overwrite"):
        message = (
            f"The dataset already has {', '.join(existing)}: a run with this head and these "
            "settings goes on where it stopped; other settings need Overwrite."
        )
        show(inputs, "existing_fields", message, label="Output fields exist")
    if spec is not None and params.get("prompt_field"):  # the store of those prompts
        spec = spec.with_prompts(
            prompt_kind(ctx.dataset, params["prompt_field"]), params["prompt_field"]
        )
    level, message = _embeddings_source(ctx.dataset, spec, params.get("store"))
    if level == "error":
        invalidate(props["store"], message)
    else:
        show(inputs, "embeddings", message, label="SAM will run", warning=level == "warning")


def _embeddings_source(dataset, spec, store):
    """``(level, message)``: whether the embeddings of a head trained on ``spec`` (None: of
    unknown origin) are cached, as `predict` decides (`locate_store`, then the head's check)."""
    try:
        return _cached(dataset, spec, store)
    except USAMError as e:  # a recorded or given store that predict could not read either
        return "error", str(e)


def _cached(dataset, spec, store):
    """`_embeddings_source`, raising what a store that cannot be read raises."""
    if store:
        found = spec_at(store)
        if found is None:
            path = Path(store).expanduser()
            return "notice", (
                f"No EmbeddingStore at {path} yet: SAM will run for these images and store "
                "their embeddings there."
            )
        if not found.has_masks:
            return "error", (
                "this store holds no masks (embedded with masks none, for training): choose a "
                "store with masks, or leave the store empty to embed the images into one"
            )
        diffs = compatibility_differences(spec, found) if spec else []
        if diffs:
            return "error", (
                "this head was trained on embeddings of another kind than the store's ("
                + "; ".join(diffs)
                + "): choose the store of the head's SAM, or leave the store empty"
            )
        return None, None
    if spec is None:
        return "error", (
            "this head was trained from arrays of unknown origin, so it does not say which SAM "
            "made its embeddings: give the EmbeddingStore to predict from"
        )
    if locate_store(dataset, spec) is not None:
        return None, None
    wanted = spec.describe()
    recorded = locate_store(dataset)
    if recorded is not None:
        kind = EmbeddingStore.open(recorded).spec.describe()
        return "warning", (
            f"The embeddings recorded on this dataset ({kind}) are not the kind this head was "
            f"trained on ({wanted}): SAM will run for these images."
        )
    return "notice", (
        f"No SAM embeddings are recorded on this dataset: SAM will run for these images ({wanted})."
    )
