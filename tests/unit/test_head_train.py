"""Training from in-memory arrays: the planted-signal test, determinism, split, bad input."""

import numpy as np
import pytest
import torch

from fiftyone_usam.config import config_from_dict, config_to_dict
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.loop import choose_placement, make_bags, split_images
from fiftyone_usam.head.model import HeadConfig
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.head.training_set import TrainingDataError
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT, make_planted_bags
from tests.fixtures.head import FAST, SMALL_HEAD


def test_planted_signal_student_labels_objects_with_their_class_and_background_as_background(
    planted, planted_head
):
    """The issue's acceptance test: held-out images, through `head.predict`, default threshold."""
    _, held_out = planted
    predicted = planted_head.predict(held_out.embeddings)
    expected = held_out.expected_labels()
    objects = held_out.kinds == OBJECT
    background = held_out.kinds == BACKGROUND
    object_accuracy = (predicted[objects] == expected[objects]).mean()
    background_accuracy = (predicted[background] == 0).mean()
    assert object_accuracy >= 0.95, object_accuracy
    assert background_accuracy >= 0.95, background_accuracy
    assert planted_head.stage == "student"
    metrics = planted_head.metrics
    assert metrics["teacher"]["val_bag_accuracy"] == 1.0
    assert metrics["student"]["val_bag_accuracy"] == 1.0
    assert metrics["student"]["num_val"] == 12 and metrics["student"]["num_train"] == 52
    assert 0 < metrics["student"]["bad_mask_fraction"] < 1


def test_background_masks_end_near_uniform_and_objects_near_certain(planted, planted_head):
    _, held_out = planted
    confidence = planted_head.predict_proba(held_out.embeddings).max(-1)
    assert np.median(confidence[held_out.kinds == BACKGROUND]) < 0.35  # uniform is 0.25
    assert np.median(confidence[held_out.kinds == OBJECT]) > 0.95


def small_bags(seed=0, classes=3, per_class=6):
    return make_planted_bags(classes, per_class, masks_per_image=20, dim=1024, seed=seed)


def quick(**overrides):
    return TrainConfig(**{**FAST, "epochs": 3, **overrides})


def test_training_is_deterministic_on_the_cpu_and_leaves_torchs_rng_alone():
    bags = small_bags()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = fit_head(bags.embeddings, bags.labels, bags.classes, quick(), HeadConfig(**SMALL_HEAD))
    after = torch.rand(1)
    second = fit_head(bags.embeddings, bags.labels, bags.classes, quick(), HeadConfig(**SMALL_HEAD))
    assert torch.equal(before, after)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    third = fit_head(
        bags.embeddings, bags.labels, bags.classes, quick(seed=1), HeadConfig(**SMALL_HEAD)
    )
    assert not torch.equal(first.model.mlp[0].weight, third.model.mlp[0].weight)


def test_float16_embeddings_train_like_float32_ones():
    bags = small_bags()
    head = fit_head(
        bags.embeddings.astype(np.float16),
        bags.labels,
        bags.classes,
        quick(),
        HeadConfig(**SMALL_HEAD),
    )
    assert head.predict_proba(bags.embeddings[:1]).shape == (1, 20, 3)


def test_teacher_stage_returns_the_teacher_and_student_stage_needs_one():
    bags = small_bags()
    teacher = fit_head(
        bags.embeddings, bags.labels, bags.classes, quick(stage="teacher"), HeadConfig(**SMALL_HEAD)
    )
    assert teacher.stage == "teacher" and set(teacher.metrics) == {"teacher"}
    with pytest.raises(ConfigError, match="stage 'student' needs a trained teacher"):
        fit_head(bags.embeddings, bags.labels, bags.classes, quick(stage="student"))
    student = fit_head(
        bags.embeddings,
        bags.labels,
        bags.classes,
        quick(stage="student"),
        HeadConfig(**SMALL_HEAD),
        teacher=teacher,
    )
    assert student.stage == "student" and set(student.metrics) == {"student"}
    with pytest.raises(ConfigError, match="the teacher was trained on the classes"):
        fit_head(
            bags.embeddings, bags.labels, ("x", "y", "z"), quick(stage="student"), teacher=teacher
        )


