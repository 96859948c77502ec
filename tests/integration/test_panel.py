"""The U-SAM panel: found by FiftyOne's plugin discovery, its summary checked against the dataset,
and its actions run as the App runs them (a panel event: ``__method__``, ``panel_id`` and
``panel_state`` in an `ExecutionContext`), judged by the operations they send the App."""

from __future__ import annotations

import uuid

import pytest

from fiftyone_usam.errors import ConfigError, DatasetNotFoundError
from fiftyone_usam.fiftyone_io.corrections import OK_TAG, WRONG_TAG
from fiftyone_usam.fiftyone_io.datasets import record_entry
from fiftyone_usam.fiftyone_io.evaluation_records import EVALUATIONS_KEY
from fiftyone_usam.fiftyone_io.review import (
    HISTOGRAM_BINS,
    class_view,
    review_summary,
    uncertain_first,
    usam_fields,
)
from tests.integration.test_plugin import manifest

KEEP_ALL = {"threshold": 0.0, "device": "cpu", "progress": False}  # a barely trained head


@pytest.fixture(scope="module")
def predicted(image_files, tiny_head, tiny_checkpoint):
    """The six test images labelled once under ``usam``; tests work on clones of it."""
    import fiftyone as fo

    from fiftyone_usam.stages.predict import predict

    dataset = fo.Dataset(f"usam-panel-{uuid.uuid4().hex[:8]}")
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in image_files])
    predict(dataset, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    assert dataset.count("usam_instances.detections") > 0
    yield dataset
    dataset.delete()


@pytest.fixture
def labelled(predicted):
    """A fresh copy of `predicted` (its run record included), free to tag and edit."""
    dataset = predicted.clone(f"usam-panel-{uuid.uuid4().hex[:8]}")
    yield dataset
    dataset.delete()


@pytest.fixture
def panel(plugins_dir):
    import fiftyone.operators as foo

    return foo.get_operator(f"{manifest()['name']}/usam_panel")


class Event:
    """One panel event as the App sends it; ``state`` is the panel state it carries and keeps."""

    def __init__(self, panel, dataset, state=None):
        self.panel, self.dataset, self.state = panel, dataset, state or {}

    def __call__(self, method, **params):
        from fiftyone.operators.executor import ExecutionContext, Executor

        request = {
            "dataset_name": self.dataset.name,
            "params": {"panel_id": "usam-test", "panel_state": self.state, **params},
        }
        request["params"]["__method__"] = method
        ctx = ExecutionContext(request_params=request, executor=Executor())
        self.panel.execute(ctx)
        self.state = ctx.panel_state
        return ctx.executor.to_json()["requests"]


def sent(requests, operator):
    """The params of the operations named ``operator`` that an event sent the App."""
    return [r["params"] for r in requests if r["operator_uri"] == operator]


def shown(requests):
    """The panel's rendered layout: property name -> its JSON."""
    (output,) = sent(requests, "show_panel_output")
    return output["output"]["type"]["properties"]


def view_of(dataset, requests):
    """The view a ``set_view`` operation loads in the App."""
    from fiftyone.operators.executor import ExecutionContext

    (params,) = sent(requests, "set_view")
    return ExecutionContext({"dataset_name": dataset.name, "view": params["view"]}).view


def instances_of(collection):
    return [d for dets in collection.values("usam_instances.detections") for d in dets or []]


# -- discovery -----------------------------------------------------------------------------


def test_the_panel_is_found_by_plugin_discovery(panel, plugins_dir):
    import fiftyone.operators as foo

    name = manifest()["name"]
    assert manifest()["panels"] == ["usam_panel"]
    panels = {p.uri for p in foo.list_operators(type="panel") if p.plugin_name == name}
    assert panels == {f"{name}/usam_panel"}
    assert isinstance(panel, foo.Panel)
    assert (panel.config.label, panel.config.surfaces) == ("U-SAM", "grid")
    config = panel.resolve_panel_config()
    assert config["on_load"] == f"{name}/usam_panel#on_load"
    assert config["on_change_dataset"] == f"{name}/usam_panel#on_change_dataset"


# -- the library functions -----------------------------------------------------------------


def test_the_summary_counts_what_is_on_the_dataset(labelled, tiny_head):
    summary = review_summary(labelled, "usam")
    detections = instances_of(labelled)
    assert usam_fields(labelled) == ["usam"]
    assert summary["run"]["head"] == str(tiny_head.resolve())
    assert summary["run"]["classes"] == ["disc", "square"]
    assert summary["run"]["threshold"] == 0.0
    assert summary["run"]["head_stage"] == "student" and summary["run"]["adapted"] is False
    assert (summary["samples"], summary["labelled"]) == (6, 6)
    assert summary["instances"] == len(detections)
    counted = labelled.count_values("usam_instances.detections.label")
    assert summary["counts"] == {c: counted.get(c, 0) for c in ("disc", "square")}
    histogram = summary["histogram"]
    assert len(histogram["edges"]) == HISTOGRAM_BINS + 1
    assert sum(histogram["counts"]["all"]) == len(detections)
    for name in ("disc", "square"):
        assert sum(histogram["counts"][name]) == summary["counts"][name]
    first_bin = sum(d.confidence < 0.1 for d in detections)
    assert histogram["counts"]["all"][0] == first_bin
    assert summary["evaluation"] is None
    assert summary["corrected"] == 0
    assert summary["corrections"] == {c: {"ok": 0, "wrong": 0, "relabel": 0} for c in counted}


def test_the_summary_shows_the_newest_finished_evaluation(labelled):
    done = {"state": "done", "pred_field": "usam_semantic", "gt_field": "ground_truth"}
    record_entry(
        labelled,
        EVALUATIONS_KEY,
        {**done, "eval_key": "a", "mean_iou": 0.5, "map50": 0.2},
        match="eval_key",
    )
    record_entry(
        labelled,
        EVALUATIONS_KEY,
        {**done, "eval_key": "b", "mean_iou": 0.6, "map50": 0.3},
        match="eval_key",
    )
    record_entry(
        labelled,
        EVALUATIONS_KEY,
        {"eval_key": "c", "state": "running", "pred_field": "usam_semantic"},
        match="eval_key",
    )
    record_entry(
        labelled,
        EVALUATIONS_KEY,
        {**done, "eval_key": "d", "pred_field": "other_semantic"},
        match="eval_key",
    )
    evaluation = review_summary(labelled, "usam")["evaluation"]
    assert (evaluation["eval_key"], evaluation["mean_iou"], evaluation["map50"]) == ("b", 0.6, 0.3)


def test_corrections_are_counted_per_class_and_kind(labelled):
    detections = instances_of(labelled)
    by_class = {c: [d for d in detections if d.label == c] for c in ("disc", "square")}
    big = max(by_class, key=lambda c: len(by_class[c]))
    other = "square" if big == "disc" else "disc"
    assert len(by_class[big]) >= 3, "the test wants three instances of one class"
    wrong, ok, edited = by_class[big][:3]
    labelled.select_labels(ids=[wrong.id]).tag_labels(WRONG_TAG, label_fields="usam_instances")
    labelled.select_labels(ids=[ok.id, edited.id]).tag_labels(OK_TAG, label_fields="usam_instances")
    sample = labelled[labelled.select_labels(ids=[edited.id]).first().id]
    for detection in sample.usam_instances.detections:
        if detection.id == edited.id:
            detection.label = other  # the reviewer's edit in the App
    sample.save()
    summary = review_summary(labelled, "usam")
    assert summary["corrected"] == 3
    assert summary["corrections"][big] == {"ok": 2, "wrong": 1, "relabel": 1}
    assert summary["corrections"][other] == {"ok": 0, "wrong": 0, "relabel": 0}
    # the counts are of the labels as they are now: the edited instance is the other class's
    assert summary["counts"][other] == len(by_class[other]) + 1


def test_uncertain_first_sorts_by_uncertainty_descending(labelled):
    view = uncertain_first(labelled, "usam")
    values = view.values("usam_uncertainty")
    assert values == sorted(labelled.values("usam_uncertainty"), reverse=True)
    with pytest.raises(DatasetNotFoundError, match="nope_uncertainty"):
        uncertain_first(labelled, "nope")


def test_class_view_keeps_that_class_within_the_range(labelled):
    detections = instances_of(labelled)
    label = detections[0].label
    confidences = sorted(d.confidence for d in detections if d.label == label)
    low, high = confidences[0], confidences[len(confidences) // 2]
    view = class_view(labelled, "usam", label, low, high)
    kept = instances_of(view)
    expected = [d for d in detections if d.label == label and low <= d.confidence <= high]
    assert sorted(d.id for d in kept) == sorted(d.id for d in expected) and kept
    assert len(view) == len(
        {s.id for s in labelled if any(d in expected for d in s.usam_instances.detections)}
    )
    with pytest.raises(ConfigError, match="confidence range"):
        class_view(labelled, "usam", label, 0.8, 0.2)
    with pytest.raises(DatasetNotFoundError, match="U-SAM prefixes: usam"):
        class_view(labelled, "nope", label, 0.0, 1.0)


# -- the panel -----------------------------------------------------------------------------


def test_loading_renders_the_run_counts_histogram_and_a_disabled_learn_button(panel, labelled):
    event = Event(panel, labelled)
    requests = event("on_load")
    summary = event.state["summary"]
    assert event.state["field"] == "usam" and summary == review_summary(labelled, "usam")
    layout = shown(requests)
    assert "field" not in layout  # one U-SAM field: no selector
    run = layout["run"]["default"]
    assert "threshold: 0" in run and all(
        f"| {c} | {n} |" in run for c, n in summary["counts"].items()
    )
    assert layout["histogram"]["view"]["name"] == "PlotlyView"
    (data,) = sent(requests, "patch_panel_data")
    traces = data["data"]["histogram"]
    assert {t["name"] for t in traces} == {"disc", "square"}
    assert sum(sum(t["y"]) for t in traces) == summary["instances"]
    assert layout["learn_btn"]["view"]["disabled"] is True
    assert "No corrections yet" in layout["no_corrections"]["default"]
    assert not sent(event("learn"), "prompt_user_for_operation")


def test_review_uncertain_sets_a_view_sorted_by_uncertainty(panel, labelled):
    event = Event(panel, labelled)
    event("on_load")
    view = view_of(labelled, event("review_uncertain"))
    assert view.values("usam_uncertainty") == sorted(
        labelled.values("usam_uncertainty"), reverse=True
    )


def test_review_a_class_sets_a_view_of_that_class_in_the_range(panel, labelled):
    event = Event(panel, labelled)
    event("on_load")
    label = event.state["review_label"]
    event.state.update(confidence_low=0.2, confidence_high=0.9)
    view = view_of(labelled, event("review_class"))
    kept = instances_of(view)
    assert kept == instances_of(class_view(labelled, "usam", label, 0.2, 0.9))
    assert all(d.label == label and 0.2 <= d.confidence <= 0.9 for d in kept)
    event.state.update(confidence_low=0.9, confidence_high=0.2)
    requests = event("review_class")
    assert not sent(requests, "set_view")
    assert "confidence range" in sent(requests, "notify")[0]["message"]


def test_learn_prompts_the_refine_operator_once_there_are_corrections(panel, labelled):
    first = instances_of(labelled)[0]
    event = Event(panel, labelled)
    event("on_load")
    labelled.select_labels(ids=[first.id]).tag_labels(WRONG_TAG, label_fields="usam_instances")
    layout = shown(event("refresh"))  # a correction made in the App after the panel loaded
    assert layout["learn_btn"]["view"]["disabled"] is False and "no_corrections" not in layout
    assert f"| {first.label} | 1 | 0 | 0 |" in layout["corrections_table"]["default"]
    (prompt,) = sent(event("learn"), "prompt_user_for_operation")
    assert prompt["operator_uri"] == "@fiftyone-usam/usam/refine"
    assert prompt["params"] == {"field": "usam"}


def test_a_field_selector_switches_between_usam_fields(panel, labelled, tiny_head, tiny_checkpoint):
    from fiftyone_usam.stages.predict import predict

    predict(
        labelled.limit(2), head=tiny_head, field="second", checkpoint=tiny_checkpoint, **KEEP_ALL
    )
    assert usam_fields(labelled) == ["second", "usam"]
    event = Event(panel, labelled)
    layout = shown(event("on_load"))
    assert event.state["field"] == "second" and event.state["summary"]["labelled"] == 2
    assert [c["value"] for c in layout["field"]["view"]["choices"]] == ["second", "usam"]
    event("on_change_field", value="usam")
    assert event.state["field"] == "usam" and event.state["summary"]["labelled"] == 6
    view = view_of(labelled, event("review_uncertain"))
    assert view.values("usam_uncertainty") == sorted(
        labelled.values("usam_uncertainty"), reverse=True
    )


def test_a_dataset_without_usam_labels_says_what_to_do(panel, make_dataset, image_files):
    dataset = make_dataset(image_files[:1])
    event = Event(panel, dataset)
    layout = shown(event("on_load"))
    assert event.state["summary"] is None
    assert "no U-SAM labels yet" in layout["nothing"]["default"]
