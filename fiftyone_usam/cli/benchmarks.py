"""``usam import-voc`` and ``usam import-coco``: the benchmarks as FiftyOne datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import fiftyone as fo

_dataset_option = click.option(
    "--dataset", required=True, help="Name of the FiftyOne dataset to create (persistent)."
)
_max_samples_option = click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Import only the first N images. Default: all.",
)
_overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Delete an existing dataset of that name first."
)
_masks_dir_option = click.option(
    "--masks-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the semantic mask PNGs go. Default: <FiftyOne dataset dir>/usam/<dataset>/masks.",
)


@click.command("import-voc")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_dataset_option
@click.option(
    "--split",
    default="val",
    show_default=True,
    help="Split list in ImageSets/Segmentation, e.g. train, val, trainval.",
)
@_max_samples_option
@_overwrite_option
@_masks_dir_option
def import_voc_command(
    root: Path,
    dataset: str,
    split: str,
    max_samples: int | None,
    overwrite: bool,
    masks_dir: Path | None,
) -> None:
    """Import PASCAL VOC 2012 segmentation (ROOT: VOCdevkit/VOC2012 or VOCdevkit).

    Writes ground_truth (semantic, 255 = boundary, ignored) and ground_truth_instances. A
    re-run with the same arguments leaves the dataset as it is.
    """
    from fiftyone_usam.stages.benchmarks import import_voc

    result = import_voc(
        root,
        dataset=dataset,
        split=split,
        max_samples=max_samples,
        overwrite=overwrite,
        masks_dir=masks_dir,
        progress=True,
    )
    _echo_summary(result)


@click.command("import-coco")
@click.option(
    "--images-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the images, e.g. coco/val2017.",
)
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instances JSON, e.g. coco/annotations/instances_val2017.json.",
)
@_dataset_option
@_max_samples_option
@_overwrite_option
@_masks_dir_option
def import_coco_command(
    images_dir: Path,
    annotations: Path,
    dataset: str,
    max_samples: int | None,
    overwrite: bool,
    masks_dir: Path | None,
) -> None:
    """Import COCO instances (e.g. val2017) with a semantic map built from them.

    Writes ground_truth (semantic, 255 = crowd, ignored) and ground_truth_instances (with
    iscrowd). A re-run with the same arguments leaves the dataset as it is.
    """
    from fiftyone_usam.stages.benchmarks import import_coco

    result = import_coco(
        images_dir,
        annotations,
        dataset=dataset,
        max_samples=max_samples,
        overwrite=overwrite,
        masks_dir=masks_dir,
        progress=True,
    )
    _echo_summary(result)


def _echo_summary(dataset: fo.Dataset) -> None:
    from fiftyone_usam.stages.benchmarks import INSTANCES_FIELD, SEMANTIC_FIELD

    instances = (
        dataset.count(f"{INSTANCES_FIELD}.detections") if dataset.has_field(INSTANCES_FIELD) else 0
    )
    classes = len(dataset.mask_targets.get(SEMANTIC_FIELD, {})) - 1
    click.echo(
        f"Dataset {dataset.name!r}: {len(dataset)} images, {instances} instances, "
        f"{classes} classes ({SEMANTIC_FIELD}: semantic, {INSTANCES_FIELD}: instances)"
    )
    click.echo(f"Review them in the App: fiftyone app launch {dataset.name}")
