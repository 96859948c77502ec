"""``usam baseline``: label a dataset with SAM+CLIP or Otsu, to compare with U-SAM."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import (
    device_option,
    echo_problems,
    granularity_option,
    mask_dir_option,
    nms_iou_option,
    overwrite_option,
    view_tag_option,
)
from fiftyone_usam.inference.clip_backend import DEFAULT_CLIP_MODEL
from fiftyone_usam.inference.labelers import METHODS, SAM_CLIP_THRESHOLD


@click.command("baseline")
@click.option(
    "--method",
    required=True,
    type=click.Choice(METHODS),
    help="sam-clip: SAM's masks classified by CLIP; otsu: class-agnostic foreground by "
    "Otsu's threshold.",
)
@click.option("--dataset", required=True, help="FiftyOne dataset name (must be persistent).")
@click.option(
    "--field",
    required=True,
    help="Prefix of the output fields FIELD_semantic, FIELD_instances, FIELD_uncertainty.",
)
@click.option(
    "--classes",
    default=None,
    help="sam-clip: comma-separated class names or an ontology YAML. Default: the ontology "
    "stored on the dataset.",
)
@click.option(
    "--clip-model",
    default=DEFAULT_CLIP_MODEL,
    show_default=True,
    help="sam-clip: CLIP hub id, or a directory written by save_pretrained (offline).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=SAM_CLIP_THRESHOLD,
    show_default=True,
    help="sam-clip: minimum CLIP class probability of a mask; below it, background.",
)
@nms_iou_option("sam-clip: mask IoU above which the less confident of two masks is dropped.")
@granularity_option("sam-clip: which of SAM's 3 masks per point, as in `usam predict`.")
@click.option(
    "--class-agnostic-nms", is_flag=True, help="sam-clip: suppress overlaps across classes too."
)
@click.option("--sam", default=None, help="sam-clip: SAM for samples not in the store.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="sam-clip: SAM weights for samples not in the store. Default: the official checkpoint.",
)
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="sam-clip: EmbeddingStore of the SAM proposals. Default: the newest recorded on the "
    "dataset (`usam embed`), else a new one.",
)
@click.option(
    "--points-per-side",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="sam-clip: SAM prompt grid when a new store is made.",
)
@view_tag_option
@overwrite_option
@mask_dir_option
@device_option
@click.option(
    "--clip-batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="sam-clip: masks per CLIP forward pass.",
)
def baseline_command(
    method: str,
    dataset: str,
    field: str,
    classes: str | None,
    clip_model: str,
    threshold: float,
    nms_iou: float,
    granularity: str,
    class_agnostic_nms: bool,
    sam: str | None,
    checkpoint: Path | None,
    store: Path | None,
    points_per_side: int,
    view_tag: str | None,
    overwrite: bool,
    mask_dir: Path | None,
    device: str | None,
    clip_batch_size: int,
) -> None:
    """Label a dataset with a baseline, into the same fields as `usam predict`.

    \b
    sam-clip  the SAM masks U-SAM labels, each classified zero-shot by CLIP
    otsu      foreground/background by Otsu's threshold (no SAM, no classes)

    Existing output fields are never replaced without --overwrite; a re-run with the same
    settings labels only the samples not labelled yet.
    """
    from fiftyone_usam.stages.baseline import baseline

    report = baseline(
        dataset,
        method=method,  # type: ignore[arg-type]
        field=field,
        classes=classes,
        clip_model=clip_model,
        threshold=threshold,
        nms_iou=nms_iou,
        granularity=granularity,  # type: ignore[arg-type]
        class_agnostic_nms=class_agnostic_nms,
        sam=sam,
        checkpoint=checkpoint,
        store=store,
        points_per_side=points_per_side,
        view_tag=view_tag,
        overwrite=overwrite,
        mask_dir=mask_dir,
        device=device,
        clip_batch_size=clip_batch_size,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("sample(s) could not be labelled", report.failed)
    click.echo(f"Review them in the App: fiftyone app launch {dataset}")
