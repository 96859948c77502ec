"""Labelling the user's own boxes and points: `predict(prompt_field=...)`, `embed`, the CLI."""

import logging
import math

import numpy as np
import pytest
from click.testing import CliRunner

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.agreement import DISAGREE_TAG
from fiftyone_usam.fiftyone_io.prompts import read_prompts

KEEP_ALL = {"threshold": 0.0, "device": "cpu"}  # every prompt gets one of the head's classes

# per sample (6 images): its boxes as (x, y, w, h, label); sample 2 has none, sample 3 a box
# reaching outside the image and a zero-area one, sample 5 a box without a label
BOXES = [
    [(0.1, 0.1, 0.5, 0.5, "disc"), (0.5, 0.4, 0.4, 0.5, "square")],
    [(0.2, 0.2, 0.6, 0.6, "square")],
    [],
    [(0.7, 0.6, 0.6, 0.6, "disc"), (0.3, 0.3, 0.0, 0.2, "disc"), (0.0, 0.0, 0.5, 0.5, "square")],
    [(0.25, 0.25, 0.5, 0.5, "disc")],
    [(0.1, 0.2, 0.3, 0.3, None)],
]


@pytest.fixture
def boxed(make_dataset, image_files):
    import fiftyone as fo

    dataset = make_dataset(image_files)
    for sample, boxes in zip(dataset.iter_samples(autosave=True), BOXES, strict=True):
        sample["boxes"] = fo.Detections(
            detections=[
                fo.Detection(label=lab, bounding_box=[x, y, w, h]) for x, y, w, h, lab in boxes
            ]
        )
    return dataset


def _box_ids(dataset):
    return dict(zip(*dataset.values(["id", "boxes.detections.id"]), strict=True))


def test_reading_prompts_clips_skips_and_reports(boxed, caplog):
    ids = boxed.values("id")
    with caplog.at_level(logging.WARNING):
        prompts = read_prompts(boxed, "boxes")
    assert prompts.kind == "boxes"
    assert set(prompts.skipped) == {ids[2]} and "no boxes" in prompts.skipped[ids[2]]
    clipped = prompts.sets[ids[3]]
    assert len(clipped) == 2  # the zero-area box is dropped
    np.testing.assert_allclose(clipped.coords[0], [0.7, 0.6, 0.3, 0.4])
    assert any("clipped" in w and ids[3] in w for w in prompts.warnings)
    assert any("zero-area" in w and ids[3] in w for w in prompts.warnings)
    assert "clipped" in caplog.text
    assert prompts.labels[_box_ids(boxed)[ids[5]][0]] is None


def test_predict_names_each_box_and_keeps_its_id(boxed, tiny_head, tiny_checkpoint):
    report = usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    ids = boxed.values("id")
    assert report.labelled == 5 and report.used_sam and set(report.skipped) == {ids[2]}
    box_ids = _box_ids(boxed)
    for sample in boxed.select([i for i in ids if i != ids[2]]):
        detections = sample.usam_instances.detections
        usable = [b for b in box_ids[sample.id]]
        if sample.id == ids[3]:
            usable = [usable[0], usable[2]]  # the zero-area box has no instance
        assert [d["prompt_id"] for d in detections] == usable
        for d in detections:
            assert d.label in ("disc", "square") and 0 <= d.confidence <= 1
            own = next(b.label for b in sample.boxes.detections if b.id == d["prompt_id"])
            if own is None:  # a box without a label: no prompt_label
                assert sample.id == ids[5] and not d.has_field("prompt_label")
            else:
                assert d["prompt_label"] == own
        assert set(np.unique(sample.usam_semantic.mask)) <= {0, 1, 2}
        assert 0 <= sample.usam_uncertainty <= 1
    assert boxed[ids[2]].usam_semantic is None  # skipped: nothing written
    store = EmbeddingStore.open(report.store)
    assert store.spec.prompt_field == "boxes" and store.spec.masks_per_point == 1
    assert report.store.name.endswith("prompts-boxes")


def test_a_second_run_from_the_cache_does_not_load_sam(
    boxed, tiny_head, tiny_checkpoint, monkeypatch
):
    first = usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )

    def no_sam(*args, **kwargs):
        raise AssertionError("SAM must not be loaded when the store has every prompt")

    from fiftyone_usam.embeddings import sam_backend

    monkeypatch.setattr(sam_backend, "load_sam", no_sam)
    again = usam.predict(boxed, head=tiny_head, prompt_field="boxes", field="again", **KEEP_ALL)
    assert first.used_sam and not again.used_sam and again.labelled == 5
    for sample in boxed.exists("usam_instances"):
        a, b = sample.usam_instances.detections, sample.again_instances.detections
        assert [(d.label, d.confidence) for d in a] == [(d.label, d.confidence) for d in b]


