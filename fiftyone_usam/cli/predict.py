"""``usam predict``: label a dataset's images with a trained head."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import (
    device_option,
    echo_problems,
    engine_options,
    granularity_option,
    head_option,
    label_batch_size_option,
    mask_dir_option,
    max_pixels_option,
    nms_iou_option,
    overwrite_option,
    prompt_field_option,
    shard_size_option,
    view_tag_option,
)


@click.command("predict")
@click.option("--dataset", required=True, help="FiftyOne dataset name (must be persistent).")
@head_option
@click.option(
    "--field",
    default="usam",
    show_default=True,
    help="Prefix of the output fields FIELD_semantic, FIELD_instances, FIELD_uncertainty.",
)
@view_tag_option
@prompt_field_option
@click.option(
    "--keep-prompt-labels",
    is_flag=True,
    help="With --prompt-field: write each prompt's own label (SAM gives the mask); the head's "
    "label and confidence become the head_label / head_confidence attributes.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Minimum class probability of a mask; below it, background. Default: the head's own.",
)
@nms_iou_option()
@granularity_option()
@click.option("--class-agnostic-nms", is_flag=True, help="Suppress overlaps across classes too.")
@click.option(
    "--groups",
    default=None,
    help="Ontology YAML with superclasses: merge the head's classes into them.",
)
@overwrite_option
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="EmbeddingStore to read (and add missing samples to). Default: the one recorded on "
    "the dataset that fits the head; when it has every sample, SAM is not loaded.",
)
@click.option("--sam", default=None, help="SAM for samples not in the store. Default: the head's.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM weights for samples not in the store. Default: the official checkpoint.",
)
@mask_dir_option
@device_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images per SAM encoder call, when SAM runs.",
)
@shard_size_option
@max_pixels_option
@label_batch_size_option
@click.option(
    "--bulk-writes/--no-bulk-writes",
    default=True,
    show_default=True,
    help="Write each batch in bulk (off: save sample by sample; the same labels, slower).",
)
@click.option(
    "--head-threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads of the head's forward passes on the CPU (the other cores write).",
)
@engine_options
def predict_command(
    dataset: str,
    head: Path,
    field: str,
    view_tag: str | None,
    prompt_field: str | None,
    keep_prompt_labels: bool,
    threshold: float | None,
    nms_iou: float,
    granularity: str,
    class_agnostic_nms: bool,
    groups: str | None,
    overwrite: bool,
    store: Path | None,
    sam: str | None,
    checkpoint: Path | None,
    mask_dir: Path | None,
    device: str | None,
    batch_size: int,
    shard_size: int,
    max_pixels: int,
    label_batch_size: int,
    bulk_writes: bool,
    head_threads: int,
    engine: str,
    workers: int,
    gpus_per_worker: float | None,
    ray_address: str | None,
) -> None:
    """Label a dataset's images with a trained head: semantic masks, instances, uncertainty.

    Existing output fields are never replaced without --overwrite; a re-run with the same head
    and settings labels only the samples not labelled yet. With --prompt-field, the field's
    boxes (or keypoints) prompt SAM and each prompt becomes one named instance; where prompts
    carry labels, the head's agreement is reported and disagreeing samples are tagged
    usam:disagree.
    """
    from fiftyone_usam.stages.predict import predict

    report = predict(
        dataset,
        head=head,
        field=field,
        store=store,
        sam=sam,
        checkpoint=checkpoint,
        view_tag=view_tag,
        prompt_field=prompt_field,
        keep_prompt_labels=keep_prompt_labels,
        threshold=threshold,
        nms_iou=nms_iou,
        granularity=granularity,  # type: ignore[arg-type]
        class_agnostic_nms=class_agnostic_nms,
        groups=groups,
        overwrite=overwrite,
        mask_dir=mask_dir,
        device=device,
        batch_size=batch_size,
        shard_size=shard_size,
        max_pixels=max_pixels,
        label_batch_size=label_batch_size,
        bulk_writes=bulk_writes,
        head_threads=head_threads,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        ray_address=ray_address,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("sample(s) could not be labelled", report.failed)
    echo_problems("sample(s) skipped, with no usable prompt", report.skipped)
    click.echo(f"Review them in the App: fiftyone app launch {dataset}")
