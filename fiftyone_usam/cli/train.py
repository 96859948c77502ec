"""``usam train``: train U-SAM's head on a dataset's labels and its EmbeddingStore."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import device_option, echo_problems, view_tag_option
from fiftyone_usam.head.config import PLACEMENTS, STAGES, TRAIN_PRECISIONS


@click.command("train")
@click.option("--dataset", required=True, help="FiftyOne dataset name (must be persistent).")
@view_tag_option
@click.option(
    "--label-field",
    default="ground_truth",
    show_default=True,
    help="fo.Classification field with each image's class.",
)
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="EmbeddingStore of the dataset, with or without masks (training reads only the "
    "embeddings). Default: the newest one `usam embed` recorded on it.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=True, file_okay=False, path_type=Path),
    default=None,
    help="Output directory; gets teacher/ and student/ checkpoints. "
    "Default: <FiftyOne dataset dir>/usam/<dataset>/head.",
)
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    default=None,
    help="What to train: the MIL teacher, the student (from OUT/teacher), or both in turn. "
    "Default: both (or the --config file's stage).",
)
@click.option(
    "--classes",
    default=None,
    help="Ontology: a YAML file or a comma-separated list; fixes the class order. "
    "Default: the ontology stored by generate/crawl, else the distinct labels, sorted.",
)
@click.option(
    "--superclasses",
    is_flag=True,
    help="Train on the ontology's superclasses (e.g. animals) instead of its classes.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Most epochs per stage.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam lr.")
@click.option("--seed", type=int, default=None, help="Seed of the split, init and batch order.")
@device_option
@click.option(
    "--precision",
    type=click.Choice(TRAIN_PRECISIONS),
    default=None,
    help="auto (default: bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16.",
)
@click.option(
    "--placement",
    type=click.Choice(PLACEMENTS),
    default=None,
    help="Where the training set lives: auto (default: on the device when it fits in its free "
    "memory, else host memory, copied batch by batch), device or host.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON/YAML file of training settings (TrainConfig: lambda_uncertainty, "
    "entropy_threshold, topk_divisor, patience, ...); the options above override it.",
)
@click.option(
    "--head-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON/YAML file of the head's shape (HeadConfig: hidden_dim, dropout, ...).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Train even when --out holds a head trained on the same images and settings.",
)
def train_command(
    dataset: str,
    view_tag: str | None,
    label_field: str,
    store: Path | None,
    out: Path | None,
    stage: str | None,
    classes: str | None,
    superclasses: bool,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
    precision: str | None,
    placement: str | None,
    config: Path | None,
    head_config: Path | None,
    overwrite: bool,
) -> None:
    """Train the head that makes SAM semantic, from image-level labels.

    A teacher learns from each image's class alone (top-k multiple-instance learning over its
    masks); a student then learns the same, while being pushed towards "no idea" on the masks
    the teacher is unsure about, which at prediction time become background.
    """
    from fiftyone_usam.stages.train import train_head

    report = train_head(
        dataset,
        label_field=label_field,
        store=store,
        out=out,
        stage=stage,  # type: ignore[arg-type]
        classes=classes,
        superclasses=superclasses,
        view_tag=view_tag,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        placement=placement,  # type: ignore[arg-type]
        config=config,
        head_config=head_config,
        overwrite=overwrite,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("sample(s) were skipped", report.skipped)
