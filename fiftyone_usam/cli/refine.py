"""``usam refine``: a head that learns from the corrections made in the App, then relabels."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import device_option, echo_problems, view_tag_option


@click.command("refine")
@click.option("--dataset", required=True, help="FiftyOne dataset name (the reviewed labels).")
@click.option(
    "--field",
    default="usam",
    show_default=True,
    help="The prefix U-SAM wrote; the corrections are on FIELD_instances.",
)
@click.option(
    "--head",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The head to refine. Default: the one that labelled FIELD.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the refined head goes. Default: beside the dataset's files (head-refined).",
)
@view_tag_option
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A RefineConfig as YAML or JSON (epochs, lr, weights, seed).",
)
@click.option(
    "--relabel/--no-relabel",
    default=True,
    show_default=True,
    help="Relabel the samples from the cache with the refined head (reviewed instances kept).",
)
@device_option
def refine_command(
    dataset: str,
    field: str,
    head: Path | None,
    out: Path | None,
    view_tag: str | None,
    config: Path | None,
    relabel: bool,
    device: str | None,
) -> None:
    """Fine-tune the head on the reviewer's corrections, then relabel from the cache.

    In the App, tag wrong instances usam:wrong, confirm right ones usam:ok, or edit their
    labels; each corrected mask's cached embedding becomes a training example (wrong: pushed
    to background), with the previous head as an anchor so the rest is not forgotten. No SAM
    runs; reviewed instances keep the reviewer's labels.
    """
    from fiftyone_usam.stages.refine import refine

    report = refine(
        dataset,
        field=field,
        head=head,
        out=out,
        view_tag=view_tag,
        config=config,
        relabel=relabel,
        device=device,
        progress=True,
    )
    click.echo(report.summary())
    echo_problems("correction(s) skipped", report.skipped)
