"""The train operator as the App runs it: immediately, and delegated with progress per epoch.

Needs the operator registered: ``p.register(TrainOperator)`` in operators/__init__.py and
``- train`` under ``operators:`` in fiftyone.yml.
"""

import pytest

from fiftyone_usam.head.checkpoint import load_head
from tests.integration.test_plugin import manifest


@pytest.fixture
def uri(plugins_dir):
    return f"{manifest()['name']}/train"


def test_train_operator_immediate(uri, embedded_training_dataset, tmp_path):
    import fiftyone.operators as foo

    dataset, store = embedded_training_dataset
    params = {"store": str(store), "out": str(tmp_path / "head"), "epochs": 2, "device": "cpu"}
    result = foo.execute_operator(uri, ctx={"dataset": dataset, "params": params})
    assert result.error is None, result.error
    assert set(result.result["checkpoints"]) == {"teacher", "student"}
    assert result.result["classes"] == ["disc", "square"]
    assert load_head(tmp_path / "head").stage == "student"


def test_train_operator_delegated_reports_progress_per_epoch(
    uri, embedded_training_dataset, tmp_path
):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset, _ = embedded_training_dataset
    params = {
        "label_field": "ground_truth",
        "stage": "teacher",
        "out": str(tmp_path / "head"),
        "epochs": 3,
        "device": "cpu",
    }
    queued = foo.execute_operator(
        uri, ctx={"dataset": dataset, "params": params}, request_delegation=True
    )
    assert queued.delegated
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=dataset.name)
    operation = next(
        op for op in service.list_operations(dataset_name=dataset.name) if op.operator == uri
    )
    assert operation.run_state == "completed", operation.result
    assert operation.status.progress == 1.0 and operation.status.label == "3/3 epochs"
    assert load_head(tmp_path / "head").stage == "teacher"


def test_train_operator_errors_carry_the_librarys_message(uri, embedded_training_dataset, tmp_path):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    dataset, _ = embedded_training_dataset
    params = {"stage": "student", "out": str(tmp_path / "head"), "device": "cpu"}
    with pytest.raises(ExecutionError, match=r"stage 'student' distils from the teacher in .*head"):
        foo.execute_operator(uri, ctx={"dataset": dataset, "params": params})
    assert not (tmp_path / "head").exists()
    params = {"label_field": "nope", "out": str(tmp_path / "head")}
    with pytest.raises(ExecutionError, match=r"label_field.*Invalid enum value"):
        foo.execute_operator(uri, ctx={"dataset": dataset, "params": params})
