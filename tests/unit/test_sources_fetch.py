"""Downloads against a local HTTP server: retries, limits, timeouts and pace."""

import time

import pytest

from fiftyone_usam.sources.fetch import Fetcher, FetchPolicy, HostPacer
from fiftyone_usam.sources.validation import Rejected

QUICK = FetchPolicy(timeout=2.0, retries=2, delay=0.0, max_bytes=1000)


def failure(fetcher, url):
    with pytest.raises(Rejected) as caught:
        fetcher.fetch(url)
    return caught.value


def test_fetch_returns_the_body(image_server):
    url = image_server.add("/a.jpg", b"x" * 500)
    assert Fetcher(QUICK).fetch(url) == b"x" * 500


def test_busy_servers_are_retried_missing_files_are_not(image_server):
    busy = image_server.add("/busy.jpg", b"ok", fail_first=2)
    fetcher = Fetcher(QUICK)
    assert fetcher.fetch(busy) == b"ok" and image_server.hits["/busy.jpg"] == 3
    gone = failure(fetcher, image_server.url("/gone.jpg"))
    assert gone.reason == "download_failed" and "HTTP 404" in gone.detail
    assert image_server.hits["/gone.jpg"] == 1
    down = image_server.add("/down.jpg", b"", fail_first=10)
    error = failure(fetcher, down)
    assert "HTTP 503 (after 3 attempt(s))" in str(error) and image_server.hits["/down.jpg"] == 3


def test_oversized_files_are_abandoned_announced_or_not(image_server):
    fetcher = Fetcher(QUICK)
    announced = image_server.add("/big.jpg", b"x" * 5000)
    assert failure(fetcher, announced).reason == "too_large"
    streamed = image_server.add("/stream.jpg", b"x" * 200_000, send_length=False)
    error = failure(fetcher, streamed)
    assert error.reason == "too_large" and "more than 1000 bytes" in error.detail


def test_slow_servers_time_out(image_server):
    slow = image_server.add("/slow.jpg", b"ok", delay=1.0)
    fetcher = Fetcher(FetchPolicy(timeout=0.2, retries=0, delay=0.0))
    error = failure(fetcher, slow)
    assert error.reason == "download_failed" and "Timeout" in error.detail


def test_only_http_urls_are_fetched():
    error = failure(Fetcher(QUICK), "file:///etc/passwd")
    assert error.reason == "download_failed" and "not an http(s) URL" in error.detail


def test_requests_to_one_host_are_spaced_out():
    pacer = HostPacer(delay=0.15)
    start = time.monotonic()
    for _ in range(3):
        pacer.wait("http://a.example/x.jpg")
    pacer.wait("http://b.example/y.jpg")  # another host does not wait
    assert 0.3 <= time.monotonic() - start < 0.45
