"""Where crawl candidates come from: icrawler's search engines, or a file of URLs per class.

For the search engines, icrawler does what it is good at, fetching and parsing result pages; a
downloader of ours (`_CandidateSink`) only collects the image URLs it is handed, and `crawl`
downloads and checks them itself. One engine's quirks stay here: result-page limits, Flickr's
API key, and parsers that raise on unexpected pages (caught and logged).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiftyone_usam.errors import ConfigError

logger = logging.getLogger(__name__)

SEARCH_ENGINES = ("bing", "google", "baidu", "flickr")
ENGINES = (*SEARCH_ENGINES, "urls")
FLICKR_KEY_ENV = "FLICKR_APIKEY"


@dataclass(frozen=True)
class _Engine:
    module: str  # in icrawler.builtin
    feeder: str
    parser: str
    max_results: int  # the engine serves no results past this offset
    feed: Callable[[str, int, int, dict[str, Any]], dict[str, Any]]
    parse: Callable[[dict[str, Any]], dict[str, Any]]


def _keyword_feed(query: str, offset: int, count: int, options: dict[str, Any]) -> dict[str, Any]:
    return {"keyword": query, "offset": offset, "max_num": count, "filters": None}


def _flickr_feed(query: str, offset: int, count: int, options: dict[str, Any]) -> dict[str, Any]:
    per_page = 100
    return {
        "apikey": options["flickr_api_key"],
        "max_num": count,
        "text": query,
        "sort": "relevance",
        "content_type": 1,  # photos only
        "per_page": per_page,
        "page": 1 + offset // per_page,
    }


def _flickr_parse(options: dict[str, Any]) -> dict[str, Any]:
    sizes = ["large", "medium 800", "medium 640", "medium", "large 1600", "original"]
    return {"apikey": options["flickr_api_key"], "size_preference": sizes}


def _google_feed(query: str, offset: int, count: int, options: dict[str, Any]) -> dict[str, Any]:
    return {**_keyword_feed(query, offset, count, options), "language": None}


def _no_options(options: dict[str, Any]) -> dict[str, Any]:
    return {}


_ENGINES = {
    "bing": _Engine("bing", "BingFeeder", "BingParser", 1000, _keyword_feed, _no_options),
    "google": _Engine("google", "GoogleFeeder", "GoogleParser", 1000, _google_feed, _no_options),
    "baidu": _Engine("baidu", "BaiduFeeder", "BaiduParser", 1000, _keyword_feed, _no_options),
    "flickr": _Engine("flickr", "FlickrFeeder", "FlickrParser", 4000, _flickr_feed, _flickr_parse),
}


def engine_options(engine: str, flickr_api_key: str | None = None) -> dict[str, Any]:
    """Checks an engine name and gathers what it needs (Flickr: an API key).

    Raises:
        ConfigError: unknown engine, or Flickr without a key.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    options: dict[str, Any] = {}
    if engine == "flickr":
        key = flickr_api_key or os.environ.get(FLICKR_KEY_ENV)
        if not key:
            raise ConfigError(
                "the flickr engine needs a Flickr API key (free at "
                "https://www.flickr.com/services/api/): pass --flickr-api-key KEY or set "
                f"{FLICKR_KEY_ENV}"
            )
        options["flickr_api_key"] = key
    return options


def search(
    engine: str,
    query: str,
    *,
    offset: int,
    count: int,
    options: dict[str, Any],
    timeout: float = 10.0,
    retries: int = 2,
) -> list[str]:
    """Up to ``count`` image URLs for ``query`` from a search engine, from result ``offset`` on.

    Args:
        engine: one of `SEARCH_ENGINES`.
        query: the search text.
        offset: results to skip (to page on).
        count: URLs wanted.
        options: from `engine_options`.
        timeout: seconds per result-page request.
        retries: further attempts per result page.

    Returns:
        Distinct URLs in the engine's order; fewer than ``count`` (maybe none) when the engine
        has no more, or cannot be reached (logged).
    """
    spec = _ENGINES[engine]
    if offset >= spec.max_results or count <= 0:
        return []
    count = min(count, spec.max_results - offset)
    found: list[str] = []
    crawler = _crawler(spec, found)
    crawler.crawl(
        feeder_kwargs=spec.feed(query, offset, count, options),
        parser_kwargs={
            "queue_timeout": 0.2,
            "req_timeout": timeout,
            "max_retry": 1 + retries,
            **spec.parse(options),
        },
        downloader_kwargs={"max_num": count},
    )
    if not found:
        logger.warning(
            "%s returned no image URLs for %r (offset %d): no more results, or the engine "
            "could not be reached or changed its pages",
            engine,
            query,
            offset,
        )
    return found[:count]


