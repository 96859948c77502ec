"""Operators run as the App runs them: immediately, and delegated through FiftyOne's queue."""

import pytest

from fiftyone_usam.embeddings.store import EmbeddingStore
from tests.integration.test_plugin import manifest


@pytest.fixture
def uri(plugins_dir):
    return lambda name: f"{manifest()['name']}/{name}"


def embed_params(tiny_checkpoint, store, **extra):
    return {
        "checkpoint": str(tiny_checkpoint),
        "store": str(store),
        "points_per_side": 2,
        "device": "cpu",
        "batch_size": 2,
        **extra,
    }


def test_embed_operator_immediate(uri, make_dataset, image_files, tiny_checkpoint, tmp_path):
    """A custom checkpoint's config beside it names its variant ("custom" in the form)."""
    import fiftyone.operators as foo

    dataset = make_dataset(image_files[:3])
    params = embed_params(tiny_checkpoint, tmp_path / "s", sam="custom")
    result = foo.execute_operator(uri("embed"), ctx={"dataset": dataset, "params": params})
    assert result.error is None, result.error
    assert result.result["embedded"] == 3 and result.result["failed"] == {}
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == set(dataset.values("id"))
    again = foo.execute_operator(uri("embed"), ctx={"dataset": dataset, "params": params})
    assert again.result["embedded"] == 0 and again.result["already_done"] == 3


def test_embed_operator_delegated_reports_progress(
    uri, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = make_dataset(image_files[:4], tags=[["a"], [], ["a"], ["a"]])
    params = embed_params(tiny_checkpoint, tmp_path / "s", sam="custom", view_tag="a")
    queued = foo.execute_operator(
        uri("embed"), ctx={"dataset": dataset, "params": params}, request_delegation=True
    )
    assert queued.delegated
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=dataset.name)
    (operation,) = service.list_operations(dataset_name=dataset.name)
    assert operation.run_state == "completed", operation.result
    assert operation.result.result["embedded"] == 3
    assert operation.status.progress == 1.0 and operation.status.label == "3/3 images"
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == set(
        dataset.match_tags("a").values("id")
    )


def test_embed_operator_errors_carry_the_librarys_message(uri, make_dataset, image_files, tmp_path):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    dataset = make_dataset(image_files[:1])
    params = {
        "sam": "vit_b",
        "checkpoint": str(tmp_path / "nope.pth"),
        "store": str(tmp_path / "s"),
        "device": "cpu",
    }
    with pytest.raises(ExecutionError, match=r"SAM checkpoint not found: .*nope.pth"):
        foo.execute_operator(uri("embed"), ctx={"dataset": dataset, "params": params})
    assert not (tmp_path / "s").exists()