def test_a_changed_box_embeds_and_labels_only_its_sample(boxed, tiny_head, tiny_checkpoint):
    usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    moved = boxed.first()
    moved.boxes.detections[0].bounding_box = [0.2, 0.2, 0.4, 0.4]
    moved.save()
    report = usam.embed(boxed, checkpoint=tiny_checkpoint, prompt_field="boxes", device="cpu")
    assert (report.embedded, report.changed, report.already_done) == (1, [moved.id], 4)
    relabel = usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    # embed refreshed its proposals: its labels, made from the old box, are made again
    assert (relabel.labelled, relabel.already_done, relabel.used_sam) == (1, 4, False)
    moved.boxes.detections[0].bounding_box = [0.1, 0.1, 0.3, 0.3]
    moved.save()
    relabel = usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    assert (relabel.labelled, relabel.already_done, relabel.used_sam) == (1, 4, True)
    unchanged = usam.predict(boxed, head=tiny_head, prompt_field="boxes", **KEEP_ALL)
    assert (unchanged.labelled, unchanged.already_done) == (0, 5)
    (box,) = [
        d
        for d in boxed[moved.id].usam_instances.detections
        if d["prompt_id"] == moved.boxes.detections[0].id
    ]
    assert box.bounding_box[0] < 0.45  # the new box's mask


def test_agreement_is_reported_and_disagreeing_samples_tagged(boxed, tiny_head, tiny_checkpoint):
    usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    # plant the prompts' labels: the head's own on samples 0 and 1, the other class on 3 and 4
    ids = boxed.values("id")
    flip = {"disc": "square", "square": "disc"}
    planted = {}
    for k in (0, 1, 3, 4):
        sample = boxed[ids[k]]
        said = {d["prompt_id"]: d.label for d in sample.usam_instances.detections}
        for box in sample.boxes.detections:
            if box.id in said:
                box.label = said[box.id] if k < 2 else flip[said[box.id]]
                planted[box.id] = (box.label, k < 2)
        sample.save()
    report = usam.predict(boxed, head=tiny_head, prompt_field="boxes", field="again", **KEEP_ALL)
    agreement = report.agreement
    assert agreement is not None and not report.used_sam
    for name in ("disc", "square"):
        mine = [ok for label, ok in planted.values() if label == name]
        if mine:
            assert agreement.per_class[name]["prompts"] == len(mine)
            assert agreement.per_class[name]["agreed"] == sum(mine)
    assert agreement.rate == pytest.approx(sum(ok for _, ok in planted.values()) / len(planted))
    assert sorted(agreement.disagreeing) == sorted([ids[3], ids[4]])
    assert sorted(boxed.match_tags(DISAGREE_TAG).values("id")) == sorted([ids[3], ids[4]])
    assert "agrees with the prompts' labels" in report.summary()
    # once the labels agree, the tag goes
    for k in (3, 4):
        sample = boxed[ids[k]]
        for box in sample.boxes.detections:
            if box.id in planted:
                box.label = flip[box.label]
        sample.save()
    again = usam.predict(boxed, head=tiny_head, prompt_field="boxes", field="third", **KEEP_ALL)
    assert again.agreement.rate == 1.0 and len(boxed.match_tags(DISAGREE_TAG)) == 0


def test_keep_prompt_labels_writes_the_users_classes(boxed, tiny_head, tiny_checkpoint):
    sample = boxed[boxed.values("id")[4]]
    sample.boxes.detections[0].label = "tree"  # not a class of the head
    sample.save()
    report = usam.predict(
        boxed,
        head=tiny_head,
        checkpoint=tiny_checkpoint,
        prompt_field="boxes",
        keep_prompt_labels=True,
        **KEEP_ALL,
    )
    assert report.classes == ("disc", "square", "tree")
    assert boxed.mask_targets["usam_semantic"][3] == "tree"
    (tree,) = boxed[sample.id].usam_instances.detections
    assert tree.label == "tree" and tree.confidence is None
    assert tree["head_label"] in ("disc", "square") and 0 <= tree["head_confidence"] <= 1
    assert 3 in np.unique(boxed[sample.id].usam_semantic.mask)
    unlabelled = boxed[boxed.values("id")[5]].usam_instances.detections[0]
    assert unlabelled.label in ("disc", "square") and unlabelled["head_label"] == unlabelled.label
    assert report.agreement is not None and report.agreement.outside == {"tree": 1}


def test_a_box_the_head_calls_background_stays_an_instance(boxed, tiny_head, tiny_checkpoint):
    report = usam.predict(
        boxed,
        head=tiny_head,
        checkpoint=tiny_checkpoint,
        prompt_field="boxes",
        threshold=1.0,  # nothing reaches it
        device="cpu",
    )
    assert report.labelled == 5
    for sample in boxed.exists("usam_instances"):
        assert {d.label for d in sample.usam_instances.detections} == {"background"}
        assert not sample.usam_semantic.mask.any()  # background is never painted