def test_progress_counts_epochs_of_both_stages_and_jumps_on_early_stopping():
    bags = small_bags()
    calls = []
    fit_head(
        bags.embeddings,
        bags.labels,
        bags.classes,
        quick(epochs=4),
        HeadConfig(**SMALL_HEAD),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (8, 8) and [t for _, t in calls] == [8] * len(calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_split_is_stratified_seeded_and_keeps_a_training_image_per_class():
    targets = np.eye(3)[[0] * 10 + [1] * 5 + [2]]
    train, val = split_images(targets, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    held = targets[val].argmax(1).tolist()
    assert held.count(0) == 2 and held.count(1) == 1 and held.count(2) == 0
    assert np.array_equal(split_images(targets, 0.2, seed=0)[1], val)
    assert not np.array_equal(split_images(targets, 0.2, seed=1)[1], val)
    assert len(split_images(targets, 0.0, seed=0)[1]) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e, y: (e[:, :, :512], y), r"embeddings must have shape \(N, d, 1024\)"),
        (lambda e, y: (e, y[:-1]), "labels must be 18 integer class indices"),
        (lambda e, y: (e, y.astype(float)), "labels must be 18 integer class indices"),
        (lambda e, y: (e, np.where(y == 2, 7, y)), r"labels must index the 3 classes .* \[7\]"),
        (lambda e, y: (e, np.zeros_like(y)), r"show 1 class \(only 'class_0'\).*at least two"),
    ],
)
def test_bad_arrays_are_clear_errors(change, message):
    bags = small_bags()
    embeddings, labels = change(bags.embeddings.copy(), bags.labels.copy())
    with pytest.raises(TrainingDataError, match=message):
        fit_head(embeddings, labels, bags.classes, quick())


def test_nan_and_inf_embeddings_name_the_images():
    bags = small_bags()
    embeddings = bags.embeddings.copy()
    embeddings[4, 3, 10] = np.nan
    embeddings[11, 0, 0] = np.inf
    with pytest.raises(TrainingDataError, match=r"NaN or infinite .* 2 image\(s\): 4, 11"):
        fit_head(embeddings, bags.labels, bags.classes, quick())


def test_duplicate_class_names_and_bad_configs_are_refused():
    bags = small_bags()
    with pytest.raises(TrainingDataError, match="class names must be unique"):
        fit_head(bags.embeddings, bags.labels, ("a", "a", "b"), quick())
    with pytest.raises(ConfigError, match="stage must be teacher, student or both"):
        TrainConfig(stage="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)


def test_host_placement_trains_the_same_weights_as_the_set_on_the_device():
    """The fallback (batches gathered from host memory into staging buffers) changes nothing."""
    bags = small_bags()
    embeddings = bags.embeddings.astype(np.float16)
    heads = {
        placement: fit_head(
            embeddings,
            bags.labels,
            bags.classes,
            quick(batch_size=4, placement=placement),
            HeadConfig(**SMALL_HEAD),
        )
        for placement in ("device", "host")
    }
    device, host = heads["device"], heads["host"]
    for key, value in device.model.state_dict().items():
        assert torch.equal(value, host.model.state_dict()[key]), key
    for stage in ("teacher", "student"):
        assert device.metrics[stage]["data_on_device"] == 1.0
        assert host.metrics[stage]["data_on_device"] == 0.0
        assert device.metrics[stage]["mixed_precision"] == 0.0
        same = ("train_loss", "val_loss", "val_bag_accuracy", "epochs", "best_epoch")
        for name in same:
            assert device.metrics[stage][name] == host.metrics[stage][name], (stage, name)


def test_auto_placement_keeps_the_set_on_the_device_when_it_fits(caplog):
    cuda, cpu, mb = torch.device("cuda"), torch.device("cpu"), 2**20
    assert choose_placement("auto", cuda, 100 * mb, 10 * mb, 1000 * mb)[0] == "device"
    placement, why = choose_placement("auto", cuda, 100 * mb, 10 * mb, 120 * mb)
    assert placement == "host" and "do not fit" in why
    assert choose_placement("auto", cuda, 100 * mb, 0, None)[0] == "device"  # unknown: try it
    assert choose_placement("auto", cpu, 10**12, 0, 1)[0] == "device"  # host memory already
    assert choose_placement("host", cuda, 1, 0, 10**12)[0] == "host"
    assert choose_placement("device", cuda, 10**12, 0, 1)[0] == "device"
    bags = small_bags()
    targets = np.eye(3, dtype=np.float32)[bags.labels]
    with caplog.at_level("INFO", logger="fiftyone_usam.head.loop"):
        made = make_bags(bags.embeddings, targets, quick(), cpu, free_bytes=1)
    assert made.placement == "device" and made.compute_dtype == torch.float32
    assert "head training set" in caplog.text and "on cpu" in caplog.text


def test_bf16_autocast_trains_float32_weights_and_is_recorded():
    bags = small_bags()
    head = fit_head(
        bags.embeddings,
        bags.labels,
        bags.classes,
        quick(stage="teacher", precision="bf16"),
        HeadConfig(**SMALL_HEAD),
    )
    assert head.metrics["teacher"]["mixed_precision"] == 1.0
    assert np.isfinite(head.metrics["teacher"]["train_loss"])
    assert all(v.dtype == torch.float32 for v in head.model.state_dict().values())


def test_configs_recorded_before_precision_and_placement_still_load():
    old = {
        k: v
        for k, v in config_to_dict(TrainConfig()).items()
        if k not in ("precision", "placement")
    }
    loaded = config_from_dict(TrainConfig, old)
    assert loaded.precision == "auto" and loaded.placement == "auto"
    with pytest.raises(ConfigError, match="fp16 would need loss scaling: use bf16"):
        TrainConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="placement must be auto, device or host"):
        TrainConfig(placement="gpu")  # type: ignore[arg-type]
