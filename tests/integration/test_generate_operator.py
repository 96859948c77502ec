"""The generate operator, immediate and delegated, as the App runs it."""

import pytest

from tests.integration.test_plugin import manifest

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def uri(plugins_dir):
    import fiftyone.operators as foo

    name = f"{manifest()['name']}/generate"
    if name not in {op.uri for op in foo.list_operators()}:
        pytest.fail(
            "the generate operator is not registered: add GenerateOperator to operators/__init__.py"
            " and `generate` to the operators in fiftyone.yml"
        )
    return name


def params(model, dataset, images_dir, **extra):
    return {
        "classes": "dog,cat",
        "dataset": dataset,
        "per_class": 2,
        "model": str(model),
        "steps": 2,
        "height": 64,
        "width": 64,
        "batch_size": 2,
        "device": "cpu",
        "images_dir": str(images_dir),
        **extra,
    }


def test_generate_operator_immediate(
    uri, make_dataset, image_files, tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo
    import fiftyone.operators as foo

    current = make_dataset(image_files[:1])
    name = training_datasets()
    ctx = {"dataset": current, "params": params(tiny_pipeline_dir, name, tmp_path / "i")}
    result = foo.execute_operator(uri, ctx=ctx)
    assert result.error is None, result.error
    assert result.result["generated"] == 4 and result.result["dataset"] == name
    assert fo.load_dataset(name).count_values("ground_truth.label") == {"dog": 2, "cat": 2}
    again = foo.execute_operator(uri, ctx=ctx)
    assert again.result["generated"] == 0 and again.result["already_done"] == 4


def test_generate_operator_delegated_reports_progress(
    uri, make_dataset, image_files, tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    current = make_dataset(image_files[:1])
    name = training_datasets()
    ctx = {"dataset": current, "params": params(tiny_pipeline_dir, name, tmp_path / "i")}
    queued = foo.execute_operator(uri, ctx=ctx, request_delegation=True)
    assert queued.delegated
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=current.name)
    (operation,) = service.list_operations(dataset_name=current.name)
    assert operation.run_state == "completed", operation.result
    assert operation.result.result["generated"] == 4
    assert operation.status.progress == 1.0 and operation.status.label == "4/4 images"
    assert len(fo.load_dataset(name)) == 4


def test_generate_operator_errors_carry_the_librarys_message(
    uri, make_dataset, image_files, training_datasets, tmp_path
):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    current = make_dataset(image_files[:1])
    ctx = {
        "dataset": current,
        "params": params(tmp_path / "nowhere", training_datasets(), tmp_path),
    }
    with pytest.raises(ExecutionError, match="no pipeline directory"):
        foo.execute_operator(uri, ctx=ctx)
