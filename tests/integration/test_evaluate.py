"""`evaluate` on planted predictions whose scores are known by hand, and `usam evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.writer import FieldExistsError
from fiftyone_usam.stages.evaluate import evaluate

CAT = (slice(0, 5), slice(0, 5))  # rows, cols of a 10x10 image
DOG = (slice(5, 10), slice(5, 10))
DOG_SHIFTED_1 = (slice(5, 10), slice(4, 9))
DOG_SHIFTED_3 = (slice(5, 10), slice(2, 7))

# semantic: cat exact (its bottom row is a 255 band in the ground truth), dog one column left
BG_IOU = 45 / 55  # bg: 50 true px, 5 taken by the dog's shift, 5 of the dog's missed column
DOG_IOU = 20 / 30
MIOU = (BG_IOU + 1.0 + DOG_IOU) / 3


def region_map(regions: dict[int, tuple[slice, slice]]) -> np.ndarray:
    out = np.zeros((10, 10), dtype=np.uint8)
    for value, (rows, cols) in regions.items():
        out[rows, cols] = value
    return out


def detection(label, region, confidence=None):
    import fiftyone as fo

    rows, cols = region
    box = [cols.start / 10, rows.start / 10, (cols.stop - cols.start) / 10, 0.5]
    mask = np.ones((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    return fo.Detection(label=label, bounding_box=box, mask=mask, confidence=confidence)


@pytest.fixture
def planted(make_dataset, tmp_path):
    """Two 10x10 images with cat/dog ground truth and planted predictions (ids swapped)."""
    import fiftyone as fo

    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((10, 10, 3), 128, np.uint8)).save(path)
        paths.append(path)
    dataset = make_dataset(paths)
    gt = region_map({1: CAT, 2: DOG})
    gt[4, 0:5] = 255  # a VOC-style boundary band
    for sample in dataset:
        sample["ground_truth"] = fo.Segmentation(mask=gt)
        sample["ground_truth_instances"] = fo.Detections(
            detections=[detection("cat", CAT), detection("dog", DOG)]
        )
        # the prediction numbers its classes the other way round: 1 = dog, 2 = cat
        sample["usam_semantic"] = fo.Segmentation(mask=region_map({2: CAT, 1: DOG_SHIFTED_1}))
        sample["usam_instances"] = fo.Detections(
            detections=[detection("cat", CAT, 0.9), detection("dog", DOG_SHIFTED_3, 0.8)]
        )
        sample.save()
    dataset.mask_targets = {
        "ground_truth": {0: "background", 1: "cat", 2: "dog", 255: "boundary"},
        "usam_semantic": {0: "background", 1: "dog", 2: "cat"},
    }
    dataset.save()
    return dataset


def test_scores_match_the_hand_computed_answer(planted, tmp_path):
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth", report=tmp_path / "r")
    assert report.classes == ["background", "dog", "cat"]
    assert report.per_class_iou == {
        "background": pytest.approx(BG_IOU),
        "dog": pytest.approx(DOG_IOU),
        "cat": 1.0,
    }
    assert report.mean_iou == pytest.approx(MIOU)
    assert report.mean_iou_objects == pytest.approx((1.0 + DOG_IOU) / 2)
    # instances: the cat matches, the dog shifted by 3 columns (mask IoU 1/4) does not
    assert report.map50 == pytest.approx(0.5)
    assert report.per_class_ap == {"cat": 1.0, "dog": 0.0}
    assert report.samples == 2 and report.skipped == {}
    # the dog's 3 px shift off a 5x5 square: its boundary pixels match only where rows meet
    assert 0 < report.boundary["f1"] < 1


def test_stored_as_fiftyone_evaluations_with_miou_in_their_metrics(planted):
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth")
    assert {"usam_eval", "usam_eval_det"} <= set(planted.list_evaluations())
    seg = planted.load_evaluation_results("usam_eval")
    assert seg.metrics()["mIoU"] == pytest.approx(MIOU)
    assert seg.metrics()["boundary_f1"] == pytest.approx(report.boundary["f1"])
    # FiftyOne's own pixel confusion matrix is the one we scored (ids differed: aligned maps)
    np.testing.assert_array_equal(seg.pixel_confusion_matrix, report.confusion_matrix)
    assert planted.mask_targets["usam_eval_gt"] == {0: "background", 1: "dog", 2: "cat"}
    det = planted.load_evaluation_results("usam_eval_det")
    assert det.mAP() == pytest.approx(0.5)
    (entry,) = planted.info["usam_evaluations"]
    assert entry["eval_key"] == "usam_eval" and entry["mean_iou"] == pytest.approx(MIOU)


def test_same_ids_are_evaluated_in_place(planted):
    planted.mask_targets["usam_semantic"] = {0: "background", 1: "cat", 2: "dog"}
    planted.save()
    for sample in planted:  # renumber the prediction like the ground truth
        sample.usam_semantic = type(sample.usam_semantic)(
            mask=region_map({1: CAT, 2: DOG_SHIFTED_1})
        )
        sample.save()
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth")
    assert not planted.has_field("usam_eval_gt")
    assert report.mean_iou == pytest.approx(MIOU)
    seg = planted.load_evaluation_results("usam_eval")
    np.testing.assert_array_equal(seg.pixel_confusion_matrix, report.confusion_matrix)


def test_instance_ground_truth_is_rendered_to_a_semantic_map(planted):
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth_instances")
    # no ignore band in instances: the cat is still exact, the rest as before
    assert report.mean_iou == pytest.approx(MIOU)
    assert report.map50 == pytest.approx(0.5)


def test_existing_evaluations_are_kept_unless_overwrite(planted):
    evaluate(planted, pred_field="usam", gt_field="ground_truth")
    with pytest.raises(FieldExistsError, match="--overwrite"):
        evaluate(planted, pred_field="usam", gt_field="ground_truth")
    again = evaluate(planted, pred_field="usam", gt_field="ground_truth", overwrite=True)
    assert again.mean_iou == pytest.approx(MIOU)
    other = evaluate(planted, pred_field="usam", gt_field="ground_truth", eval_key="second")
    assert {"usam_eval", "second"} <= set(planted.list_evaluations())
    assert other.eval_key == "second"


def test_bad_fields_are_clear_errors(planted):
    with pytest.raises(ConfigError, match=r"nothing_semantic.*Label fields"):
        evaluate(planted, pred_field="nothing", gt_field="ground_truth")
    with pytest.raises(ConfigError, match="ground-truth field 'filepath'"):
        evaluate(planted, pred_field="usam", gt_field="filepath")
    planted.mask_targets.pop("ground_truth")
    planted.save()
    with pytest.raises(ConfigError, match="mask_targets"):
        evaluate(planted, pred_field="usam", gt_field="ground_truth")


def test_class_agnostic_prediction_scores_foreground_iou(planted):
    import fiftyone as fo

    for sample in planted:
        fg = region_map({1: CAT})
        fg[DOG] = 1
        fg[0, :] = 1  # 10 false foreground pixels (5 on the cat already)
        sample["otsu_semantic"] = fo.Segmentation(mask=fg)
        sample.save()
    planted.mask_targets["otsu_semantic"] = {0: "background", 1: "foreground"}
    planted.save()
    report = evaluate(planted, pred_field="otsu", gt_field="ground_truth")
    assert report.classes == ["background", "foreground"]
    # counted objects: cat 20 (5 ignored) + dog 25 = 45, all found; 5 false positives on row 0
    assert report.foreground_iou == pytest.approx(45 / 50)
    assert report.map50 is None and report.det_eval_key is None
    assert any("class-agnostic" in note for note in report.notes)


def test_report_files(planted, tmp_path):
    out = tmp_path / "report"
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth", report=out)
    data = json.loads((out / "report.json").read_text())
    assert data["mean_iou"] == pytest.approx(MIOU) and data["map50"] == pytest.approx(0.5)
    assert data["report_dir"] == str(out.resolve()) == report.report_dir
    markdown = (out / "report.md").read_text()
    assert f"{100 * MIOU:.2f}" in markdown and "| dog |" in markdown
    for name in ("per_class_iou.png", "confusion_matrix.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100
    assert not list(out.glob("*.tmp"))


def test_cli_on_a_predicted_dataset(
    make_dataset, image_files, tiny_head, tiny_checkpoint, tmp_path
):
    """`usam evaluate` on pipeline predictions scored against themselves: every figure is 1."""
    import fiftyone as fo
    from click.testing import CliRunner

    import fiftyone_usam as usam
    from fiftyone_usam.cli import main

    dataset = make_dataset(image_files)
    usam.predict(
        dataset,
        head=tiny_head,
        checkpoint=tiny_checkpoint,
        threshold=0.0,
        device="cpu",
        progress=False,
    )
    for sample in dataset:
        sample["truth"] = fo.Segmentation(mask=sample.usam_semantic.mask)
        sample["truth_instances"] = sample.usam_instances.copy()
        sample.save()
    dataset.mask_targets["truth"] = dataset.mask_targets["usam_semantic"]
    dataset.save()
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--dataset",
            dataset.name,
            "--pred-field",
            "usam",
            "--gt-field",
            "truth",
            "--report",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mIoU 100.00" in result.output and "mAP50 100.00" in result.output
    assert "fiftyone app launch" in result.output or dataset.name in result.output
    assert {"usam_eval", "usam_eval_det"} <= set(dataset.list_evaluations())
    assert (out / "confusion_matrix.png").is_file() and (out / "per_class_iou.png").is_file()
    again = CliRunner().invoke(
        main, ["evaluate", "--dataset", dataset.name, "--pred-field", "usam", "--gt-field", "truth"]
    )
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_evaluate_operator_shows_miou_and_map(plugins_dir, planted):
    import fiftyone.operators as foo

    from tests.integration.test_plugin import manifest

    uri = f"{manifest()['name']}/evaluate"
    params = {"pred_field": "usam", "gt_field": "ground_truth", "iou": 0.5}
    result = foo.execute_operator(uri, ctx={"dataset": planted, "params": params})
    assert result.error is None, result.error
    assert result.result["mIoU"] == f"{100 * MIOU:.2f}"
    assert result.result["mAP50"] == "50.00"
    assert "usam_eval" in planted.list_evaluations()


def test_ground_truth_can_be_scored_by_superclass(planted, tmp_path):
    """A head trained on superclasses: cat and dog are both 'animals' in the ground truth."""
    import fiftyone as fo

    for sample in planted:
        animals = region_map({1: CAT})
        animals[DOG_SHIFTED_1] = 1
        sample["super_semantic"] = fo.Segmentation(mask=animals)
        sample["super_instances"] = fo.Detections(
            detections=[detection("animals", CAT, 0.9), detection("animals", DOG, 0.7)]
        )
        sample.save()
    planted.mask_targets["super_semantic"] = {0: "background", 1: "animals"}
    planted.save()
    groups = tmp_path / "groups.yaml"
    groups.write_text("classes: [cat, dog]\nsuperclasses:\n  animals: [cat, dog]\n")
    report = evaluate(planted, pred_field="super", gt_field="ground_truth", groups=groups)
    assert report.classes == ["background", "animals"]
    # animals: 20 (cat, 5 ignored) + 25 (dog) true px; predicted cat exact + dog one column off
    assert report.per_class_iou["animals"] == pytest.approx(40 / 50)
    assert report.per_class_iou["background"] == BG_IOU
    assert report.map50 == pytest.approx(1.0)  # both animals found
    labels = planted.distinct("super_eval_gt_instances.detections.label")
    assert labels == ["animals"]
    assert planted.distinct("ground_truth_instances.detections.label") == ["cat", "dog"]


def test_cli_groups_scores_by_superclass(planted, tmp_path):
    import fiftyone as fo
    from click.testing import CliRunner

    from fiftyone_usam.cli import main

    for sample in planted:
        animals = region_map({1: CAT})
        animals[DOG_SHIFTED_1] = 1
        sample["super_semantic"] = fo.Segmentation(mask=animals)
        sample.save()
    planted.mask_targets["super_semantic"] = {0: "background", 1: "animals"}
    planted.save()
    groups = tmp_path / "groups.yaml"
    groups.write_text("classes: [cat, dog]\nsuperclasses:\n  animals: [cat, dog]\n")
    args = ["evaluate", "--dataset", planted.name, "--pred-field", "super"]
    result = CliRunner().invoke(
        main, [*args, "--gt-field", "ground_truth", "--groups", str(groups)]
    )
    assert result.exit_code == 0, result.output
    assert f"mIoU {100 * (BG_IOU + 40 / 50) / 2:.2f}" in result.output


def test_a_field_that_is_not_ours_is_never_deleted(planted):
    import fiftyone as fo

    for sample in planted:
        sample["voc_gt"] = fo.Segmentation(mask=region_map({1: CAT}))
        sample.save()
    with pytest.raises(FieldExistsError, match="'voc_gt' is not from a U-SAM evaluation"):
        evaluate(planted, pred_field="usam", gt_field="ground_truth", eval_key="voc")
    assert planted.count("voc_gt") == 2
    # the evaluation's own aligned maps are replaced when it is redone
    evaluate(planted, pred_field="usam", gt_field="ground_truth")
    assert planted.count("usam_eval_gt") == 2
    evaluate(planted, pred_field="usam", gt_field="ground_truth", overwrite=True)
    assert planted.count("usam_eval_gt") == 2


def test_labels_spelled_differently_still_match_for_map(planted):
    """Ground truth says "pottedplant" (VOC's spelling), the head "potted plant"."""
    import fiftyone as fo

    for sample in planted:
        sample["ground_truth_instances"] = fo.Detections(
            detections=[detection("cat", CAT), detection("pottedplant", DOG)]
        )
        sample["usam_instances"] = fo.Detections(
            detections=[detection("cat", CAT, 0.9), detection("potted plant", DOG, 0.8)]
        )
        sample.save()
    planted.mask_targets["ground_truth"] = {0: "background", 1: "cat", 2: "pottedplant"}
    planted.mask_targets["usam_semantic"] = {0: "background", 1: "potted plant", 2: "cat"}
    planted.save()
    report = evaluate(planted, pred_field="usam", gt_field="ground_truth")
    assert report.map50 == pytest.approx(1.0)
    assert report.mean_iou == pytest.approx(MIOU)
    assert planted.distinct("ground_truth_instances.detections.label") == ["cat", "pottedplant"]


def test_box_only_predictions_are_a_clear_error(planted):
    import fiftyone as fo

    for sample in planted:
        sample["boxes"] = fo.Detections(
            detections=[fo.Detection(label="cat", bounding_box=[0, 0, 0.5, 0.5], confidence=1.0)]
        )
        sample.save()
    with pytest.raises(ConfigError, match="no instance mask"):
        evaluate(planted, pred_field="boxes", gt_field="ground_truth")
