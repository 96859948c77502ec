"""``usam crawl``: training images of each class from the web, checked and de-duplicated."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.sources.engines import ENGINES, FLICKR_KEY_ENV

_MAX_REJECTIONS_SHOWN = 20


@click.command("crawl")
@click.option(
    "--classes",
    default=None,
    help='Class names ("person,dog,potted plant") or an ontology YAML file (its synonyms are '
    "searched too). Default: the classes stored with --dataset.",
)
@click.option("--dataset", required=True, help="FiftyOne dataset to create or add to.")
@click.option(
    "--per-class",
    type=click.IntRange(min=0),
    default=45,
    show_default=True,
    help="Crawled images per class the dataset should hold.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="bing",
    show_default=True,
    help="Search engine (via icrawler), or urls: the URLs in --urls-file.",
)
@click.option(
    "--urls-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="For --engine urls: one `class<TAB>url` per line; blank and # lines are ignored.",
)
@click.option(
    "--images-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where images are written. Default: <FiftyOne dataset dir>/usam/<dataset>/images.",
)
@click.option(
    "--min-size",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Shorter side, in pixels, of a kept image.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=20_000_000,
    show_default=True,
    help="Largest file kept.",
)
@click.option(
    "--near-duplicate-distance",
    type=click.IntRange(min=-1, max=64),
    default=6,
    show_default=True,
    help="Perceptual-hash bits (of 64) within which an image is a near-duplicate; -1: off.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds."
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Further attempts after a network failure or a 408/429/5xx answer.",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds between two requests to the same host.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Downloads in flight at once.",
)
@click.option(
    "--flickr-api-key",
    envvar=FLICKR_KEY_ENV,
    default=None,
    help=f"For --engine flickr (or set {FLICKR_KEY_ENV}).",
)
def crawl_command(
    classes: str | None,
    dataset: str,
    per_class: int,
    engine: str,
    urls_file: Path | None,
    images_dir: Path | None,
    min_size: int,
    max_bytes: int,
    near_duplicate_distance: int,
    timeout: float,
    retries: int,
    delay: float,
    workers: int,
    flickr_api_key: str | None,
) -> None:
    """Download training images of each class from the web, keeping only good, new ones.

    Every download must decode as an image, be at least --min-size pixels on its shorter side
    and at most --max-bytes, and be neither a copy nor a near-copy of an image already kept.
    URLs the dataset already holds are not fetched again.
    """
    from fiftyone_usam.stages.crawl import crawl

    report = crawl(
        classes,
        dataset=dataset,
        per_class=per_class,
        engine=engine,
        urls_file=urls_file,
        images_dir=images_dir,
        min_size=min_size,
        max_bytes=max_bytes,
        near_duplicate_distance=near_duplicate_distance,
        timeout=timeout,
        retries=retries,
        delay=delay,
        workers=workers,
        flickr_api_key=flickr_api_key,
        progress=True,
    )
    click.echo(report.summary())
    if report.rejections:
        shown = report.rejections[:_MAX_REJECTIONS_SHOWN]
        click.echo(f"rejected ({sum(report.rejected.values())}):", err=True)
        for r in shown:
            click.echo(f"  {r.reason:<15} {r.label}: {r.url}  {r.detail}", err=True)
        if sum(report.rejected.values()) > len(shown):
            click.echo(f"  ... and {sum(report.rejected.values()) - len(shown)} more", err=True)