def test_keypoints_prompt_one_instance_per_label(
    make_dataset, image_files, tiny_head, tiny_checkpoint
):
    import fiftyone as fo

    dataset = make_dataset(image_files[:2])
    nan = math.nan
    first, second = dataset
    first["clicks"] = fo.Keypoints(
        keypoints=[
            fo.Keypoint(label="disc", points=[[0.3, 0.3], [0.35, 0.4]]),
            fo.Keypoint(label="square", points=[[nan, nan]]),  # no point: skipped
        ]
    )
    first.save()
    second["clicks"] = fo.Keypoints(keypoints=[fo.Keypoint(points=[[0.5, 0.5]])])
    second.save()
    report = usam.predict(
        dataset, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="clicks", **KEEP_ALL
    )
    assert report.labelled == 2 and EmbeddingStore.open(report.store).spec.masks_per_point == 3
    (one,) = dataset[first.id].usam_instances.detections
    assert one["prompt_id"] == first.clicks.keypoints[0].id and one["prompt_label"] == "disc"
    assert len(dataset[second.id].usam_instances.detections) == 1


def test_bad_prompt_fields_are_refused_with_what_to_use(boxed, tiny_head, tiny_checkpoint):
    import fiftyone as fo

    with pytest.raises(ConfigError, match=r"no field 'nope'.*boxes"):
        usam.predict(boxed, head=tiny_head, prompt_field="nope", **KEEP_ALL)
    sample = boxed.first()
    sample["lines"] = fo.Polylines(polylines=[fo.Polyline(points=[[(0.1, 0.1), (0.5, 0.5)]])])
    sample.save()
    with pytest.raises(ConfigError, match=r"holds Polylines.*Detections and Keypoints"):
        usam.predict(boxed, head=tiny_head, prompt_field="lines", **KEEP_ALL)
    with pytest.raises(ConfigError, match="pass prompt_field too"):
        usam.predict(boxed, head=tiny_head, keep_prompt_labels=True, **KEEP_ALL)
    with pytest.raises(ConfigError, match="granularity 'all'"):
        usam.predict(boxed, head=tiny_head, prompt_field="boxes", granularity="all", **KEEP_ALL)
    assert not boxed.has_field("usam_semantic")  # nothing was written


def test_a_grid_store_is_not_read_for_prompts(boxed, tiny_head, tiny_checkpoint):
    grid = usam.predict(boxed, head=tiny_head, checkpoint=tiny_checkpoint, field="grid", **KEEP_ALL)
    with pytest.raises(Exception, match="not of the boxes of field 'boxes'"):
        usam.predict(boxed, head=tiny_head, store=grid.store, prompt_field="boxes", **KEEP_ALL)


def test_cli_predict_with_a_prompt_field(boxed, tiny_head, tiny_checkpoint):
    from fiftyone_usam.cli import main

    result = CliRunner().invoke(
        main,
        [
            "predict",
            "--dataset",
            boxed.name,
            "--head",
            str(tiny_head),
            "--checkpoint",
            str(tiny_checkpoint),
            "--prompt-field",
            "boxes",
            "--threshold",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "5 labelled" in result.output and "1 without prompts" in result.output
    assert "agrees with the prompts' labels" in result.output
    bad = CliRunner().invoke(
        main, ["predict", "--dataset", boxed.name, "--head", str(tiny_head), "--prompt-field", "x"]
    )
    assert bad.exit_code == 1 and "no field 'x'" in bad.output


def test_apply_model_with_a_prompt_field_equals_predict(boxed, tiny_head, tiny_checkpoint):
    usam.predict(
        boxed, head=tiny_head, checkpoint=tiny_checkpoint, prompt_field="boxes", **KEEP_ALL
    )
    model = usam.load_model(tiny_head, prompt_field="boxes", threshold=0.0, device="cpu")
    boxed.apply_model(model, label_field="applied")
    for sample in boxed.exists("usam_instances"):
        ours = [
            (d["prompt_id"], d.label, round(d.confidence, 5))
            for d in sample.usam_instances.detections
        ]
        theirs = [
            (
                d["prompt_id"],
                d.label,
                round(d.confidence, 5),
                d["prompt_label"] if d.has_field("prompt_label") else None,
            )
            for d in sample.applied_instances.detections
        ]
        assert ours == [t[:3] for t in theirs]
    assert boxed[boxed.values("id")[2]].applied_instances is None  # no prompts: no labels
    assert model.store is not None and model.store.spec.prompt_field == "boxes"


def test_predict_operator_takes_a_prompt_field(
    plugins_dir,
    form,
    boxed,
    tiny_head,
    tiny_checkpoint,
):
    import fiftyone.operators as foo

    from tests.integration.test_plugin import manifest

    shown = form("predict", boxed, None, head=str(tiny_head), prompt_field="boxes")
    assert shown.properties["prompt_field"].type.values == ["boxes"]
    assert "keep_prompt_labels" in shown.properties and "prompt_field" not in shown.errors
    refused = form(
        "predict", boxed, None, head=str(tiny_head), prompt_field="boxes", granularity="all"
    )
    assert "granularity 'all'" in refused.errors["prompt_field"]
    params = {
        "head": str(tiny_head),
        "field": "op",
        "threshold": 0.0,
        "prompt_field": "boxes",
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
    }
    uri = f"{manifest()['name']}/predict"
    result = foo.execute_operator(uri, ctx={"dataset": boxed, "params": params})
    assert result.result["labelled"] == 5 and len(result.result["skipped"]) == 1
    assert result.result["agreement"]["rate"] is not None
    boxed.reload()
    assert all(d.has_field("prompt_id") for d in boxed.first().op_instances.detections)
