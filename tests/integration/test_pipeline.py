"""`usam run`: the whole chain, resumed after an interruption and after a class-list change;
`usam demo`: the chain on tiny random models, offline."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from fiftyone_usam.stages.pipeline import run


class Interrupt(Exception):
    pass


@pytest.fixture
def target(make_dataset, image_files):
    """The dataset to label, with planted (not meaningful) semantic ground truth."""
    import fiftyone as fo
    from PIL import Image

    dataset = make_dataset(image_files)
    for i, sample in enumerate(dataset):
        with Image.open(sample.filepath) as image:
            truth = np.zeros((image.height, image.width), np.uint8)
        truth[: truth.shape[0] // 2, : truth.shape[1] // 2] = 1 + i % 2
        sample["ground_truth"] = fo.Segmentation(mask=truth)
        sample.save()
    dataset.mask_targets["ground_truth"] = {0: "background", 1: "disc", 2: "square"}
    dataset.save()
    return dataset


@pytest.fixture
def options(tiny_pipeline_dir, tiny_checkpoint, training_datasets, tmp_path, torch_single_thread):
    return {
        "source": "synthetic",
        "per_class": 3,
        "model": tiny_pipeline_dir,
        "steps": 2,
        "checkpoint": tiny_checkpoint,
        "points_per_side": 2,
        "epochs": 2,
        "workdir": tmp_path / "work",
        "training_dataset": training_datasets(),
        "gt_field": "ground_truth",
        "threshold": 0.0,
        "device": "cpu",
        "label_batch_size": 2,  # predict writes and reports 2 samples at a time: stops at 2
        "progress": False,
    }


def statuses(report):
    return {s.name: s.status for s in report.stages}


def test_run_resumes_without_redoing_finished_stages(target, options):
    def stop_in_predict(stage, done, total):
        if stage == "predict" and done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run("disc,square", dataset=target.name, **{**options, "progress": stop_in_predict})
    target.reload()
    assert len(target.exists("usam_semantic")) == 2  # what was labelled is kept

    resumed = run("disc,square", dataset=target.name, **options)
    assert statuses(resumed) == {
        "training images": "skipped",
        "embed training": "skipped",
        "embed target": "skipped",
        "train": "skipped",
        "predict": "ran",
        "evaluate": "ran",
    }
    assert "4 labelled, 2 already labelled" in resumed.stage("predict").detail
    assert len(target.exists("usam_semantic")) == 6
    assert resumed.evaluation is not None and "usam_eval" in target.list_evaluations()
    assert resumed.head is not None and (resumed.head / "student" / "head.json").is_file()

    again = run("disc,square", dataset=target.name, **options)
    assert set(statuses(again).values()) == {"skipped"}
    assert again.evaluation is not None
    assert again.evaluation.mean_iou == resumed.evaluation.mean_iou
    summary = again.summary()
    assert f"fiftyone app launch {target.name}" in summary and "mIoU" in summary


def test_a_new_class_does_only_the_work_that_changed(target, options):
    import fiftyone as fo

    first = run("disc,square", dataset=target.name, **options)
    changed = run("disc,square,ring", dataset=target.name, **options)
    assert statuses(changed) == {
        "training images": "ran",
        "embed training": "ran",
        "embed target": "skipped",
        "train": "ran",
        "predict": "ran",
        "evaluate": "ran",
    }
    assert "3 generated, 6 already" in changed.stage("training images").detail
    assert "3 embedded, 6 already in the store" in changed.stage("embed training").detail
    assert changed.head != first.head
    assert target.mask_targets["usam_semantic"] == {
        0: "background",
        1: "disc",
        2: "square",
        3: "ring",
    }
    training = fo.load_dataset(options["training_dataset"])
    assert training.count_values("ground_truth.label") == {"disc": 3, "square": 3, "ring": 3}


def test_predictions_it_did_not_write_are_protected(target, options, tiny_head):
    from fiftyone_usam.errors import USAMError
    from fiftyone_usam.stages.predict import predict

    predict(
        target,
        head=tiny_head,
        threshold=0.0,
        device="cpu",
        progress=False,
        checkpoint=options["checkpoint"],
    )
    with pytest.raises(USAMError, match="--overwrite"):
        run("disc,square", dataset=target.name, **{**options, "gt_field": None})


def test_cli_run_and_demo(target, options, tmp_path):
    import fiftyone as fo

    from fiftyone_usam.cli import main

    runner = CliRunner()
    args = ["run", "--classes", "disc,square", "--dataset", target.name]
    for name in (
        "per_class",
        "model",
        "steps",
        "checkpoint",
        "points_per_side",
        "epochs",
        "workdir",
        "training_dataset",
        "gt_field",
        "threshold",
        "device",
    ):
        args += [f"--{name.replace('_', '-')}", str(options[name])]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "metrics: mIoU" in result.output and "fiftyone app launch" in result.output

    name = f"usam-demo-{tmp_path.name[-8:]}"
    try:
        demo = runner.invoke(
            main,
            [
                "demo",
                "--dataset",
                name,
                "--workdir",
                str(tmp_path / "demo"),
                "--images",
                "3",
                "--per-class",
                "2",
                "--epochs",
                "2",
            ],
        )
        assert demo.exit_code == 0, demo.output
        assert "NOT meaningful" in demo.output and "mIoU" in demo.output
        dataset = fo.load_dataset(name)
        assert dataset.count("usam_semantic") == 3 and dataset.count("usam_instances") == 3
        assert "usam_eval" in dataset.list_evaluations()
    finally:
        for leftover in (name, f"{name}-usam-synthetic"):
            if fo.dataset_exists(leftover):
                fo.delete_dataset(leftover)


def test_run_operator_queues_the_whole_chain(plugins_dir, target, options):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    from tests.integration.test_plugin import manifest

    params = {
        "classes": "disc,square",
        "field": "usam",
        "source": "synthetic",
        "per_class": 3,
        "model": str(options["model"]),
        "checkpoint": str(options["checkpoint"]),
        "points_per_side": 2,
        "epochs": 2,
        "threshold": 0.0,
        "gt_field": "ground_truth",
        "workdir": str(options["workdir"]),
        "device": "cpu",
    }
    queued = foo.execute_operator(
        f"{manifest()['name']}/run",
        ctx={"dataset": target, "params": params},
        request_delegation=True,
    )
    assert queued.delegated
    service = DelegatedOperationService()
    try:
        service.execute_queued_operations(dataset_name=target.name)
    finally:
        training = f"{target.name}-usam-synthetic"
        if fo.dataset_exists(training):
            fo.delete_dataset(training)
    (operation,) = service.list_operations(dataset_name=target.name)
    assert operation.run_state == "completed", operation.result
    assert operation.result.result["stages"]["predict"] == "ran"
    assert operation.result.result["mIoU"] is not None
    assert operation.status.progress == 1.0 and operation.status.label.startswith("evaluate")
    target.reload()
    assert target.count("usam_semantic") == len(target)


def test_run_with_crawled_training_images(target, options, image_server, tmp_path):
    """--source crawl --crawl-engine urls: web images of each class feed the same chain."""
    from tests.fixtures.http_images import encode, photo

    lines = []
    for i, name in enumerate(["disc", "disc", "square", "square"]):
        url = image_server.add(f"/img{i}.jpg", encode(photo(160, 200, seed=i)))
        lines.append(f"{name}\t{url}")
    urls = tmp_path / "urls.tsv"
    urls.write_text("\n".join(lines) + "\n")
    crawled = {**options, "source": "crawl", "crawl_engine": "urls", "urls_file": urls}
    for key in ("model", "steps"):
        crawled.pop(key)
    report = run("disc,square", dataset=target.name, **crawled)
    assert statuses(report)["training images"] == "ran"
    assert "4 kept" in report.stage("training images").detail
    assert report.training_dataset == crawled["training_dataset"]
    assert report.evaluation is not None and target.count("usam_semantic") == len(target)


def test_new_settings_relabel_and_a_stopped_overwrite_resumes(target, options):
    run("disc,square", dataset=target.name, **options)

    def stop_in_predict(stage, done, total):
        if stage == "predict" and done == 2:
            raise Interrupt

    stricter = {**options, "threshold": 0.5}
    with pytest.raises(Interrupt):
        run("disc,square", dataset=target.name, **{**stricter, "progress": stop_in_predict})
    target.reload()
    assert target.count("usam_semantic") == 2  # the old labels were cleared, not kept as new
    resumed = run("disc,square", dataset=target.name, **stricter)
    assert "4 labelled, 2 already labelled" in resumed.stage("predict").detail
    assert statuses(resumed)["train"] == "skipped"


def test_other_weights_of_the_same_sam_are_embedded_again(target, options, tmp_path):
    import shutil

    import torch

    run("disc,square", dataset=target.name, **options)
    weights = torch.load(options["checkpoint"])
    other = tmp_path / "other" / "tiny_sam.pth"
    other.parent.mkdir()
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, other)
    shutil.copy(options["checkpoint"].with_suffix(".json"), other.with_suffix(".json"))
    again = run("disc,square", dataset=target.name, **{**options, "checkpoint": other})
    assert statuses(again)["embed training"] == "ran"
    assert statuses(again)["embed target"] == "ran"
    assert statuses(again)["train"] == "ran"
    stores = set(again.stores.values())
    assert all(p.name.startswith("embeddings-tiny-p2-") for p in stores)  # beside the first


def test_training_images_are_embedded_without_masks_unless_asked(
    target, options, training_datasets
):
    """The training images' store keeps no masks by default (training reads only embeddings);
    the target's keeps them for predict; a store an earlier run made with masks is reused."""
    from safetensors import safe_open

    from fiftyone_usam.embeddings.store import EmbeddingStore

    def has_masks(store):
        return EmbeddingStore.open(store).spec.has_masks

    def mask_arrays(store):
        names = set()
        for shard in (store / "shards").glob("*.safetensors"):
            with safe_open(str(shard), framework="np") as f:
                names |= {"rle_bytes", "rle_offsets"} & set(f.keys())
        return names

    default = run("disc,square", dataset=target.name, **options)
    training, labelled = default.stores[options["training_dataset"]], default.stores[target.name]
    assert not has_masks(training) and mask_arrays(training) == set()
    assert training.name == "embeddings-tiny-p2-nomasks"
    assert has_masks(labelled) and mask_arrays(labelled) == {"rle_bytes", "rle_offsets"}
    assert target.count("usam_semantic") == len(target)

    kept = {**options, "training_dataset": training_datasets(), "training_masks": "full"}
    with_masks = run("disc,square", dataset=target.name, **kept)
    assert has_masks(with_masks.stores[kept["training_dataset"]])
    assert statuses(with_masks)["embed target"] == "skipped"
    assert with_masks.stores[target.name] == labelled

    # an older run's store with masks: reused by the default, and grown in its own kind
    resumed = run("disc,square", dataset=target.name, **{**kept, "training_masks": "none"})
    assert set(statuses(resumed).values()) == {"skipped"}
    assert resumed.stores == with_masks.stores and resumed.head == with_masks.head
    grown = run("disc,square,ring", dataset=target.name, **{**kept, "training_masks": "none"})
    assert statuses(grown)["embed training"] == "ran"
    assert grown.stores[kept["training_dataset"]] == with_masks.stores[kept["training_dataset"]]
    assert has_masks(grown.stores[kept["training_dataset"]])
