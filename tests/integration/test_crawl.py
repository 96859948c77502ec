"""`crawl` against a local HTTP server: the `urls` engine and icrawler's Bing crawler.

The corpus (tests/fixtures/http_images.py) holds 4 good images and one of each bad download;
exactly the good ones must end up in the dataset, each bad one rejected for its reason.
"""

from collections import Counter
from pathlib import Path

import pytest

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.training_dataset import OntologyMismatchError
from fiftyone_usam.stages.crawl import crawl
from tests.fixtures.http_images import CORPUS_LIMITS, bing_results_page

FAST = {**CORPUS_LIMITS, "delay": 0.0, "timeout": 5.0, "retries": 1, "progress": False}


def crawl_urls(corpus, tmp_path, name, classes="dog,cat", per_class=10, **options):
    return crawl(
        classes,
        dataset=name,
        per_class=per_class,
        engine="urls",
        urls_file=corpus.write_urls_file(tmp_path / "urls.tsv"),
        images_dir=tmp_path / "images",
        **{**FAST, **options},
    )


def test_urls_engine_keeps_exactly_the_good_images(crawl_corpus, training_datasets, tmp_path):
    import fiftyone as fo

    name = training_datasets()
    report = crawl_urls(crawl_corpus, tmp_path, name)

    dataset = fo.load_dataset(name)
    kept = dict(
        zip(dataset.values("source_url"), dataset.values("ground_truth.label"), strict=True)
    )
    assert kept == {url: c for c, urls in crawl_corpus.good.items() for url in urls}
    assert report.kept == 4 and report.requested == 11 and report.downloaded == 10
    assert report.rejected == Counter(crawl_corpus.reasons.values())
    assert {r.url: r.reason for r in report.rejections} == crawl_corpus.reasons
    assert report.per_class == {"dog": 2, "cat": 2}
    assert report.short == {"dog": 8, "cat": 8}
    assert "11 requested, 10 downloaded, 4 kept, 7 rejected" in report.summary()


def test_kept_files_are_ours_and_hold_the_downloaded_bytes(
    crawl_corpus, training_datasets, tmp_path
):
    import fiftyone as fo

    name = training_datasets()
    crawl_urls(crawl_corpus, tmp_path, name)
    dataset = fo.load_dataset(name)
    for sample in dataset:
        path = Path(sample.filepath)
        assert path.parent == tmp_path / "images" / sample.ground_truth.label
        assert path.name == f"{sample.sha256[:24]}.jpg"  # never the URL's name
        assert path.read_bytes() == crawl_corpus.bodies[sample.source_url]
        assert sample.source == "crawled" and sample.engine == "urls" and sample.query is None
        assert len(sample.phash) == 16
        assert (sample.metadata.width, sample.metadata.height) == (96, 72)
        assert sample.metadata.mime_type == "image/jpeg"
    assert not list((tmp_path / "images").glob("*/.*"))  # no temporary files left
    assert dataset.persistent
    assert dataset.classes["ground_truth"] == ["dog", "cat"]
    assert dataset.info["usam_ontology"]["classes"][0]["name"] == "dog"
    (run,) = dataset.info["usam_source_runs"]
    assert run["kind"] == "crawl" and run["settings"]["engine"] == "urls"


def test_a_second_run_fetches_nothing_again(
    crawl_corpus, image_server, training_datasets, tmp_path
):
    name = training_datasets()
    crawl_urls(crawl_corpus, tmp_path, name)
    hits = sum(image_server.hits.values())
    again = crawl_urls(crawl_corpus, tmp_path, name)
    assert again.kept == 0 and again.already_done == 4
    # kept and rejected URLs are skipped; a failed download is tried again (a 404 once: only
    # network failures and 408/429/5xx answers are retried within a run)
    assert again.requested == 1 and again.rejected == {"download_failed": 1}
    assert again.skipped_known == 10
    assert sum(image_server.hits.values()) - hits == 1
    assert image_server.hits["/img/cat/missing.jpg"] == 2


def test_per_class_stops_downloading_when_reached(
    crawl_corpus, image_server, training_datasets, tmp_path
):
    name = training_datasets()
    report = crawl_urls(crawl_corpus, tmp_path, name, per_class=1, workers=4)
    assert report.per_class == {"dog": 1, "cat": 1} and report.short == {}
    assert report.requested == 2  # never more in flight than still needed
    assert image_server.hits["/img/dog/good_1.jpg"] == 0


