"""Operator: label the dataset's images with a trained head."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .progress import progress_callback

_GRANULARITIES = ["best", "coarse", "medium", "fine", "all"]


class PredictOperator(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="predict",
            label="U-SAM: label images with a trained head",
            description=(
                "Writes semantic masks, instances and a per-sample uncertainty for your "
                "classes; reuses cached SAM embeddings when the dataset has them."
            ),
            icon="/assets/icon.svg",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx)
        inputs.str(
            "head",
            required=True,
            default=_newest_head(ctx),
            label="Head",
            description="A head checkpoint directory, or a `usam train --out` directory.",
        )
        inputs.str(
            "field",
            default="usam",
            required=True,
            label="Output field prefix",
            description="Writes <prefix>_semantic, <prefix>_instances, <prefix>_uncertainty.",
        )
        inputs.float(
            "threshold",
            min=0.0,
            max=1.0,
            label="Threshold (optional)",
            description="Minimum class probability; default: the head's own.",
        )
        inputs.float("nms_iou", default=0.5, min=0.0, max=1.0, label="NMS mask IoU")
        inputs.enum(
            "granularity",
            _GRANULARITIES,
            default="best",
            label="Mask granularity",
            description="best: SAM's pick; coarse: whole objects; fine: parts; all: NMS decides.",
        )
        inputs.bool("class_agnostic_nms", default=False, label="Class-agnostic NMS")
        inputs.str(
            "groups",
            label="Superclass ontology (optional)",
            description="A YAML ontology with superclasses to merge the classes into.",
        )
        inputs.bool("overwrite", default=False, label="Overwrite existing fields")
        inputs.str(
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
        return types.Property(inputs, view=types.View(label="U-SAM: label images"))

    def execute(self, ctx):
        from fiftyone_usam.inference.run import predict

        params = ctx.params
        threshold = params.get("threshold")
        report = predict(
            ctx.target_view(),
            head=params["head"],
            field=params.get("field") or "usam",
            threshold=None if threshold is None else float(threshold),
            nms_iou=float(params.get("nms_iou", 0.5)),
            granularity=params.get("granularity") or "best",
            class_agnostic_nms=bool(params.get("class_agnostic_nms")),
            groups=params.get("groups") or None,
            overwrite=bool(params.get("overwrite")),
            checkpoint=params.get("checkpoint") or None,
            mask_dir=params.get("mask_dir") or None,
            device=params.get("device") or None,
            progress=progress_callback(ctx, "images"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
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


def _newest_head(ctx):
    """The head most recently trained on this dataset, if any, as the form's default."""
    if ctx.dataset is None:
        return None
    heads = ctx.dataset.info.get("usam_heads") or []
    return heads[-1]["path"] if heads else None
