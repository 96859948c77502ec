"""Options and output shared by several ``usam`` commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from fiftyone_usam.execution.work import ENGINES
from fiftyone_usam.images import DEFAULT_MAX_PIXELS
from fiftyone_usam.inference.predictor import DEFAULT_NMS_IOU, GRANULARITIES

MAX_SHOWN = 20
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

device_option = click.option(
    "--device",
    default=None,
    help="torch device, e.g. cpu, cuda, cuda:1. Default: cuda if available, else cpu.",
)
head_option = click.option(
    "--head",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Head checkpoint directory, or a `usam train --out` directory (its student).",
)
view_tag_option = click.option("--view-tag", default=None, help="Only the samples with this tag.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing output fields.")
mask_dir_option = click.option(
    "--mask-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write masks as PNG files here instead of into the samples (for large images).",
)
shard_size_option = click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images per store shard written (the most a killed run can lose).",
)
label_batch_size_option = click.option(
    "--label-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Samples per head forward pass and per database write when labelling (1: one at a time).",
)
max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Images of more pixels are not decoded and fail on their own (decompression bombs).",
)


prompt_field_option = click.option(
    "--prompt-field",
    default=None,
    help="Prompt SAM with this label field instead of the point grid: the boxes of a "
    "Detections field (one mask each) or the points of a Keypoints field (one prompt per "
    "label). A head trained on the grid names these masks (same SAM).",
)


def engine_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--engine``, ``--workers``, ``--gpus-per-worker``, ``--ray-address``: where the
    per-sample work runs (the same names as the Python API's parameters)."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="local: in this process; ray: on Ray actors, each loading the model once "
            'and writing its results itself (pip install "fiftyone-usam[ray]").',
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Ray actors with --engine ray (e.g. one per GPU).",
        ),
        click.option(
            "--gpus-per-worker",
            type=click.FloatRange(min=0),
            default=None,
            help="GPUs each Ray actor asks for. Default: 1 when the cluster has GPUs, else 0.",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Ray cluster to join (what `ray start --head` printed). Default: RAY_ADDRESS "
            "if set, else a local Ray started for the run. Images and stores must be on "
            "storage every node sees.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


GRANULARITY_HELP = (
    "Which of SAM's 3 masks per point: best (SAM's highest predicted IoU), coarse (the "
    "largest: whole objects), medium, fine (the smallest: parts), or all (NMS decides)."
)
NMS_IOU_HELP = "Mask IoU above which the less confident of two overlapping masks is dropped."


def granularity_option(help: str = GRANULARITY_HELP) -> Decorator:
    """``--granularity``: which of SAM's multimask outputs feed a predictor."""
    return click.option(
        "--granularity",
        type=click.Choice(GRANULARITIES),
        default="best",
        show_default=True,
        help=help,
    )


def nms_iou_option(help: str = NMS_IOU_HELP) -> Decorator:
    """``--nms-iou``: the mask-NMS IoU threshold."""
    return click.option(
        "--nms-iou",
        type=click.FloatRange(0, 1),
        default=DEFAULT_NMS_IOU,
        show_default=True,
        help=help,
    )


def echo_problems(title: str, problems: Mapping[str, str]) -> None:
    """Lists ``sample id: reason`` lines on stderr (the first `MAX_SHOWN` of them)."""
    if not problems:
        return
    click.echo(f"{len(problems)} {title}:", err=True)
    for key, reason in list(problems.items())[:MAX_SHOWN]:
        click.echo(f"  {key}: {reason}", err=True)
    if len(problems) > MAX_SHOWN:
        click.echo(f"  ... and {len(problems) - MAX_SHOWN} more", err=True)
