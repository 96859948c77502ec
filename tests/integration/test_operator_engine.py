"""The engine fields of the embed, predict, generate and run operators (operators/engine.py).

Each form offers the engine; choosing ray brings the worker count, GPUs per worker and the
cluster's address, checked by the library's rule before anything runs. ``execute`` hands the
values to the stage as its ``engine``, ``workers``, ``gpus_per_worker`` and ``ray_address``.
No test here starts Ray (tests/integration/test_ray.py does): the ray paths are checked up to
the stage call, with the stage replaced by a recorder.
"""

import importlib.util
import sys

import pytest

from tests.integration.test_operator_forms import dataset  # noqa: F401 (a fixture)
from tests.integration.test_operators import embed_params, uri  # noqa: F401 (fixture)

RAY_INSTALLED = importlib.util.find_spec("ray") is not None
STAGES = {  # operator -> (module, function) its execute imports
    "embed": ("fiftyone_usam", "embed"),
    "predict": ("fiftyone_usam.stages.predict", "predict"),
    "generate": ("fiftyone_usam.stages.generate", "generate"),
    "run": ("fiftyone_usam.stages.pipeline", "run"),
}


@pytest.fixture
def required(tiny_head):
    """Each operator's required values, so that its form is valid without the engine's."""
    return {
        "embed": {},
        "predict": {"head": str(tiny_head), "field": "usam"},
        "generate": {"classes": "dog", "dataset": "d"},
        "run": {"classes": "dog", "field": "usam"},
    }


def test_every_stage_form_offers_the_engine_and_ray_its_workers(
    form,
    dataset,  # noqa: F811
    required,
):
    for name, values in required.items():
        local = form(name, dataset, **values)
        engine = local.properties["engine"]
        assert engine.type.values == ["local", "ray"] and engine.default == "local", name
        assert not {"workers", "gpus_per_worker", "ray_address"} & set(local.properties), name
        assert local.errors == {}, name
        if not RAY_INSTALLED:
            continue
        ray = form(name, dataset, **values, engine="ray")
        assert ray.errors == {}, name
        assert ray.properties["workers"].default == 1, name
        assert "(advanced)" in ray.properties["gpus_per_worker"].view.label, name
        assert "(advanced)" in ray.properties["ray_address"].view.label, name
        assert "storage every node sees" in ray.shown["ray_storage"], name


@pytest.mark.skipif(not RAY_INSTALLED, reason="the ray form needs Ray installed")
@pytest.mark.parametrize("name", ["embed", "generate"])
def test_the_form_refuses_fewer_than_one_worker_and_negative_gpus(
    form,
    dataset,  # noqa: F811
    name,
):
    values = {"classes": "dog", "dataset": "d"} if name == "generate" else {}
    errors = form(name, dataset, **values, engine="ray", workers=0).errors
    assert list(errors) == ["workers"]
    assert "workers must be at least 1, got 0" in errors["workers"]
    errors = form(name, dataset, **values, engine="ray", gpus_per_worker=-1.0).errors
    assert "gpus_per_worker must be >= 0" in errors["gpus_per_worker"]
    assert form(name, dataset, **values, engine="ray", workers=3, gpus_per_worker=0.5).errors == {}


