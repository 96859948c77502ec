"""Fixtures for the browser tests: Chromium (or a skip), the FiftyOne App server, a page.

The tests need a Chromium executable (Debian's ``apt-get install chromium``, or the path in
``USAM_CHROMIUM``) and the ``playwright`` package, which drives it; ``playwright install`` is
never needed. Without them the tests are skipped, unless ``USAM_REQUIRE_BROWSER=1`` (set by
``.ci/run``) turns the skip into a failure. Screenshots go to ``USAM_TEST_ARTIFACTS`` (default:
``test-artifacts/`` in the repository), with the App server's log.

The App server runs as ``python -m fiftyone.server.main`` in a process group of its own, with this
session's environment, so it reads the private database that tests/conftest.py started; the
whole group is ended after the module's tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER_START_S = 120  # FiftyOne's import and first database connection, on a busy machine
PAGE_TIMEOUT_MS = 60_000  # any single wait in the App (grid tiles, modal)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    """The Chromium to drive: ``USAM_CHROMIUM``, else the system's, else None."""
    explicit = os.environ.get("USAM_CHROMIUM")
    if explicit:
        return explicit
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    chromium = find_chromium()
    if chromium is None:
        return (
            "no Chromium found: install Debian's (`apt-get install -y chromium`) or set "
            "USAM_CHROMIUM to a Chromium executable"
        )
    if not Path(chromium).is_file():
        return f"USAM_CHROMIUM={chromium} is not a file"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `pip install playwright` (no `playwright install`)"
    return None


def _required() -> bool:
    return os.environ.get("USAM_REQUIRE_BROWSER", "") not in ("", "0", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = browser_unavailable()
    if reason is None or _required():
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)  # read by `page` to screenshot failures


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; fails (rather than skips) when USAM_REQUIRE_BROWSER is set."""
    reason = browser_unavailable()
    if reason is not None:
        pytest.fail(f"{reason} (USAM_REQUIRE_BROWSER is set, so this is an error)")
    return str(find_chromium())


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and the server log go: ``USAM_TEST_ARTIFACTS`` or test-artifacts/."""
    folder = Path(os.environ.get("USAM_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_version(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/fiftyone", timeout=2) as answer:
            return json.load(answer)["version"]
    except (OSError, ValueError, KeyError):
        return None


def _end_group(proc: subprocess.Popen) -> None:
    """Ends the process group ``proc`` leads: TERM, then KILL after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def app_url(chromium, artifacts) -> Iterator[str]:
    """The base URL of a FiftyOne App server on 127.0.0.1, sharing this session's database."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = artifacts / "app-server.log"
    command = [sys.executable, "-m", "fiftyone.server.main", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "--address", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,  # its own process group, ended as a whole below
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while _server_version(url) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(
                    f"the FiftyOne App server did not answer on {url} within {SERVER_START_S} s "
                    f"(exit status {proc.poll()}); its log ({log_path}) ends:\n{tail}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _end_group(proc)


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium driven by Playwright, with a fresh temporary profile."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # the App is slow on a busy 2-core machine
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=PAGE_TIMEOUT_MS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser, app_url, artifacts, request):
    """A page that reaches only the App server; screenshots itself if the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # FiftyOne's own end-to-end tests set this: no analytics, no "Enterprise" popover over the grid
    context.add_init_script("window.IS_PLAYWRIGHT = true;")
    # nothing outside the server: fonts and analytics fail fast instead of waiting on DNS
    context.route(lambda url: not url.startswith(app_url), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            page.screenshot(path=artifacts / f"failed-{request.node.name}.png")
    finally:
        context.close()
