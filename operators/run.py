"""Operator: the whole chain for a class list, queued as one delegated job."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.embeddings.extractor import MASK_MODES
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS
from fiftyone_usam.sources import SOURCES
from fiftyone_usam.sources.engines import ENGINES as CRAWL_ENGINES

from .engine import engine_inputs, engine_kwargs
from .generate import int_param
from .progress import usam_config
from .validation import (
    classes_error,
    classes_input,
    collision_error,
    existing_fields,
    field_prefix_error,
    invalidate,
    no_dataset_form,
    other_classes,
    path_error,
    pipeline_error,
    sam_variant,
    show,
)


class RunOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "run",
            "label this dataset from class names (whole chain)",
            (
                "Generates or crawls training images, embeds them and this dataset with SAM, "
                "trains the head, labels the dataset and evaluates it if it has ground truth. "
                "Finished stages are skipped on a re-run."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, "U-SAM: label from class names"):
            return form
        params = ctx.params
        inputs = types.Object()
        inputs.view_target(ctx)
        classes_input(inputs, params)
        inputs.enum(
            "source",
            list(SOURCES),
            default="synthetic",
            label="Training images",
            description="synthetic: Stable Diffusion (GPU); crawl: web image search.",
        )
        inputs.int(
            "per_class",
            min=1,
            label="Images per class (optional)",
            description="Default: 200 synthetic, 45 crawled.",
        )
        _source_inputs(params, inputs)
        sam = inputs.enum(
            "sam",
            list(OFFICIAL_VARIANTS),
            label="SAM (optional)",
            description="Default: the variant described beside the checkpoint, else vit_b.",
        )
        checkpoint = inputs.str("checkpoint", label="SAM checkpoint (optional)")
        invalidate(checkpoint, path_error(params.get("checkpoint"), "SAM checkpoint"))
        invalidate(sam, sam_variant(params.get("sam"), params.get("checkpoint"))[1])
        truths = _label_fields(ctx.dataset)
        if truths:
            inputs.enum(
                "gt_field",
                truths,
                label="Ground truth (optional)",
                description="Evaluate the labels against this field.",
            )
        inputs.bool(
            "superclasses",
            default=False,
            label="Label superclasses",
            description="Train on the ontology's superclasses (e.g. animals), and score the "
            "ground truth by superclass.",
        )
        field = inputs.str("field", default="usam", required=True, label="Output field prefix")
        inputs.bool(
            "overwrite",
            default=False,
            label="Overwrite existing fields",
            description="Replace prediction fields this chain did not write.",
        )
        invalidate(field, field_prefix_error(params.get("field", "usam")))
        invalidate(field, _existing_labels(ctx, inputs))
        inputs.enum(
            "training_masks",
            list(MASK_MODES),
            default="none",
            label="Masks of the training images",
            description="none: store only their embeddings, all that training reads (about "
            "half the space); full: keep SAM's masks too. This dataset's store keeps its masks.",
        )
        inputs.int("epochs", min=1, label="Training epochs (optional)")
        inputs.bool(
            "adapt",
            default=False,
            label="Adapt the head to this dataset",
            description="Self-train the head on these images (no labels) before labelling "
            "them; one more SAM pass for a mirrored view.",
        )
        inputs.str("workdir", label="Work directory (optional)")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        engine = engine_inputs(inputs, params, work="generation and SAM run")
        invalidate(engine, _crawl_engine_error(params.get("engine")))
        return types.Property(inputs, view=types.View(label="U-SAM: label from class names"))

    def execute(self, ctx):
        from fiftyone_usam.stages.pipeline import STAGES, run

        params = ctx.params

        def progress(stage, done, total):
            index = STAGES.index(stage) if stage in STAGES else 0
            fraction = (index + (done / total if total else 1.0)) / len(STAGES)
            ctx.set_progress(progress=fraction, label=f"{stage}: {done}/{total}")

        report = run(
            params["classes"],
            dataset=ctx.target_view(),
            source=params.get("source") or "synthetic",
            per_class=params.get("per_class") or None,
            sam=params.get("sam") or None,
            checkpoint=params.get("checkpoint") or None,
            gt_field=params.get("gt_field") or None,
            field=params.get("field") or "usam",
            model=params.get("model") or None,
            crawl_engine=params.get("crawl_engine") or "bing",
            urls_file=params.get("urls_file") or None,
            epochs=params.get("epochs") or None,
            workdir=params.get("workdir") or None,
            points_per_side=int_param(params, "points_per_side", 10),
            training_masks=params.get("training_masks") or "none",
            threshold=params.get("threshold"),
            adapt=bool(params.get("adapt")),
            superclasses=bool(params.get("superclasses")),
            overwrite=bool(params.get("overwrite")),
            device=params.get("device") or None,
            **engine_kwargs(params),
            progress=progress,
        )
        ctx.ops.reload_dataset()
        evaluation = report.evaluation
        return {
            "summary": report.summary(),
            "head": str(report.head),
            "stages": {s.name: s.status for s in report.stages},
            "mIoU": None if evaluation is None else evaluation.mean_iou,
            "mAP50": None if evaluation is None else evaluation.map50,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        return types.Property(outputs)


def _source_inputs(params, inputs):
    """The diffusion model for synthetic images; the crawl engine (and URLs file) for crawling."""
    if params.get("source", "synthetic") == "synthetic":
        model = inputs.str(
            "model",
            label="Diffusion model (optional)",
            description="Hub id or directory; default Stable Diffusion v1.4.",
        )
        invalidate(model, pipeline_error(params.get("model")))
        return
    inputs.enum("crawl_engine", list(CRAWL_ENGINES), default="bing", label="Crawl engine")
    if params.get("crawl_engine", "bing") == "urls":
        urls_file = inputs.str(
            "urls_file",
            required=True,
            label="URLs file",
            description="On the server: one `class<TAB>url` per line.",
        )
        invalidate(urls_file, path_error(params.get("urls_file"), "URLs file"))


def _crawl_engine_error(engine):
    """A crawl engine given as ``engine`` (its name before ``engine`` chose local or ray)."""
    if engine not in CRAWL_ENGINES:
        return None
    return (
        f"engine chooses where the work runs (local or ray); for the crawl engine set "
        f"crawl_engine={engine!r}"
    )


def _label_fields(dataset):
    """The dataset's Segmentation and Detections fields (ground-truth choices)."""
    if dataset is None:
        return []
    import fiftyone as fo

    return sorted(
        name
        for name, field in dataset.get_field_schema().items()
        if getattr(field, "document_type", None) in (fo.Segmentation, fo.Detections)
    )