def test_ray_not_installed_is_refused_with_the_install_command(
    form,
    dataset,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` and find_spec see
    errors = form("embed", dataset, engine="ray").errors
    assert 'pip install "fiftyone-usam[ray]"' in errors["engine"]
    assert "choose local" in errors["engine"]
    assert form("embed", dataset, engine="local").errors == {}


@pytest.mark.skipif(not RAY_INSTALLED, reason="the ray form needs Ray installed")
def test_the_form_says_which_ray_the_run_joins(
    form,
    dataset,  # noqa: F811
    monkeypatch,
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    shown = form("embed", dataset, engine="ray").shown["ray_storage"]
    assert "a local Ray started for this run" in shown
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert "10.0.0.2:6379" in form("embed", dataset, engine="ray").shown["ray_storage"]
    given = form("embed", dataset, engine="ray", ray_address="10.0.0.1:6379")
    assert "the Ray cluster at 10.0.0.1:6379" in given.shown["ray_storage"]


def test_run_takes_its_crawl_engine_as_crawl_engine(
    form,
    dataset,  # noqa: F811
):
    errors = form("run", dataset, classes="dog", source="crawl", engine="urls").errors
    assert "crawl_engine='urls'" in errors["engine"]
    crawl = form("run", dataset, classes="dog", source="crawl", crawl_engine="urls")
    assert crawl.errors == {"urls_file": "Required property"}
    assert crawl.properties["engine"].default == "local"


@pytest.mark.parametrize(
    "given, passed",
    [
        ({}, {"engine": "local", "workers": 1, "gpus_per_worker": None, "ray_address": None}),
        (
            {"engine": "ray", "workers": 2, "gpus_per_worker": 0, "ray_address": ""},
            {"engine": "ray", "workers": 2, "gpus_per_worker": 0.0, "ray_address": None},
        ),
        (
            {"engine": "ray", "workers": 3, "gpus_per_worker": 0.5, "ray_address": "h:6379"},
            {"engine": "ray", "workers": 3, "gpus_per_worker": 0.5, "ray_address": "h:6379"},
        ),
    ],
)
def test_execute_hands_the_engine_to_every_stage(
    uri,  # noqa: F811
    dataset,  # noqa: F811
    required,
    monkeypatch,
    given,
    passed,
):
    """Up to the stage call: the stage is a recorder that stops the run (no Ray starts)."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    if given.get("engine") == "ray" and not RAY_INSTALLED:
        pytest.skip("the ray form needs Ray installed")
    calls = []

    def recorder(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("recorded")

    for name, (module, function) in STAGES.items():
        monkeypatch.setattr(importlib.import_module(module), function, recorder)
        params = {**required[name], **given}
        with pytest.raises(ExecutionError, match="recorded"):
            foo.execute_operator(uri(name), ctx={"dataset": dataset, "params": params})
        assert {key: calls[-1].get(key) for key in passed} == passed, name
    assert len(calls) == len(STAGES)


def test_embed_and_predict_run_locally_as_asked(
    uri,  # noqa: F811
    make_dataset,
    image_files,
    tiny_checkpoint,
    tiny_head,
    tmp_path,
):
    import fiftyone.operators as foo

    target = make_dataset(image_files[:2])
    local = {"engine": "local", "workers": 1}
    params = embed_params(tiny_checkpoint, tmp_path / "s", sam="custom", **local)
    result = foo.execute_operator(uri("embed"), ctx={"dataset": target, "params": params})
    assert result.error is None, result.error
    assert result.result["embedded"] == 2
    assert result.result["execution"] == {"engine": "local", "workers": 1}
    params = {
        "head": str(tiny_head),
        "field": "usam",
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
        **local,
    }
    result = foo.execute_operator(uri("predict"), ctx={"dataset": target, "params": params})
    assert result.error is None, result.error
    assert result.result["labelled"] == 2 and result.result["failed"] == {}


@pytest.mark.usefixtures("torch_single_thread")
def test_generate_runs_locally_as_asked(
    uri,  # noqa: F811
    make_dataset,
    image_files,
    tiny_pipeline_dir,
    training_datasets,
    tmp_path,
):
    import fiftyone.operators as foo

    from tests.integration.test_generate_operator import params

    current = make_dataset(image_files[:1])
    values = params(tiny_pipeline_dir, training_datasets(), tmp_path / "i", per_class=1)
    ctx = {"dataset": current, "params": {**values, "engine": "local", "workers": 1}}
    result = foo.execute_operator(uri("generate"), ctx=ctx)
    assert result.error is None, result.error
    assert result.result["generated"] == 2
    assert result.result["execution"] == {"engine": "local", "workers": 1}
