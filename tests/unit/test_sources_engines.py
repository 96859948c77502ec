"""Candidate URLs: the URLs file, engine options, and icrawler parsers on local pages."""

import pytest

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.sources.engines import engine_options, read_urls_file, search
from tests.fixtures.http_images import bing_results_page


def test_urls_file_lines_comments_and_duplicates(tmp_path):
    path = tmp_path / "urls.tsv"
    path.write_text(
        "# class<TAB>url\n\ndog\thttp://a/1.jpg\n  # indented comment\n"
        "potted plant\thttp://a/2.jpg \ndog\thttp://a/1.jpg\ndog\thttp://a/3.jpg\n"
    )
    urls = read_urls_file(path, ("dog", "potted plant", "cat"))
    assert urls == {
        "dog": ["http://a/1.jpg", "http://a/3.jpg"],
        "potted plant": ["http://a/2.jpg"],
        "cat": [],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dog http://a/1.jpg\n", r"urls.tsv:1: expected `class<TAB>url`"),
        ("dog\t\n", r"urls.tsv:1: expected"),
        ("\n# c\nhorse\thttp://a/1.jpg\n", r"not in the ontology: 'horse' \(line 3\)"),
    ],
)
def test_urls_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "urls.tsv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_urls_file(path, ("dog",))


def test_urls_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the URLs file"):
        read_urls_file(tmp_path / "none.tsv", ("dog",))


def test_engine_options(monkeypatch):
    monkeypatch.delenv("FLICKR_APIKEY", raising=False)
    assert engine_options("bing") == {}
    with pytest.raises(ConfigError, match="unknown engine 'yahoo'"):
        engine_options("yahoo")
    with pytest.raises(ConfigError, match="needs a Flickr API key"):
        engine_options("flickr")
    assert engine_options("flickr", "k") == {"flickr_api_key": "k"}
    monkeypatch.setenv("FLICKR_APIKEY", "env-key")
    assert engine_options("flickr") == {"flickr_api_key": "env-key"}


def point(monkeypatch, feeder, server, path):
    monkeypatch.setattr(feeder, "feed", lambda self, **kwargs: self.out_queue.put(server.url(path)))


def test_bing_results_are_collected_in_order_once(monkeypatch, image_server):
    from icrawler.builtin.bing import BingFeeder

    urls = [f"http://images.example/{i}.jpg" for i in range(5)]
    image_server.add("/results", bing_results_page([*urls, urls[0]]), "text/html")
    point(monkeypatch, BingFeeder, image_server, "/results")
    assert search("bing", "dog", offset=0, count=10, options={}) == urls
    assert search("bing", "dog", offset=0, count=3, options={}) == urls[:3]
    assert search("bing", "dog", offset=1000, count=3, options={}) == []  # Bing's last result


def test_a_parser_that_raises_gives_no_results(monkeypatch, image_server, caplog):
    """icrawler 0.6.10's GoogleParser raises TypeError on a page without results."""
    from icrawler.builtin.google import GoogleFeeder

    image_server.add("/google", b"<html><body>No results</body></html>", "text/html")
    point(monkeypatch, GoogleFeeder, image_server, "/google")
    assert search("google", "dog", offset=0, count=5, options={}) == []
    assert "cannot parse" in caplog.text and "TypeError" in caplog.text
    assert "google returned no image URLs for 'dog'" in caplog.text
