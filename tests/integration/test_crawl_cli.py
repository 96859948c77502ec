"""``usam crawl`` through click, against the local HTTP server."""

import pytest
from click.testing import CliRunner

from fiftyone_usam.cli.crawl import crawl_command
from tests.fixtures.http_images import CORPUS_LIMITS


@pytest.fixture
def usam():
    """The ``usam`` group with ``crawl`` in it (added here if not registered yet)."""
    from fiftyone_usam.cli import main

    added = "crawl" not in main.commands
    if added:
        main.add_command(crawl_command)
    runner = CliRunner()
    yield lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    if added:
        main.commands.pop("crawl")


def test_help_lists_the_options(usam):
    result = usam("crawl", "--help")
    assert result.exit_code == 0
    for option in (
        "--classes", "--per-class", "--engine", "--urls-file", "--dataset", "--images-dir",
        "--min-size", "--max-bytes", "--near-duplicate-distance", "--timeout", "--retries",
        "--delay", "--workers", "--flickr-api-key",
    ):  # fmt: skip
        assert option in result.output
    assert "bing|google|baidu|flickr|urls" in result.output


def test_crawl_urls_reports_what_it_rejected(usam, crawl_corpus, training_datasets, tmp_path):
    import fiftyone as fo

    name = training_datasets()
    urls = crawl_corpus.write_urls_file(tmp_path / "urls.tsv")
    result = usam(
        "crawl", "--classes", "dog,cat", "--per-class", 10, "--engine", "urls",
        "--urls-file", urls, "--dataset", name, "--images-dir", tmp_path / "images",
        "--min-size", CORPUS_LIMITS["min_size"], "--max-bytes", CORPUS_LIMITS["max_bytes"],
        "--delay", 0, "--retries", 0,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "11 requested, 10 downloaded, 4 kept, 7 rejected" in result.output
    for reason in ("corrupt", "download_failed", "duplicate", "near_duplicate", "not_an_image"):
        assert reason in result.output
    assert "too small" in result.output and "too large" in result.output
    assert len(fo.load_dataset(name)) == 4


def test_errors_are_one_clean_line(usam, training_datasets, tmp_path, monkeypatch):
    monkeypatch.delenv("FLICKR_APIKEY", raising=False)
    name = training_datasets()
    no_file = usam("crawl", "--classes", "dog", "--engine", "urls", "--dataset", name)
    assert no_file.exit_code == 1 and "needs --urls-file" in no_file.output
    bad = tmp_path / "bad.tsv"
    bad.write_text("dog http://example.com/a.jpg\n")
    malformed = usam(
        "crawl", "--classes", "dog", "--engine", "urls", "--urls-file", bad, "--dataset", name
    )
    assert malformed.exit_code == 1 and "bad.tsv:1: expected `class<TAB>url`" in malformed.output
    flickr = usam("crawl", "--classes", "dog", "--engine", "flickr", "--dataset", name)
    assert flickr.exit_code == 1 and "needs a Flickr API key" in flickr.output
