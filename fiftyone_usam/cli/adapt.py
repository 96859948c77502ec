"""``usam adapt``: adapt a trained head to a dataset's own images, without labels."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import (
    device_option,
    echo_problems,
    head_option,
    max_pixels_option,
    shard_size_option,
    view_tag_option,
)
from fiftyone_usam.head.adapt_config import INGREDIENTS


@click.command("adapt")
@click.option("--dataset", required=True, help="FiftyOne dataset name (the images to label).")
@head_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the adapted head is written (a head checkpoint directory).",
)
@click.option(
    "--view",
    default=None,
    help="An augmented view for cross-view consistency: hflip or scale:S (e.g. scale:0.75). "
    "Its embeddings (one more SAM pass) go to a view store beside the target's.",
)
@view_tag_option
@click.option(
    "--ingredients",
    default=",".join(INGREDIENTS),
    show_default=True,
    help="Comma-separated: which of target_statistics, pseudo_labels, consistency, anchor.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: 10.")
@click.option("--seed", type=int, default=None, help="Default: 0 (deterministic on the CPU).")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="An AdaptConfig as YAML or JSON (margins, loss weights, lr, ...).",
)
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The target's EmbeddingStore. Default: the one recorded on the dataset for the head.",
)
@click.option(
    "--view-store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The view's store. Default: beside the target's.",
)
@click.option("--sam", default=None, help="SAM for images not embedded yet. Default: the head's.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM weights for images not embedded yet. Default: the official checkpoint.",
)
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@shard_size_option
@max_pixels_option
def adapt_command(
    dataset: str,
    head: Path,
    out: Path,
    view: str | None,
    view_tag: str | None,
    ingredients: str,
    epochs: int | None,
    seed: int | None,
    config: Path | None,
    store: Path | None,
    view_store: Path | None,
    sam: str | None,
    checkpoint: Path | None,
    device: str | None,
    batch_size: int,
    shard_size: int,
    max_pixels: int,
) -> None:
    """Adapt a head to a dataset's own images, without labels (self-training).

    Re-estimates the head's input statistics on the target, trains it on its own confident
    masks (and unsure masks towards background), keeps matching masks of two views in
    agreement (--view), and anchors it to the source head. Prints the share of masks per
    class, the share sent to background, the mean entropy and the views' agreement, before
    and after; then label with `usam predict --head OUT`.
    """
    from fiftyone_usam.stages.adapt import adapt

    report = adapt(
        dataset,
        head=head,
        out=out,
        view=view,
        store=store,
        view_store=view_store,
        view_tag=view_tag,
        ingredients=[name.strip() for name in ingredients.split(",") if name.strip()],
        config=config,
        epochs=epochs,
        seed=seed,
        sam=sam,
        checkpoint=checkpoint,
        device=device,
        batch_size=batch_size,
        shard_size=shard_size,
        max_pixels=max_pixels,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("sample(s) could not be embedded", report.failed)
