"""`Fetcher`: downloads one URL politely: timeouts, retries with back-off, a per-host pace, and a
byte limit enforced while streaming (an oversized file is never read to the end).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fiftyone_usam.sources.validation import DOWNLOAD_FAILED, TOO_LARGE, Rejected
from fiftyone_usam.version import __version__

logger = logging.getLogger(__name__)

USER_AGENT = f"Mozilla/5.0 (compatible; fiftyone-usam/{__version__}; training-image crawler)"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchPolicy:
    """How downloads behave.

    Attributes:
        timeout: seconds to connect, and between two bytes received; a whole download may take
            at most four times this.
        retries: further attempts after a connection error, a timeout or a 408/429/5xx answer.
        delay: at least this many seconds between two requests to the same host.
        max_bytes: larger files are abandoned (``too_large``) as soon as that is known.
    """

    timeout: float = 10.0
    retries: int = 2
    delay: float = 1.0
    max_bytes: int = 20_000_000


class HostPacer:
    """Spaces out requests to each host by at least ``delay`` seconds (thread-safe)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        """Blocks until a request to ``url``'s host is allowed, and books that slot."""
        if self.delay <= 0:
            return
        host = urlsplit(url).netloc.lower()
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.delay
        if slot > now:
            time.sleep(slot - now)


class Fetcher:
    """Downloads files with a shared connection pool, pace and policy.

    Args:
        policy: timeouts, retries, pace and byte limit.
        session: a ``requests.Session`` to use (default: a new one with our User-Agent).
    """

    def __init__(self, policy: FetchPolicy, session: Any = None) -> None:
        import requests

        self.policy = policy
        self.pacer = HostPacer(policy.delay)
        self.session = session or requests.Session()
        if session is None:
            self.session.headers["User-Agent"] = USER_AGENT

    def fetch(self, url: str) -> bytes:
        """The body of ``url``.

        Raises:
            Rejected: ``download_failed`` (bad URL, error status, network failure after the
                retries) or ``too_large`` (over ``max_bytes``).
        """
        import requests

        network_errors = (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        )
        if urlsplit(url).scheme not in ("http", "https"):
            raise Rejected(DOWNLOAD_FAILED, f"not an http(s) URL: {url}")
        attempts = 1 + max(0, self.policy.retries)
        for attempt in range(attempts):
            self.pacer.wait(url)
            try:
                return self._get(url)
            except _Retryable as e:
                error = str(e)
            except requests.RequestException as e:
                if not isinstance(e, network_errors):
                    raise Rejected(DOWNLOAD_FAILED, f"{type(e).__name__}: {e}") from None
                error = f"{type(e).__name__}: {e}"
            if attempt + 1 < attempts:
                wait = min(30.0, max(self.policy.delay, 0.25) * 2**attempt)
                logger.debug("retrying %s in %.2f s (%s)", url, wait, error)
                time.sleep(wait)
        raise Rejected(DOWNLOAD_FAILED, f"{error} (after {attempts} attempt(s))")

    def close(self) -> None:
        """Closes the connection pool."""
        self.session.close()

    def _get(self, url: str) -> bytes:
        limit = self.policy.max_bytes
        deadline = time.monotonic() + 4 * self.policy.timeout
        with self.session.get(url, timeout=self.policy.timeout, stream=True) as response:
            if response.status_code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise Rejected(DOWNLOAD_FAILED, f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise Rejected(TOO_LARGE, f"{declared} bytes announced > {limit}")
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise Rejected(TOO_LARGE, f"more than {limit} bytes")
                if time.monotonic() > deadline:
                    raise _Retryable(f"download took over {4 * self.policy.timeout:g} s")
            return bytes(body)


class _Retryable(Exception):
    """A failure worth another attempt (a busy or failing server, a slow transfer)."""
