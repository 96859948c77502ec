"""Operator: train U-SAM's head on a dataset's labels and its EmbeddingStore."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.head.config import STAGES

from .artifacts import teacher_error, training_store_error
from .progress import progress_callback, usam_config
from .validation import classes_error, invalidate, no_dataset_form


class TrainOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "train",
            "train the semantic head",
            (
                "Learns which SAM masks show which of your classes, from one label per "
                "training image: an MIL teacher, then a student distilled from it."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, "U-SAM: train the semantic head"):
            return form
        params = ctx.params
        inputs = types.Object()
        inputs.view_target(ctx)
        has_labels = _label_field(ctx.dataset, inputs)
        store = inputs.str(
            "store",
            label="Store directory (optional)",
            description="The dataset's EmbeddingStore. Default: the one `embed` recorded.",
        )
        invalidate(store, training_store_error(ctx.dataset, params.get("store")))
        inputs.str(
            "out",
            label="Output directory (optional)",
            description="Gets teacher/ and student/ checkpoints. Default: "
            "<FiftyOne dataset dir>/usam/<dataset>/head.",
        )
        stage = inputs.enum("stage", list(STAGES), default="both", label="Stage")
        invalidate(stage, teacher_error(ctx.dataset, params.get("stage"), params.get("out")))
        classes = inputs.str(
            "classes",
            label="Classes (optional)",
            description="Ontology YAML file or comma-separated names, fixing the class order. "
            "Default: the ontology stored by generate/crawl, else the distinct labels, sorted.",
        )
        invalidate(classes, classes_error(params.get("classes") or None))
        inputs.bool(
            "superclasses",
            default=False,
            label="Train on superclasses",
            description="Learn the ontology's superclasses (e.g. animals) instead of its classes.",
        )
        inputs.int("epochs", default=100, min=1, label="Most epochs per stage")
        inputs.int("seed", default=0, label="Seed")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        inputs.bool(
            "overwrite",
            default=False,
            label="Train again",
            description="Even when the output folder holds a head trained on the same images "
            "and settings (otherwise that head is kept).",
        )
        prop = types.Property(inputs, view=types.View(label="U-SAM: train the semantic head"))
        if not has_labels:
            invalidate(prop, "the dataset has no fo.Classification field to learn from")
        return prop

    def execute(self, ctx):
        from fiftyone_usam.stages.train import train_head

        params = ctx.params
        stage = params.get("stage") or "both"
        epochs = int(params.get("epochs") or 100)
        report = train_head(
            ctx.target_view(),
            label_field=params.get("label_field") or "ground_truth",
            store=params.get("store") or None,
            out=params.get("out") or None,
            stage=stage,
            classes=params.get("classes") or None,
            superclasses=bool(params.get("superclasses")),
            epochs=epochs,
            seed=int(params.get("seed") or 0),
            device=params.get("device") or None,
            overwrite=bool(params.get("overwrite")),
            progress=progress_callback(ctx, "epochs"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
            "out": str(report.out),
            "checkpoints": {k: str(v) for k, v in report.checkpoints.items()},
            "classes": list(report.classes),
            "skipped": report.skipped,
            "metrics": report.metrics,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        outputs.str("out", label="Head directory")
        return types.Property(outputs)


def _label_field(dataset, inputs):
    """The choice of fo.Classification field, or a warning that there is none (then False)."""
    import fiftyone as fo

    fields = sorted(dataset.get_field_schema(embedded_doc_type=fo.Classification))
    if not fields:
        inputs.view(
            "no_labels",
            types.Warning(
                label="No fo.Classification field",
                description="The head learns from one fo.Classification per image.",
            ),
        )
        return False
    inputs.enum(
        "label_field",
        fields,
        default="ground_truth" if "ground_truth" in fields else fields[0],
        label="Label field",
        description="The fo.Classification field with each image's class.",
    )
    return True