def _existing_labels(ctx, inputs):
    """Checks the output fields (an error, returned, or a warning, shown): the chain replaces
    its own earlier labels, others only with Overwrite; other classes only on the whole dataset.
    """
    params = ctx.params
    field = params.get("field", "usam")
    existing = existing_fields(ctx.dataset, field)
    if not existing or not params.get("classes") or classes_error(params["classes"]):
        return None
    from fiftyone_usam.ontology import load_ontology

    ontology = load_ontology(params["classes"])
    if params.get("superclasses"):
        ontology = ontology.to_superclasses()
    if params.get("overwrite"):
        return collision_error(ctx, field, ontology.names, overwrite=True)
    held = other_classes(ctx.dataset, field, ontology.names)
    if held is not None:
        message = (
            f"{field}_semantic holds the classes {held}. The chain replaces them only if an "
            "earlier run of it wrote them on the whole dataset; otherwise it stops at predict, "
            "after training: tick Overwrite, or choose another output field prefix."
        )
    else:
        message = (
            f"The dataset already has {', '.join(existing)}: the chain goes on from them, or "
            "replaces them if an earlier run of it wrote them; labels from elsewhere stop it "
            "at predict unless you tick Overwrite."
        )
    show(inputs, "existing_fields", message, label="Output fields exist", warning=True)
    return None
