"""``usam run`` (the whole chain, resumable) and ``usam demo`` (the chain on tiny models)."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import (
    device_option,
    engine_options,
    label_batch_size_option,
    view_tag_option,
)
from fiftyone_usam.embeddings.extractor import MASK_MODES
from fiftyone_usam.sources import SOURCES
from fiftyone_usam.sources.engines import ENGINES


@click.command("run")
@click.option("--classes", required=True, help='Class names ("cat,dog") or an ontology YAML.')
@click.option("--dataset", required=True, help="The FiftyOne dataset to label.")
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    default="synthetic",
    show_default=True,
    help="Training images from Stable Diffusion, or from the web.",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Training images per class. Default: 200 synthetic, 45 crawled.",
)
@click.option("--sam", default=None, help="SAM variant: vit_b (default), vit_l, vit_h, or custom.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM weights. Default: the official checkpoint (cached or downloaded).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where heads and the evaluation report go. Default: beside the dataset's files.",
)
@click.option("--gt-field", default=None, help="Ground truth on the dataset: evaluate against it.")
@click.option("--field", default="usam", show_default=True, help="Prefix of the output fields.")
@click.option(
    "--training-dataset",
    default=None,
    help="Dataset of training images. Default: DATASET-usam-SOURCE.",
)
@click.option(
    "--model", default=None, help="diffusers pipeline (hub id or directory). Default: SD v1.4."
)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--crawl-engine",
    type=click.Choice(ENGINES),
    default="bing",
    show_default=True,
    help="Search engine, with --source crawl (--engine chooses where the work runs).",
)
@click.option(
    "--urls-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="class<TAB>url lines, for --crawl-engine urls.",
)
@click.option("--points-per-side", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--training-masks",
    type=click.Choice(MASK_MODES),
    default="none",
    show_default=True,
    help="Keep SAM's masks of the training images (full), or only their embeddings, all that "
    "training reads (none: about half the store). The dataset's own store keeps its masks.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Head training epochs.")
@click.option(
    "--superclasses",
    is_flag=True,
    help="Train on the ontology's superclasses, and score the ground truth by superclass.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Default: the head's.")
@click.option(
    "--adapt",
    is_flag=True,
    help="Adapt the head to the dataset's images (no labels, `usam adapt`) between train and "
    "predict, and label with the adapted head.",
)
@click.option(
    "--adapt-view",
    default="hflip",
    show_default=True,
    help="The augmented view of --adapt (hflip, scale:S, or none).",
)
@view_tag_option
@click.option("--overwrite", is_flag=True, help="Replace prediction fields this run did not write.")
@device_option
@label_batch_size_option
@engine_options
def run_command(**options: object) -> None:
    """From class names to a labelled dataset: generate|crawl, embed, train, [adapt,] predict,
    evaluate.

    Every stage is skipped when its result is already complete and fits the options, so a
    re-run after a crash, or after changing only the class list, does only what changed.
    """
    from fiftyone_usam.stages.pipeline import run

    classes = options.pop("classes")
    if str(options.get("adapt_view")).lower() == "none":
        options["adapt_view"] = None
    report = run(classes, progress=True, **options)  # type: ignore[arg-type]
    click.echo(report.summary())


@click.command("demo")
@click.option("--dataset", default="usam-demo", show_default=True, help="Scenes dataset name.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the tiny models, heads and report go. Default: beside the dataset's files.",
)
@click.option("--images", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--per-class", type=click.IntRange(min=2), default=6, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo_command(
    dataset: str, workdir: Path | None, images: int, per_class: int, epochs: int, seed: int
) -> None:
    """Run every stage offline on the CPU with tiny random models (masks NOT meaningful)."""
    from fiftyone_usam.stages.demo import WARNING, demo

    click.echo(WARNING)
    report = demo(
        dataset=dataset,
        workdir=workdir,
        images=images,
        per_class=per_class,
        epochs=epochs,
        seed=seed,
        progress=True,
    )
    click.echo(report.summary())
    click.echo(WARNING)