def read_urls_file(path: str | Path, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """Reads ``class<TAB>url`` lines (blank lines and ``#`` comments ignored).

    Returns:
        Class -> its URLs in file order (each URL once), for every class in ``classes``.

    Raises:
        ConfigError: the file is unreadable, a line is malformed, or names a class that is not
            in ``classes``.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the URLs file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the URLs file {path} is not UTF-8 text") from None
    urls: dict[str, list[str]] = {name: [] for name in classes}
    unknown: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        label, sep, url = line.partition("\t")
        label, url = label.strip(), url.strip()
        if not sep or not label or not url:
            raise ConfigError(
                f"{path}:{number}: expected `class<TAB>url`, got {line[:80]!r} "
                "(separate the class from the URL with one tab)"
            )
        if label not in urls:
            unknown.setdefault(label, number)
        elif url not in urls[label]:
            urls[label].append(url)
    if unknown:
        listed = ", ".join(f"{name!r} (line {n})" for name, n in unknown.items())
        raise ConfigError(
            f"{path} names classes that are not in the ontology: {listed}. The classes are: "
            f"{', '.join(classes)}"
        )
    return urls


def _crawler(spec: _Engine, found: list[str]) -> Any:
    """An icrawler crawler whose downloader only collects URLs into ``found``."""
    import importlib
    import queue

    from icrawler import Crawler, Downloader
    from icrawler.storage import BaseStorage

    module = importlib.import_module(f"icrawler.builtin.{spec.module}")
    parser_cls = getattr(module, spec.parser)

    class TolerantParser(parser_cls):  # type: ignore[misc, valid-type]
        """Some parsers raise on pages they do not expect (e.g. Google's with no results)."""

        def parse(self, response: Any, **kwargs: Any) -> Any:
            try:
                yield from super().parse(response, **kwargs)
            except Exception as e:
                logger.warning("cannot parse %s: %s: %s", response.url, type(e).__name__, e)

    class NoStorage(BaseStorage):
        def write(self, id: str, data: Any) -> None:
            raise AssertionError("candidate URLs are collected, never stored")

        def exists(self, id: str) -> bool:
            return False

        def max_file_idx(self) -> int:
            return 0

    class CandidateSink(Downloader):
        """Collects each parsed image URL once, until it has ``max_num`` or the parser is done.

        (icrawler's own downloader also gives up when its queue is empty for a moment, which
        loses the next result pages when an engine answers slowly.)
        """

        def worker_exec(self, max_num: int, queue_timeout: float = 0.2, **kwargs: Any) -> None:
            self.max_num = max_num
            while not self.signal.get("reach_max_num"):
                try:
                    task = self.in_queue.get(timeout=queue_timeout)
                except queue.Empty:
                    if self.signal.get("parser_exited"):
                        break
                    continue
                self.download(task, "")
                self.in_queue.task_done()

        def download(self, task: dict[str, Any], default_ext: str, *args: Any, **kw: Any) -> bool:
            url = task.get("file_url")
            if isinstance(url, str) and url and url not in seen:
                seen.add(url)
                found.append(url)
                self.fetched_num += 1
            if self.reach_max_num():
                self.signal.set(reach_max_num=True)
            return True

    class QuietCrawler(Crawler):
        def set_logger(self, log_level: int = logging.INFO) -> None:
            # icrawler's own calls logging.basicConfig, which would configure the user's logging
            self.logger = logging.getLogger("icrawler")

    seen: set[str] = set()
    return QuietCrawler(
        feeder_cls=getattr(module, spec.feeder),
        parser_cls=TolerantParser,
        downloader_cls=CandidateSink,
        storage=NoStorage(),
    )
