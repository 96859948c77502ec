"""``usam evaluate``: mIoU, mAP50 and boundary F of predictions against ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import echo_problems, view_tag_option
from fiftyone_usam.evaluation.metrics import DEFAULT_BOUNDARY_TOLERANCE


@click.command("evaluate")
@click.option("--dataset", required=True, help="FiftyOne dataset name.")
@click.option(
    "--pred-field",
    required=True,
    help="Prediction prefix (usam -> usam_semantic, usam_instances), or one Segmentation or "
    "Detections field.",
)
@click.option(
    "--gt-field",
    required=True,
    help="Ground truth: a Segmentation field (255 = ignore) or Detections with masks.",
)
@click.option(
    "--gt-instances-field",
    default=None,
    help="Instance ground truth for mAP50. Default: GT_FIELD_instances when it exists.",
)
@click.option(
    "--eval-key",
    default=None,
    help="FiftyOne evaluation key. Default: PREFIX_eval (and PREFIX_eval_det for mAP).",
)
@view_tag_option
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.json, report.md, per_class_iou.png and confusion_matrix.png here.",
)
@click.option(
    "--iou",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Mask IoU at which an instance counts as found (0.5: mAP50).",
)
@click.option(
    "--boundary-tolerance",
    type=click.FloatRange(min=0),
    default=DEFAULT_BOUNDARY_TOLERANCE,
    show_default=True,
    help="Pixels within which predicted and true boundaries match (boundary F).",
)
@click.option(
    "--class-agnostic/--per-class",
    default=None,
    help="Score any-object vs background only. Default: when the prediction's only class is "
    "'foreground' (the Otsu baseline).",
)
@click.option(
    "--groups",
    default=None,
    help="Ontology YAML with superclasses: score the ground truth's classes as their "
    "superclasses (for a head trained with --superclasses).",
)
@click.option("--overwrite", is_flag=True, help="Redo an evaluation that exists with this key.")
def evaluate_command(
    dataset: str,
    pred_field: str,
    gt_field: str,
    gt_instances_field: str | None,
    eval_key: str | None,
    view_tag: str | None,
    report: Path | None,
    iou: float,
    boundary_tolerance: float,
    class_agnostic: bool | None,
    groups: str | None,
    overwrite: bool,
) -> None:
    """Score predictions: mIoU (VOC convention), mAP50 on masks, boundary F, foreground IoU.

    The evaluation is stored on the dataset as FiftyOne evaluation runs, so the App's Model
    Evaluation panel shows it, mIoU included.
    """
    from fiftyone_usam.stages.evaluate import evaluate

    result = evaluate(
        dataset,
        pred_field=pred_field,
        gt_field=gt_field,
        gt_instances_field=gt_instances_field,
        eval_key=eval_key,
        view_tag=view_tag,
        report=report,
        iou=iou,
        boundary_tolerance=boundary_tolerance,
        class_agnostic=class_agnostic,
        groups=groups,
        overwrite=overwrite,
        progress=True,
    )
    click.echo(result.summary())
    for note in result.notes:
        click.echo(f"note: {note}")
    echo_problems("sample(s) not counted", result.skipped)
    keys = result.eval_key + (f", {result.det_eval_key}" if result.det_eval_key else "")
    click.echo(
        f"Stored as FiftyOne evaluations {keys}; see them in the App's Model Evaluation "
        f"panel: fiftyone app launch {dataset}"
    )
    if result.report_dir:
        click.echo(f"Report: {result.report_dir}/report.md")
