"""``usam embed``: SAM mask embeddings of a dataset into an EmbeddingStore."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import (
    device_option,
    echo_problems,
    engine_options,
    max_pixels_option,
    prompt_field_option,
    shard_size_option,
    view_tag_option,
)
from fiftyone_usam.devices import PRECISIONS
from fiftyone_usam.embeddings.extractor import MASK_ENCODINGS, MASK_MODES
from fiftyone_usam.embeddings.fast_attention import ENCODER_ATTENTIONS


@click.command("embed")
@click.option("--dataset", required=True, help="FiftyOne dataset name (must be persistent).")
@view_tag_option
@click.option(
    "--sam",
    default=None,
    help="SAM variant: vit_b, vit_l or vit_h, a custom name, or a variant config file. "
    "Default: the variant described by <checkpoint-stem>.json beside --checkpoint, else vit_b.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM weights. Default: the official checkpoint from the cache or FiftyOne's model "
    "zoo directory, downloaded on first use.",
)
@click.option(
    "--store",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="EmbeddingStore directory (created if absent; resumed if present).",
)
@click.option(
    "--points-per-side",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Point-prompt grid size; d = points_per_side^2 masks per image.",
)
@prompt_field_option
@click.option(
    "--view",
    default=None,
    help="Embed an augmented view of each image instead: hflip or scale:S (e.g. scale:0.75), "
    "its grid rows in the original's order, embeddings only: for `usam adapt --view`.",
)
@device_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images per image-encoder call.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: bf16 on CUDA, fp32 on CPU.",
)
@shard_size_option
@max_pixels_option
@click.option(
    "--points-per-batch",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Prompts per mask-decoder call; bounds its memory whatever the grid.",
)
@click.option(
    "--masks",
    type=click.Choice(MASK_MODES),
    default="full",
    show_default=True,
    help="full: keep SAM's masks (needed to label these images); none: embeddings only, "
    "about half the store, enough to train a head on these images.",
)
@click.option(
    "--mask-encoding",
    type=click.Choice(MASK_ENCODINGS),
    default="device",
    show_default=True,
    help="device: find the masks' run lengths on the model's device, copy only those; host: "
    "copy the masks and encode them there (the reference). The same bytes either way.",
)
@click.option(
    "--encoder-attention",
    type=click.Choice(ENCODER_ATTENTIONS),
    default="auto",
    show_default=True,
    help="sdpa: the image encoder's attention as PyTorch's fused scaled_dot_product_attention "
    "(equal to reference within float rounding); auto: sdpa on CUDA, reference elsewhere.",
)
@click.option(
    "--encode-workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Threads turning mask runs into RLE strings while the device works on the next "
    "images (0: in line). These three speed options do not change what is stored.",
)
@click.option(
    "--num-workers",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Threads reading images ahead of the model (in each worker).",
)
@engine_options
def embed_command(
    dataset: str,
    view_tag: str | None,
    sam: str | None,
    checkpoint: Path | None,
    store: Path,
    points_per_side: int,
    prompt_field: str | None,
    view: str | None,
    device: str | None,
    batch_size: int,
    precision: str,
    shard_size: int,
    max_pixels: int,
    points_per_batch: int,
    masks: str,
    mask_encoding: str,
    encoder_attention: str,
    encode_workers: int,
    num_workers: int,
    engine: str,
    workers: int,
    gpus_per_worker: float | None,
    ray_address: str | None,
) -> None:
    """Compute SAM mask embeddings of a dataset's images into an EmbeddingStore.

    For each image, SAM's encoder runs once and a grid of point prompts goes through the mask
    decoder; per point the store keeps its 3 masks, predicted IoUs, stability scores and the
    1024-d mask-token embedding (with --masks none only the IoUs and the embedding, all that
    training reads). Re-running skips the samples already stored. With --prompt-field, the
    field's boxes or points prompt SAM instead, one row per label (named by its id); a sample
    whose prompts changed is embedded again.
    """
    from fiftyone_usam.stages.embed import embed

    report = embed(
        dataset,
        store=store,
        sam=sam,
        checkpoint=checkpoint,
        view_tag=view_tag,
        points_per_side=points_per_side,
        prompt_field=prompt_field,
        view=view,
        device=device,
        batch_size=batch_size,
        precision=precision,  # type: ignore[arg-type]
        shard_size=shard_size,
        max_pixels=max_pixels,
        points_per_batch=points_per_batch,
        masks=masks,  # type: ignore[arg-type]
        mask_encoding=mask_encoding,  # type: ignore[arg-type]
        encoder_attention=encoder_attention,  # type: ignore[arg-type]
        encode_workers=encode_workers,
        num_workers=num_workers,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        ray_address=ray_address,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("sample(s) could not be embedded", report.failed)
    echo_problems("sample(s) skipped, with no usable prompt", report.skipped)
