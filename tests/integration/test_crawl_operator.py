"""The crawl operator, immediate and delegated, against the local HTTP server."""

from collections import Counter

import pytest

from tests.fixtures.http_images import CORPUS_LIMITS
from tests.integration.test_plugin import manifest


@pytest.fixture
def uri(plugins_dir):
    import fiftyone.operators as foo

    name = f"{manifest()['name']}/crawl"
    if name not in {op.uri for op in foo.list_operators()}:
        pytest.fail(
            "the crawl operator is not registered: add CrawlOperator to operators/__init__.py "
            "and `crawl` to the operators in fiftyone.yml"
        )
    return name


def params(urls_file, dataset, images_dir):
    return {
        "classes": "dog,cat",
        "dataset": dataset,
        "per_class": 10,
        "engine": "urls",
        "urls_file": str(urls_file),
        "images_dir": str(images_dir),
        "delay": 0.0,
        **CORPUS_LIMITS,
    }


def test_crawl_operator_immediate(
    uri, make_dataset, image_files, crawl_corpus, training_datasets, tmp_path
):
    import fiftyone as fo
    import fiftyone.operators as foo

    current = make_dataset(image_files[:1])
    name = training_datasets()
    urls = crawl_corpus.write_urls_file(tmp_path / "urls.tsv")
    ctx = {"dataset": current, "params": params(urls, name, tmp_path / "i")}
    result = foo.execute_operator(uri, ctx=ctx)
    assert result.error is None, result.error
    assert result.result["kept"] == 4 and result.result["requested"] == 11
    assert Counter(result.result["rejected"]) == Counter(crawl_corpus.reasons.values())
    assert len(fo.load_dataset(name)) == 4


def test_crawl_operator_delegated_reports_progress(
    uri, make_dataset, image_files, crawl_corpus, training_datasets, tmp_path
):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    current = make_dataset(image_files[:1])
    name = training_datasets()
    urls = crawl_corpus.write_urls_file(tmp_path / "urls.tsv")
    ctx = {"dataset": current, "params": params(urls, name, tmp_path / "i")}
    queued = foo.execute_operator(uri, ctx=ctx, request_delegation=True)
    assert queued.delegated
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=current.name)
    (operation,) = service.list_operations(dataset_name=current.name)
    assert operation.run_state == "completed", operation.result
    assert operation.result.result["kept"] == 4
    # 2 x 10 wanted; the classes' shortfall counts as done once their candidates run out
    assert operation.status.progress == 1.0 and operation.status.label == "20/20 images"
    assert len(fo.load_dataset(name)) == 4


def test_crawl_form_asks_for_a_urls_file_only_for_the_urls_engine(uri):
    import fiftyone.operators as foo

    operator = foo.get_operator(uri)

    def fields(engine):
        ctx = foo.ExecutionContext(request_params={"params": {"engine": engine}})
        return set(operator.resolve_input(ctx).type.properties)

    assert "urls_file" in fields("urls") and "urls_file" not in fields("bing")
    assert "flickr_api_key" in fields("flickr")
