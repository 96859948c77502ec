"""`Collector`: downloads a class's candidate URLs, checks them, and hands on the good ones.

Downloads and decoding run in worker threads; duplicate checks, file writes and the hand-on
(``add``: the crawl stage adds them to its dataset) run in the calling thread, in candidate
order, so a run's outcome does not depend on timing. Each chunk of candidates is handed on
before the next is fetched: an interrupted crawl keeps what it had kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.files import write_bytes_atomic
from fiftyone_usam.progress import Progress
from fiftyone_usam.sources.fetch import Fetcher, FetchPolicy
from fiftyone_usam.sources.naming import slug
from fiftyone_usam.sources.validation import (
    DOWNLOAD_FAILED,
    CheckedImage,
    DuplicateIndex,
    ImageLimits,
    Rejected,
    check_image,
)

logger = logging.getLogger(__name__)

_MAX_REJECTIONS_KEPT = 1000

# (query or None, candidate URLs) batches for one class
Candidates = Iterator[tuple[str | None, list[str]]]


@dataclass(frozen=True)
class CrawlConfig:
    """How a crawl finds and checks images (recorded with every run).

    Attributes:
        engine: ``bing``, ``google``, ``baidu``, ``flickr`` or ``urls``.
        per_class: crawled images per class the dataset should hold.
        min_size: shorter side, in pixels, of a kept image.
        max_bytes: largest file kept.
        near_duplicate_distance: perceptual-hash bits within which an image is a near-duplicate
            of a kept one (-1: exact duplicates only).
        timeout: seconds per request (see `fetch.FetchPolicy`).
        retries: further attempts after a network failure or a 408/429/5xx answer.
        delay: seconds between two requests to the same host.
        workers: downloads in flight at once.
        oversample: candidates asked of a search engine per image still needed.
    """

    engine: str = "bing"
    per_class: int = 45
    min_size: int = 128
    max_bytes: int = 20_000_000
    near_duplicate_distance: int = 6
    timeout: float = 10.0
    retries: int = 2
    delay: float = 1.0
    workers: int = 4
    oversample: float = 2.0

    def __post_init__(self) -> None:
        checks = {
            "per_class": self.per_class >= 0,
            "min_size": self.min_size >= 1,
            "max_bytes": self.max_bytes >= 1,
            "timeout": self.timeout > 0,
            "retries": self.retries >= 0,
            "delay": self.delay >= 0,
            "workers": self.workers >= 1,
            "oversample": self.oversample >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ConfigError(f"invalid crawl setting(s): {values}")

    @property
    def limits(self) -> ImageLimits:
        """The image checks."""
        return ImageLimits(self.min_size, self.max_bytes, 50_000_000, self.near_duplicate_distance)

    @property
    def policy(self) -> FetchPolicy:
        """The download behaviour."""
        return FetchPolicy(self.timeout, self.retries, self.delay, self.max_bytes)


@dataclass(frozen=True)
class KeptImage:
    """A downloaded image that passed every check, written to ``path``."""

    path: Path
    label: str
    url: str
    query: str | None
    image: CheckedImage
    engine: str


@dataclass(frozen=True)
class Rejection:
    """A candidate that was not kept."""

    label: str
    url: str
    reason: str
    detail: str


@dataclass
class CrawlReport:
    """What a `crawl` run did.

    ``requested`` = ``kept`` + the sum of ``rejected``; ``downloaded`` counts the candidates
    whose download succeeded (all but ``rejected["download_failed"]``).

    Attributes:
        dataset: the dataset's name.
        images_dir: where the images are.
        engine: the engine used.
        requested: candidate URLs this run tried.
        downloaded: candidates that downloaded.
        kept: images added to the dataset.
        already_done: crawled images of these classes the dataset held before.
        skipped_known: candidate URLs skipped because the dataset already holds them.
        rejected: reason -> count (reasons from `validation.REASONS`).
        rejections: the rejected candidates (the first 1000).
        per_class: class -> crawled images in the dataset after the run.
        short: class -> images still missing to reach ``per_class`` (no more candidates).
        seconds: wall time of the run.
    """

    dataset: str
    images_dir: Path
    engine: str
    requested: int = 0
    downloaded: int = 0
    kept: int = 0
    already_done: int = 0
    skipped_known: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people."""
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(self.rejected.items()))
        short = (
            "; short of per_class: " + ", ".join(f"{k} ({v})" for k, v in self.short.items())
            if self.short
            else ""
        )
        return (
            f"{self.requested} requested, {self.downloaded} downloaded, {self.kept} kept, "
            f"{sum(self.rejected.values())} rejected{f' ({reasons})' if reasons else ''}, "
            f"{self.already_done} already in the dataset -> dataset {self.dataset!r} "
            f"({self.seconds:.1f} s){short}"
        )


