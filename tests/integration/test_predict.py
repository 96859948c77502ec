"""`predict`, `apply_model`, `usam predict` and the predict operator on the tiny SAM and head."""

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.fiftyone_io.writer import FieldExistsError, recorded_run
from tests.integration.test_plugin import manifest

KEEP_ALL = {"threshold": 0.0, "device": "cpu"}  # a barely trained head: keep masks to check them


@pytest.fixture
def target(make_dataset, image_files):
    return make_dataset(image_files)


def labels_of(dataset, field="usam"):
    """Everything a run wrote, per sample, comparable across runs."""
    out = {}
    for sample in dataset:
        semantic = sample[f"{field}_semantic"]
        detections = sample[f"{field}_instances"].detections
        out[sample.id] = (
            semantic.get_mask() if semantic.mask is None else semantic.mask,
            [
                (d.label, round(d.confidence, 6), tuple(np.round(d.bounding_box, 6)))
                for d in detections
            ],
            round(sample[f"{field}_uncertainty"], 6),
        )
    return out


def assert_same_labels(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        assert a[key][1:] == b[key][1:]


def test_predict_writes_both_fields(target, tiny_head, tiny_checkpoint):
    import fiftyone as fo

    report = usam.predict(target, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    assert (report.total, report.labelled, report.failed, report.used_sam) == (6, 6, {}, True)
    assert target.mask_targets["usam_semantic"] == {0: "background", 1: "disc", 2: "square"}
    schema = target.get_field_schema()
    assert schema["usam_semantic"].document_type is fo.Segmentation
    assert schema["usam_instances"].document_type is fo.Detections
    kept = 0
    for sample in target:
        with Image.open(sample.filepath) as image:
            size = (image.height, image.width)
        semantic = sample.usam_semantic.mask
        assert semantic.shape == size and set(np.unique(semantic)) <= {0, 1, 2}
        assert 0.0 <= sample.usam_uncertainty <= 1.0
        for det in sample.usam_instances.detections:
            kept += 1
            _, _, w, h = det.bounding_box
            assert det.label in ("disc", "square") and 0 <= det.confidence <= 1
            assert det.mask.shape == (round(h * size[0]), round(w * size[1]))
            assert det["entropy"] >= 0
    assert kept > 0
    run = recorded_run(target, "usam")
    assert run["head"] == str(tiny_head.resolve()) and run["settings"]["threshold"] == 0.0
    assert run["store_spec"]["sam_variant"] == "tiny"
    # the target's embeddings were added to a store recorded on it, for next time
    assert EmbeddingStore.open(report.store).sample_ids() == set(target.values("id"))


def test_reruns_are_idempotent_and_never_overwrite_silently(target, tiny_head, tiny_checkpoint):
    first = usam.predict(target, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    before = labels_of(target)
    again = usam.predict(target, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    assert (again.labelled, again.already_done, again.used_sam) == (0, 6, False)
    with pytest.raises(FieldExistsError, match=r"from a run with other settings.*--overwrite"):
        usam.predict(target, head=tiny_head, threshold=0.9, device="cpu")
    assert_same_labels(labels_of(target), before)
    redone = usam.predict(target, head=tiny_head, overwrite=True, **KEEP_ALL)
    assert redone.labelled == 6 and first.store == redone.store
    assert_same_labels(labels_of(target), before)


def test_a_field_that_is_not_ours_is_protected(target, tiny_head):
    import fiftyone as fo

    target.set_values(
        "usam_semantic", [fo.Segmentation(mask=np.zeros((2, 2), np.uint8))] * len(target)
    )
    with pytest.raises(FieldExistsError, match="already has usam_semantic: pass --overwrite"):
        usam.predict(target, head=tiny_head, device="cpu")


def test_classes_that_collide_with_mask_targets_are_refused(target, tiny_head, tiny_checkpoint):
    target.mask_targets = {"usam_semantic": {0: "background", 1: "cat", 2: "dog"}}
    target.save()
    target.set_values("usam_uncertainty", [0.0] * len(target))
    with pytest.raises(FieldExistsError, match=r"holds the classes \['background', 'cat', 'dog'\]"):
        usam.predict(target, head=tiny_head, device="cpu")
    # ... on part of the dataset, even with --overwrite
    target.take(2).tag_samples("part")
    with pytest.raises(FieldExistsError, match="another --field"):
        usam.predict(target, head=tiny_head, view_tag="part", overwrite=True, device="cpu")
    # ... but the whole dataset, with --overwrite, replaces them everywhere
    report = usam.predict(
        target, head=tiny_head, overwrite=True, checkpoint=tiny_checkpoint, **KEEP_ALL
    )
    assert report.labelled == 6
    assert target.mask_targets["usam_semantic"][1] == "disc"


def test_cached_embeddings_give_the_same_labels_without_sam(
    target, tiny_head, tiny_checkpoint, monkeypatch
):
    full = usam.predict(
        target, head=tiny_head, checkpoint=tiny_checkpoint, field="full", **KEEP_ALL
    )
    assert full.used_sam

    def no_sam(*args, **kwargs):
        raise AssertionError("SAM must not be loaded when the store has every sample")

    from fiftyone_usam.embeddings import sam_backend

    monkeypatch.setattr(sam_backend, "load_sam", no_sam)
    cached = usam.predict(target, head=tiny_head, field="cached", **KEEP_ALL)
    assert not cached.used_sam and cached.labelled == 6
    assert_same_labels(labels_of(target, "full"), labels_of(target, "cached"))


def test_a_corrupt_image_is_reported_and_the_rest_written(
    make_dataset, image_files, tmp_path, tiny_head, tiny_checkpoint
):
    broken = tmp_path / "broken.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buffer, "JPEG")
    broken.write_bytes(buffer.getvalue()[:200])
    dataset = make_dataset([image_files[0], broken, image_files[1]])
    report = usam.predict(dataset, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    bad = dataset.values("id")[1]
    assert set(report.failed) == {bad} and "broken.jpg" in report.failed[bad]
    assert report.labelled == 2
    assert dataset.values("usam_uncertainty")[1] is None
    assert all(v is not None for i, v in enumerate(dataset.values("usam_semantic")) if i != 1)


def test_masks_can_live_on_disk(target, tiny_head, tiny_checkpoint, tmp_path):
    in_db = usam.predict(target, head=tiny_head, checkpoint=tiny_checkpoint, field="db", **KEEP_ALL)
    on_disk = usam.predict(
        target, head=tiny_head, field="disk", mask_dir=tmp_path / "masks", **KEEP_ALL
    )
    assert in_db.used_sam and not on_disk.used_sam
    for sample in target:
        assert sample.disk_semantic.mask is None and sample.disk_semantic.mask_path
        np.testing.assert_array_equal(sample.disk_semantic.get_mask(), sample.db_semantic.mask)
        for a, b in zip(
            sample.disk_instances.detections, sample.db_instances.detections, strict=True
        ):
            assert a.mask is None and a.mask_path.startswith(str(tmp_path))
            np.testing.assert_array_equal(a.get_mask() > 0, b.mask)  # PNGs hold 0/255


def test_granularity_changes_the_masks(target, tiny_head, tiny_checkpoint):
    areas = {}
    for granularity in ("fine", "coarse"):
        usam.predict(
            target,
            head=tiny_head,
            checkpoint=tiny_checkpoint,
            field=granularity,
            granularity=granularity,
            nms_iou=1.0,
            **KEEP_ALL,
        )
        areas[granularity] = sum(
            int(d.mask.sum())
            for dets in target.values(f"{granularity}_instances")
            for d in dets.detections
        )
    assert areas["fine"] < areas["coarse"]


def test_apply_model_writes_the_same_fields(target, tiny_head, tiny_checkpoint):
    expected = usam.predict(
        target, head=tiny_head, checkpoint=tiny_checkpoint, field="cli", **KEEP_ALL
    )
    model = usam.load_model(tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    target.apply_model(model, label_field="usam", batch_size=2)
    assert target.mask_targets["usam_semantic"] == {0: "background", 1: "disc", 2: "square"}
    assert recorded_run(target, "usam")["via"] == "apply_model"
    assert_same_labels(labels_of(target, "usam"), labels_of(target, "cli"))
    assert expected.labelled == 6


def test_apply_model_runs_sam_when_there_is_no_store(target, tiny_head, tiny_checkpoint):
    model = usam.load_model(tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    target.apply_model(model, label_field="fresh")
    assert model.store is None and model._extractor is not None
    assert all(v is not None for v in target.values("fresh_semantic"))


def test_apply_model_skip_failures(make_dataset, image_files, tmp_path, tiny_head, tiny_checkpoint):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    dataset = make_dataset([image_files[0], broken, image_files[1]])
    model = usam.load_model(tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    dataset.apply_model(model, label_field="usam", skip_failures=True)
    semantic = dataset.values("usam_semantic")
    assert semantic[0] is not None and semantic[1] is None and semantic[2] is not None
    with pytest.raises(Exception, match=r"broken\.png"):
        dataset.apply_model(model, label_field="strict", skip_failures=False)


def test_cli_predict(target, tiny_head, tiny_checkpoint):
    from fiftyone_usam.cli import main

    runner = CliRunner()
    args = [
        "predict",
        "--dataset",
        target.name,
        "--head",
        str(tiny_head),
        "--field",
        "usam",
        "--checkpoint",
        str(tiny_checkpoint),
        "--threshold",
        "0",
        "--device",
        "cpu",
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "6 labelled" in first.output and f"fiftyone app launch {target.name}" in first.output
    other = runner.invoke(main, [*args[:-4], "--threshold", "0.5", "--device", "cpu"])
    assert other.exit_code == 1 and "--overwrite" in other.output
    replaced = runner.invoke(main, [*args, "--overwrite", "--granularity", "coarse"])
    assert replaced.exit_code == 0 and "cached embeddings, SAM not loaded" in replaced.output
    missing = runner.invoke(main, ["predict", "--dataset", target.name, "--head", "/no/head"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_predict_operator_immediate_and_delegated(plugins_dir, target, tiny_head, tiny_checkpoint):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    uri = f"{manifest()['name']}/predict"
    params = {
        "head": str(tiny_head),
        "field": "op",
        "threshold": 0.0,
        "nms_iou": 0.5,
        "granularity": "best",
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
    }
    result = foo.execute_operator(uri, ctx={"dataset": target, "params": params})
    assert result.result["labelled"] == 6
    params["field"] = "queued"
    foo.execute_operator(uri, ctx={"dataset": target, "params": params}, request_delegation=True)
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=target.name)
    (operation,) = service.list_operations(dataset_name=target.name)
    assert operation.run_state == "completed", operation.result
    assert operation.result.result["used_sam"] is False  # embedded by the first run
    assert operation.status.label == "6/6 images"
    target.reload()
    assert_same_labels(labels_of(target, "op"), labels_of(target, "queued"))
