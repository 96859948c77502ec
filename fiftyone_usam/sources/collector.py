"""`Collector`: downloads a class's candidate URLs, checks them, and adds the good ones.

Downloads and decoding run in worker threads; duplicate checks, file writes and dataset writes
run in the calling thread, in candidate order, so a run's outcome does not depend on timing.
Each chunk of candidates is added to the dataset before the next is fetched: an interrupted
crawl keeps what it had kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fiftyone_usam.fiftyone_io.training_dataset import LABEL_FIELD
from fiftyone_usam.files import write_bytes_atomic
from fiftyone_usam.progress import Progress
from fiftyone_usam.sources.fetch import Fetcher
from fiftyone_usam.sources.naming import slug
from fiftyone_usam.sources.validation import (
    DOWNLOAD_FAILED,
    CheckedImage,
    DuplicateIndex,
    Rejected,
    check_image,
)

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.stages.crawl import CrawlConfig

logger = logging.getLogger(__name__)

SOURCE = "crawled"
_MAX_REJECTIONS_KEPT = 1000
REJECTED_KEY = "usam_rejected_urls"  # in dataset.info: [[URL, reason], ...]
_MAX_REJECTED_REMEMBERED = 20_000

# (query or None, candidate URLs) batches for one class
Candidates = Iterator[tuple[str | None, list[str]]]


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
    """A crawl in progress: the dataset, what it already holds, and the tools to add to it.

    Attributes:
        known_urls: URLs in the dataset, rejected by an earlier run (for a reason other than a
            failed download), or tried by this run: never fetched again.
        duplicates: the kept images' hashes.
        counts: class -> crawled images in the dataset.
        rejected_urls: URL -> reason, for this run's rejections other than failed downloads.
    """

    dataset: fo.Dataset
    config: CrawlConfig
    folder: Path
    fetcher: Fetcher
    report: CrawlReport
    known_urls: set[str]
    duplicates: DuplicateIndex
    counts: Counter[str]
    rejected_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, dataset: fo.Dataset, config: CrawlConfig, folder: Path) -> Collector:
        """Reads the crawled images the dataset holds (URLs, hashes, classes)."""
        from fiftyone import ViewField as F

        view = dataset.match(F("source") == SOURCE)
        labels, urls, shas, phashes = view.values(
            [f"{LABEL_FIELD}.label", "source_url", "sha256", "phash"]
        )
        duplicates = DuplicateIndex(config.near_duplicate_distance)
        for sha, phash in zip(shas, phashes, strict=True):
            if sha and phash:
                duplicates.add(sha, int(phash, 16))
        report = CrawlReport(dataset.name, folder, config.engine)
        rejected_before = {url for url, _ in dataset.info.get(REJECTED_KEY, [])}
        known = {u for u in urls if u} | rejected_before
        fetcher = Fetcher(config.policy)
        return cls(dataset, config, folder, fetcher, report, known, duplicates, Counter(labels))

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
                        self.dataset.add_samples(samples, progress=False)
                    kept += len(samples)
                    self.report.kept += len(samples)
                    self.counts[name] += len(samples)
                    bar.update(len(samples))
                if kept >= need:
                    break
        return kept

    def remember_rejections(self) -> None:
        """Stores this run's rejected URLs in ``dataset.info``, so later runs skip them.

        Failed downloads are not stored: a server that was down may answer next time.
        """
        if not self.rejected_urls:
            return
        # a list of pairs, not a dict: URLs are not safe MongoDB keys
        remembered = [*self.dataset.info.get(REJECTED_KEY, []), *self.rejected_urls.items()]
        self.dataset.info[REJECTED_KEY] = [list(p) for p in remembered][-_MAX_REJECTED_REMEMBERED:]
        self.dataset.save()

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
    ) -> fo.Sample | None:
        """Checks a downloaded image against those kept; writes it and returns its sample if new."""
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
        return _sample(path, name, url, query, result, self.config.engine)

    def _reject(self, name: str, url: str, error: Rejected) -> None:
        self.report.rejected[error.reason] += 1
        if len(self.report.rejections) < _MAX_REJECTIONS_KEPT:
            self.report.rejections.append(Rejection(name, url, error.reason, error.detail))
        if error.reason != DOWNLOAD_FAILED:
            self.rejected_urls[url] = error.reason
        logger.info("rejected %s (%s): %s", url, name, error)


def _sample(
    path: Path, name: str, url: str, query: str | None, image: CheckedImage, engine: str
) -> fo.Sample:
    import fiftyone as fo

    return fo.Sample(
        filepath=str(path),
        metadata=fo.ImageMetadata(
            width=image.width,
            height=image.height,
            num_channels=image.num_channels,
            mime_type=image.mime_type,
            size_bytes=len(image.data),
        ),
        **{LABEL_FIELD: fo.Classification(label=name)},
        source=SOURCE,
        source_url=url,
        query=query,
        engine=engine,
        sha256=image.sha256,
        phash=f"{image.phash:016x}",
    )
