"""Operator: the whole chain for a class list, queued as one delegated job."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .generate import int_param

_STAGES = ("training images", "embed training", "embed target", "train", "predict", "evaluate")


class RunOperator(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="run",
            label="U-SAM: label this dataset from class names (whole chain)",
            description=(
                "Generates or crawls training images, embeds them and this dataset with SAM, "
                "trains the head, labels the dataset and evaluates it if it has ground truth. "
                "Finished stages are skipped on a re-run."
            ),
            icon="/assets/icon.svg",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        import fiftyone as fo

        inputs = types.Object()
        inputs.view_target(ctx)
        inputs.str(
            "classes",
            required=True,
            label="Classes",
            description='Comma-separated ("person,dog,potted plant") or an ontology YAML file '
            "on the server.",
        )
        inputs.enum(
            "source",
            ["synthetic", "crawl"],
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
        inputs.enum(
            "sam",
            ["vit_b", "vit_l", "vit_h"],
            label="SAM (optional)",
            description="Default: the variant described beside the checkpoint, else vit_b.",
        )
        inputs.str("checkpoint", label="SAM checkpoint (optional)")
        truths = []
        if ctx.dataset is not None:
            schema = ctx.dataset.get_field_schema()
            truths = sorted(
                name
                for name, field in schema.items()
                if getattr(field, "document_type", None) in (fo.Segmentation, fo.Detections)
            )
        if truths:
            inputs.enum(
                "gt_field",
                truths,
                label="Ground truth (optional)",
                description="Evaluate the labels against this field.",
            )
        inputs.str("field", default="usam", required=True, label="Output field prefix")
        inputs.str(
            "model",
            label="Diffusion model (optional)",
            description="Hub id or directory; default Stable Diffusion v1.4.",
        )
        inputs.enum(
            "engine",
            ["bing", "google", "baidu", "flickr", "urls"],
            default="bing",
            label="Crawl engine",
        )
        inputs.str("urls_file", label="URLs file (for the urls engine)")
        inputs.int("epochs", min=1, label="Training epochs (optional)")
        inputs.str("workdir", label="Work directory (optional)")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        return types.Property(inputs, view=types.View(label="U-SAM: label from class names"))

    def execute(self, ctx):
        from fiftyone_usam.pipeline import run

        params = ctx.params

        def progress(stage, done, total):
            index = _STAGES.index(stage) if stage in _STAGES else 0
            fraction = (index + (done / total if total else 1.0)) / len(_STAGES)
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
            engine=params.get("engine") or "bing",
            urls_file=params.get("urls_file") or None,
            epochs=params.get("epochs") or None,
            workdir=params.get("workdir") or None,
            points_per_side=int_param(params, "points_per_side", 10),
            threshold=params.get("threshold"),
            device=params.get("device") or None,
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