@dataclass
class Collector:
    """A crawl in progress: what is already held, and the tools to add to it.

    Attributes:
        add: receives each chunk of kept images (the stage adds them to its dataset).
        known_urls: URLs already held, rejected by an earlier run (for a reason other than a
            failed download), or tried by this run: never fetched again.
        duplicates: the kept images' hashes.
        counts: class -> crawled images held.
        rejected_urls: URL -> reason, for this run's rejections other than failed downloads.
    """

    add: Callable[[list[KeptImage]], None]
    config: CrawlConfig
    folder: Path
    fetcher: Fetcher
    report: CrawlReport
    known_urls: set[str]
    duplicates: DuplicateIndex
    counts: Counter[str]
    rejected_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        add: Callable[[list[KeptImage]], None],
        config: CrawlConfig,
        folder: Path,
        *,
        dataset_name: str,
        held: Iterable[tuple[str | None, str | None, str | None, str | None]],
        rejected_before: Iterable[str],
    ) -> Collector:
        """A collector that knows what is held: ``(label, url, sha256, phash hex)`` per image."""
        duplicates = DuplicateIndex(config.near_duplicate_distance)
        labels: list[str] = []
        known = set(rejected_before)
        for label, url, sha, phash in held:
            if sha and phash:
                duplicates.add(sha, int(phash, 16))
            if url:
                known.add(url)
            if label:
                labels.append(label)
        report = CrawlReport(dataset_name, folder, config.engine)
        fetcher = Fetcher(config.policy)
        return cls(add, config, folder, fetcher, report, known, duplicates, Counter(labels))

    def crawl_class(self, name: str, candidates: Candidates, need: int, bar: Progress) -> int:
        """Downloads candidates for one class until ``need`` are kept; returns how many were."""
        kept = 0
        workers = self.config.workers
        with ThreadPoolExecutor(workers) as pool:
            for query, urls in candidates:
                fresh = [url for url in urls if url not in self.known_urls]
                self.report.skipped_known += len(urls) - len(fresh)
                while fresh and kept < need:
                    # never more in flight than still needed, so nothing is fetched in vain
                    size = min(workers, need - kept)
                    chunk, fresh = fresh[:size], fresh[size:]
                    results = list(pool.map(self._download, chunk))
                    self.known_urls.update(chunk)
                    samples = [
                        sample
                        for url, result in zip(chunk, results, strict=True)
                        if (sample := self._keep(name, url, query, result)) is not None
                    ]
                    if samples:
                        self.add(samples)
                    kept += len(samples)
                    self.report.kept += len(samples)
                    self.counts[name] += len(samples)
                    bar.update(len(samples))
                if kept >= need:
                    break
        return kept

    def _download(self, url: str) -> CheckedImage | Rejected:
        """Fetches and checks one candidate (in a worker thread)."""
        try:
            return check_image(self.fetcher.fetch(url), self.config.limits)
        except Rejected as e:
            return e
        except Exception as e:  # one odd server or file must not end the crawl
            logger.warning("unexpected error on %s: %s: %s", url, type(e).__name__, e)
            return Rejected(DOWNLOAD_FAILED, f"{type(e).__name__}: {e}")

    def _keep(
        self, name: str, url: str, query: str | None, result: CheckedImage | Rejected
    ) -> KeptImage | None:
        """Checks a downloaded image against those kept; writes it and returns it if new."""
        self.report.requested += 1
        if isinstance(result, Rejected):
            if result.reason != DOWNLOAD_FAILED:
                self.report.downloaded += 1
            self._reject(name, url, result)
            return None
        self.report.downloaded += 1
        try:
            self.duplicates.check(result)
        except Rejected as e:
            self._reject(name, url, e)
            return None
        self.duplicates.add(result.sha256, result.phash)
        path = self.folder / slug(name) / f"{result.sha256[:24]}.{result.extension}"
        write_bytes_atomic(path, result.data)
        return KeptImage(path, name, url, query, result, self.config.engine)

    def _reject(self, name: str, url: str, error: Rejected) -> None:
        self.report.rejected[error.reason] += 1
        if len(self.report.rejections) < _MAX_REJECTIONS_KEPT:
            self.report.rejections.append(Rejection(name, url, error.reason, error.detail))
        if error.reason != DOWNLOAD_FAILED:
            self.rejected_urls[url] = error.reason
        logger.info("rejected %s (%s): %s", url, name, error)