def test_duplicates_are_found_across_runs_and_classes(image_server, training_datasets, tmp_path):
    from fiftyone_usam.testing.scenes import scene
    from tests.fixtures.http_images import encode

    image = encode(scene(72, 96, 7))
    first = image_server.add("/a.jpg", image)
    second = image_server.add("/b.jpg", image)
    name = training_datasets()
    (tmp_path / "one.tsv").write_text(f"dog\t{first}\n")
    (tmp_path / "two.tsv").write_text(f"cat\t{second}\n")
    common = {"dataset": name, "engine": "urls", "images_dir": tmp_path / "i", **FAST}
    assert crawl("dog,cat", urls_file=tmp_path / "one.tsv", **common).kept == 1
    report = crawl("dog,cat", urls_file=tmp_path / "two.tsv", **common)
    assert report.kept == 0 and report.rejected == {"duplicate": 1}


def test_retries_a_busy_server(image_server, training_datasets, tmp_path):
    from fiftyone_usam.testing.scenes import scene
    from tests.fixtures.http_images import encode

    url = image_server.add("/busy.jpg", encode(scene(72, 96, 8)), fail_first=1)
    (tmp_path / "u.tsv").write_text(f"dog\t{url}\n")
    report = crawl(
        "dog", dataset=training_datasets(), engine="urls", urls_file=tmp_path / "u.tsv",
        images_dir=tmp_path / "i", **FAST,
    )  # fmt: skip
    assert report.kept == 1 and image_server.hits["/busy.jpg"] == 2


def test_urls_engine_needs_a_file_and_known_classes(crawl_corpus, training_datasets, tmp_path):
    name = training_datasets()
    with pytest.raises(ConfigError, match="needs --urls-file"):
        crawl("dog,cat", dataset=name, engine="urls", **FAST)
    with pytest.raises(ConfigError, match=r"not in the ontology: 'cat' \(line 9\)"):
        crawl_urls(crawl_corpus, tmp_path, name, classes="dog")
    with pytest.raises(ConfigError, match="--urls-file is for --engine urls"):
        crawl("dog", dataset=name, engine="bing", urls_file=tmp_path / "x", **FAST)


def test_a_dataset_keeps_its_classes(crawl_corpus, training_datasets, tmp_path):
    name = training_datasets()
    crawl_urls(crawl_corpus, tmp_path, name, per_class=1)
    with pytest.raises(OntologyMismatchError, match=r"built for the classes \[dog, cat\]"):
        crawl_urls(crawl_corpus, tmp_path, name, classes="cat,dog")
    # the stored classes are the default, and new classes may be appended
    report = crawl_urls(crawl_corpus, tmp_path, name, classes=None, per_class=2)
    assert report.per_class == {"dog": 2, "cat": 2}


# -- icrawler's Bing crawler, its feeder pointed at result pages on the local server ----------


@pytest.fixture
def local_bing(monkeypatch, image_server):
    """Bing's feeder asks the local server for ``/bing/<query>``; icrawler's BingParser parses."""
    from icrawler.builtin.bing import BingFeeder

    def feed(self, keyword, offset, max_num, filters=None):
        self.out_queue.put(image_server.url(f"/bing/{keyword}?first={offset}&count={max_num}"))

    monkeypatch.setattr(BingFeeder, "feed", feed)

    def results(query, urls):
        image_server.add(f"/bing/{query}", bing_results_page(urls), "text/html")

    return results


def test_bing_engine_through_icrawler(crawl_corpus, local_bing, training_datasets, tmp_path):
    import fiftyone as fo

    for name, urls in crawl_corpus.urls.items():
        local_bing(name, urls)
    name = training_datasets()
    report = crawl(
        "dog,cat", dataset=name, per_class=10, engine="bing", images_dir=tmp_path / "i", **FAST
    )
    dataset = fo.load_dataset(name)
    kept = dict(zip(dataset.values("source_url"), dataset.values("query"), strict=True))
    assert kept == {url: c for c, urls in crawl_corpus.good.items() for url in urls}
    assert set(dataset.values("engine")) == {"bing"}
    assert report.rejected == Counter(crawl_corpus.reasons.values())


def test_bing_engine_searches_synonyms_for_more(
    crawl_corpus, local_bing, training_datasets, tmp_path
):
    import fiftyone as fo
    import yaml

    dog = crawl_corpus.urls["dog"]
    local_bing("dog", dog[:1])
    local_bing("puppy", dog[:2])
    ontology = tmp_path / "ontology.yaml"
    ontology.write_text(yaml.safe_dump({"classes": [{"name": "dog", "synonyms": ["puppy"]}]}))
    name = training_datasets()
    report = crawl(
        str(ontology), dataset=name, per_class=2, engine="bing", images_dir=tmp_path / "i", **FAST
    )
    assert report.kept == 2 and report.skipped_known == 1
    dataset = fo.load_dataset(name)
    assert dict(zip(dataset.values("source_url"), dataset.values("query"), strict=True)) == {
        dog[0]: "dog",
        dog[1]: "puppy",
    }
