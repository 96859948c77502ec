"""`crawl`: training images of each class from the web, every one checked before it is kept.

Candidates come from a search engine (icrawler's Bing, Google, Baidu or Flickr; one query per
class name and synonym, paged on while more are needed) or from a file of ``class<TAB>url``
lines (engine ``urls``). Each candidate is downloaded politely (`fetch.Fetcher`), decoded and
size-checked (`validation.check_image`), compared with the images already kept (exact bytes and
perceptual hash), and only then written under a name of ours and added to the dataset.

Resumable: URLs the dataset already holds, or that an earlier run rejected (other than for a
failed download), are not fetched again, and a class stops at ``per_class`` crawled images in
the dataset.

Sample fields: ``ground_truth`` (`fo.Classification`), ``source`` (``"crawled"``),
``source_url``, ``query`` (the search text; None for ``urls``), ``engine``, ``sha256`` (of the
downloaded bytes) and ``phash`` (16 hex digits); ``metadata`` holds size, type and bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.crawled import (
    add_crawled,
    held_images,
    rejected_urls,
    remember_rejections,
)
from fiftyone_usam.fiftyone_io.training_dataset import (
    declare_fields,
    default_images_dir,
    open_training_dataset,
    record_run,
    resolve_ontology,
)
from fiftyone_usam.files import remove_stale_temp_files
from fiftyone_usam.progress import Progress, ProgressCallback
from fiftyone_usam.sources.collector import (
    Candidates,
    Collector,
    CrawlConfig,
    CrawlReport,
    Rejection,
)
from fiftyone_usam.sources.engines import engine_options, read_urls_file, search

if TYPE_CHECKING:
    from fiftyone_usam.ontology import Ontology

__all__ = ["CrawlConfig", "CrawlReport", "Rejection", "crawl"]

logger = logging.getLogger(__name__)

FIELDS: dict[str, type] = {
    "source": str,
    "source_url": str,
    "query": str,
    "engine": str,
    "sha256": str,
    "phash": str,
}


def crawl(
    classes: str | Path | Sequence[str] | Ontology | None = None,
    *,
    dataset: str,
    per_class: int = 45,
    engine: str = "bing",
    urls_file: str | Path | None = None,
    images_dir: str | Path | None = None,
    min_size: int = 128,
    max_bytes: int = 20_000_000,
    near_duplicate_distance: int = 6,
    timeout: float = 10.0,
    retries: int = 2,
    delay: float = 1.0,
    workers: int = 4,
    flickr_api_key: str | None = None,
    progress: bool | ProgressCallback | None = None,
) -> CrawlReport:
    """Downloads up to ``per_class`` checked web images of each class into a FiftyOne dataset.

    Args:
        classes: the ontology: ``"a,b,c"``, a list of names, a YAML file (whose synonyms become
            extra search queries) or an `Ontology`; None: the one stored with ``dataset``.
        dataset: the dataset's name; created (persistent) if absent. An existing one must hold
            the same classes (see `training_dataset.merge_ontologies`).
        per_class: crawled images per class the dataset should hold.
        engine: ``bing``, ``google``, ``baidu``, ``flickr`` (search engines, via icrawler) or
            ``urls`` (the URLs in ``urls_file``).
        urls_file: for ``urls``: a text file of ``class<TAB>url`` lines; blank lines and lines
            starting with ``#`` are ignored.
        images_dir: where images are written. Default:
            ``<FiftyOne dataset dir>/usam/<dataset>/images``.
        min_size: shorter side, in pixels, of a kept image.
        max_bytes: largest file kept, in bytes.
        near_duplicate_distance: perceptual-hash bits (of 64) within which an image counts as a
            near-duplicate of a kept one; -1 checks exact duplicates only.
        timeout: seconds per request.
        retries: further attempts after a network failure or a 408/429/5xx answer.
        delay: seconds between two requests to the same host.
        workers: downloads in flight at once.
        flickr_api_key: for ``flickr`` (default: ``$FLICKR_APIKEY``).
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` images.

    Returns:
        A `CrawlReport`: requested, downloaded, kept, and rejected by reason.

    Raises:
        ConfigError: a bad setting, a malformed URLs file, or a Flickr crawl without a key.
        OntologyMismatchError: the dataset holds other classes.
    """
    started = time.perf_counter()
    config = CrawlConfig(
        engine,
        per_class,
        min_size,
        max_bytes,
        near_duplicate_distance,
        timeout,
        retries,
        delay,
        workers,
    )
    options = engine_options(engine, flickr_api_key)
    ontology = resolve_ontology(classes, dataset)
    listed = _listed_urls(engine, urls_file, ontology)
    target = open_training_dataset(dataset, ontology)
    declare_fields(target, FIELDS)
    folder = Path(images_dir).expanduser() if images_dir else default_images_dir(dataset)
    remove_stale_temp_files(folder)
    run = Collector.start(
        lambda kept: add_crawled(target, kept),
        config,
        folder,
        dataset_name=target.name,
        held=held_images(target),
        rejected_before=rejected_urls(target),
    )
    run.report.already_done = sum(run.counts.get(name, 0) for name in ontology.names)
    needs = {name: max(0, per_class - run.counts.get(name, 0)) for name in ontology.names}
    bar = Progress(progress, sum(needs.values()), "crawl")
    try:
        for name in ontology.names:
            if needs[name]:
                candidates = _candidates(name, ontology, config, options, listed, run)
                got = run.crawl_class(name, candidates, needs[name], bar)
                bar.update(needs[name] - got)  # what could not be found still counts as done
    finally:
        run.fetcher.close()
        remember_rejections(target, run.rejected_urls)
        bar.close()
    report = run.report
    report.per_class = {name: run.counts.get(name, 0) for name in ontology.names}
    report.short = {n: per_class - c for n, c in report.per_class.items() if c < per_class}
    report.seconds = time.perf_counter() - started
    settings = {**asdict(config), "urls_file": str(urls_file) if urls_file else None}
    record_run(target, "crawl", {**settings, "images_dir": str(folder)}, report.summary())
    logger.info("crawl: %s", report.summary())
    return report


def _listed_urls(
    engine: str, urls_file: str | Path | None, ontology: Ontology
) -> dict[str, list[str]] | None:
    if engine != "urls":
        if urls_file:
            raise ConfigError(f"--urls-file is for --engine urls, not {engine}")
        return None
    if not urls_file:
        raise ConfigError("--engine urls needs --urls-file FILE (one `class<TAB>url` per line)")
    listed = read_urls_file(urls_file, ontology.names)
    empty = [name for name, urls in listed.items() if not urls]
    if empty:
        logger.warning("%s lists no URLs for: %s", urls_file, ", ".join(empty))
    return listed


def _candidates(
    name: str,
    ontology: Ontology,
    config: CrawlConfig,
    options: dict[str, Any],
    listed: dict[str, list[str]] | None,
    run: Collector,
) -> Candidates:
    """Yields ``(query, URLs)`` batches for a class, paging on while asked for more."""
    if listed is not None:
        yield None, listed[name]
        return
    for query in ontology.queries_for(name):
        offset = 0
        while True:
            missing = config.per_class - run.counts.get(name, 0)
            if missing <= 0:
                return
            count = max(10, int(missing * config.oversample))
            urls = search(
                config.engine,
                query,
                offset=offset,
                count=count,
                options=options,
                timeout=config.timeout,
                retries=config.retries,
            )
            if not urls or all(url in run.known_urls for url in urls):
                break  # this query has nothing new: try the next synonym
            yield query, urls
            if len(urls) < count:
                break  # the engine has no more results for this query
            offset += count
