"""Operator: score predictions against ground truth (mIoU, mAP50, boundary F)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .progress import progress_callback, usam_config
from .validation import classes_error, invalidate, no_dataset_form


class EvaluateOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "evaluate",
            "evaluate predictions",
            (
                "mIoU (PASCAL VOC convention), mAP50 on instance masks and boundary F against "
                "ground truth; stored as FiftyOne evaluations for the Model Evaluation panel."
            ),
            delegated=False,
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, "U-SAM: evaluate"):
            return form
        inputs = types.Object()
        inputs.view_target(ctx)
        preds, truths = _choices(ctx.dataset)
        if not preds or not truths:
            missing = (
                "predictions (run U-SAM: label images with a trained head)"
                if not preds
                else "ground truth"
            )
            inputs.view(
                "nothing_to_evaluate",
                types.Warning(
                    label=f"This dataset has no {missing}",
                    description="Evaluation needs a Segmentation or Detections (with masks) "
                    "field of predictions and one of ground truth.",
                ),
            )
            prop = types.Property(inputs, view=types.View(label="U-SAM: evaluate"))
            return invalidate(prop, f"this dataset has no {missing}")
        inputs.enum(
            "pred_field",
            preds,
            default=preds[0],
            required=True,
            label="Predictions",
            description="A U-SAM prefix (both fields are scored) or one label field.",
        )
        default_gt = "ground_truth" if "ground_truth" in truths else truths[0]
        gt = inputs.enum(
            "gt_field",
            truths,
            default=default_gt,
            required=True,
            label="Ground truth",
            description="A Segmentation field (255 = ignore) or Detections with masks.",
        )
        eval_key = inputs.str(
            "eval_key",
            label="Evaluation key (optional)",
            description="Default: <prefix>_eval (and <prefix>_eval_det for mAP50).",
        )
        inputs.str(
            "report",
            label="Report directory (optional)",
            description="Writes report.json, report.md and PNG plots here.",
        )
        inputs.float("iou", default=0.5, min=0.01, max=1.0, label="Instance IoU (mAP)")
        inputs.float("boundary_tolerance", default=2.0, min=0.0, label="Boundary tolerance (px)")
        groups = inputs.str(
            "groups",
            label="Superclass ontology (optional)",
            description="A YAML ontology with superclasses: score the ground truth by "
            "superclass (for a head trained on superclasses).",
        )
        inputs.bool("overwrite", default=False, label="Redo an existing evaluation")
        params = ctx.params
        if params.get("groups"):
            invalidate(groups, classes_error(params["groups"]))
        if params.get("gt_field") is not None and params.get("gt_field") == params.get(
            "pred_field"
        ):
            invalidate(gt, "the ground truth and the predictions are the same field")
        invalidate(eval_key, _eval_key_error(ctx.dataset, params))
        return types.Property(inputs, view=types.View(label="U-SAM: evaluate"))

    def execute(self, ctx):
        from fiftyone_usam.stages.evaluate import evaluate

        params = ctx.params
        report = evaluate(
            ctx.target_view(),
            pred_field=params["pred_field"],
            gt_field=params["gt_field"],
            eval_key=params.get("eval_key") or None,
            report=params.get("report") or None,
            iou=float(params.get("iou", 0.5)),
            boundary_tolerance=float(params.get("boundary_tolerance", 2.0)),
            groups=params.get("groups") or None,
            overwrite=bool(params.get("overwrite")),
            progress=progress_callback(ctx, "images"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
            "mIoU": _pct(report.mean_iou),
            "mAP50": _pct(report.map50),
            "boundary_f1": _pct(report.boundary["f1"]),
            "eval_key": report.eval_key,
            "det_eval_key": report.det_eval_key,
            "report_dir": report.report_dir,
            "notes": report.notes,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("mIoU", label="mIoU (%)")
        outputs.str("mAP50", label="mAP50 (%)")
        outputs.str("boundary_f1", label="Boundary F (%)")
        outputs.str("summary", label="Result")
        return types.Property(outputs)


def _choices(dataset):
    """(prediction choices, ground-truth choices): U-SAM prefixes first, then label fields."""
    if dataset is None:
        return [], []
    import fiftyone as fo

    schema = dataset.get_field_schema()
    ours = {f"{k}_{s}" for k in dataset.list_evaluations() for s in ("gt", "pred")}
    labels = sorted(
        name
        for name, field in schema.items()
        if getattr(field, "document_type", None) in (fo.Segmentation, fo.Detections)
        and name not in ours
    )
    prefixes = [n.removesuffix("_semantic") for n in labels if n.endswith("_semantic")]
    return prefixes + labels, labels


def _eval_key_error(dataset, params):
    """The evaluation key is an identifier, and new unless the evaluation is to be redone."""
    pred = params.get("pred_field")
    if not pred:
        return None
    key = params.get("eval_key") or f"{pred.removesuffix('_semantic')}_eval"
    if not key.isidentifier():
        return f"invalid evaluation key {key!r}: use letters, digits and underscores"
    from fiftyone_usam.fiftyone_io.evaluation_records import existing_evaluation

    return existing_evaluation(dataset, key, f"{key}_det", bool(params.get("overwrite")))


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"
