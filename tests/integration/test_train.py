"""`train_head` and `usam train` on FiftyOne datasets: the real path and every kind of bad input."""

import logging

import numpy as np
import pytest
from click.testing import CliRunner

from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import CheckpointError, DatasetNotFoundError, StoreError
from fiftyone_usam.fiftyone_io.datasets import HEADS_KEY
from fiftyone_usam.fiftyone_io.training_set import load_training_set
from fiftyone_usam.head.checkpoint import load_head
from fiftyone_usam.head.training_set import TrainingDataError
from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.stages.train import train_head
from tests.fixtures.head import label, write_store

QUICK = {"epochs": 3, "seed": 0, "device": "cpu", "progress": False}


# -- the real path: tiny SAM embeddings ------------------------------------------------------


def test_train_head_on_an_embedded_dataset_writes_checkpoints_that_load_and_predict(
    embedded_training_dataset, tmp_path
):
    dataset, store = embedded_training_dataset
    report = train_head(dataset.name, out=tmp_path / "head", **QUICK)  # store found on dataset
    assert set(report.checkpoints) == {"teacher", "student"}
    assert report.classes == ("disc", "square") and report.num_images == 6
    assert report.skipped == {}
    assert "trained on 6 images of 2 classes (disc, square)" in report.summary()

    head = load_head(tmp_path / "head")
    assert head.stage == "student" and head.classes == ("disc", "square")
    spec = EmbeddingStore.open(store).spec
    assert head.store_spec == spec
    head.check_compatible(spec)
    assert set(head.metrics) == {"teacher", "student"}
    assert head.provenance["dataset"] == dataset.name
    assert head.provenance["label_field"] == "ground_truth"
    embeddings = EmbeddingStore.open(store).load_embeddings(dataset.values("id"))
    probs = head.predict_proba(embeddings.reshape(-1, 1024))
    assert probs.shape == (6 * 4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    labels = head.predict(embeddings[0])
    assert labels.shape == (4,) and set(labels.tolist()) <= {0, 1, 2}
    assert load_head(tmp_path / "head" / "teacher").stage == "teacher"

    dataset.reload()
    (entry,) = [
        e for e in dataset.info[HEADS_KEY] if e["path"] == str((tmp_path / "head").resolve())
    ]
    assert entry["stages"] == ["student", "teacher"] and entry["classes"] == ["disc", "square"]


def test_usam_train_cli_writes_a_checkpoint_that_loads_back(embedded_training_dataset, tmp_path):
    from fiftyone_usam.cli.train import train_command

    dataset, store = embedded_training_dataset
    args = ["--dataset", dataset.name, "--label-field", "ground_truth", "--store", str(store)]
    args += ["--out", str(tmp_path / "head"), "--epochs", "2", "--seed", "1", "--device", "cpu"]
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained on 6 images of 2 classes" in result.output
    assert "student: held-out bag accuracy" in result.output
    head = load_head(tmp_path / "head")
    assert head.classes == ("disc", "square") and head.train_config.seed == 1
    assert head.train_config.epochs == 2
    assert head.predict(np.zeros((3, 1024), np.float32)).shape == (3,)
    # the training switches reach the config; the host placement learns the same weights
    import torch

    again = [*args[:-8], "--out", str(tmp_path / "host"), "--epochs", "2", "--seed", "1"]
    again += ["--device", "cpu", "--precision", "fp32", "--placement", "host"]
    result = CliRunner().invoke(train_command, again, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    host = load_head(tmp_path / "host")
    assert (host.train_config.precision, host.train_config.placement) == ("fp32", "host")
    assert host.metrics["student"]["data_on_device"] == 0.0
    for name, value in head.model.state_dict().items():
        assert torch.equal(value, host.model.state_dict()[name]), name


def test_cli_bad_input_exits_1_with_the_librarys_message(embedded_training_dataset, tmp_path):
    """Through the `usam` group, as users run it (registered here until cli/__init__ lists it)."""
    from fiftyone_usam.cli import main
    from fiftyone_usam.cli.train import train_command

    if "train" not in main.commands:
        main.add_command(train_command)
    dataset, store = embedded_training_dataset
    runner = CliRunner()
    result = runner.invoke(
        main, ["train", "--dataset", dataset.name, "--label-field", "nope", "--store", str(store)]
    )
    assert result.exit_code == 1
    assert "Error: field 'nope' of dataset" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        main,
        ["train", "--dataset", dataset.name, "--stage", "student", "--out", str(tmp_path / "x")],
    )
    assert result.exit_code == 1
    assert "stage 'student' distils from the teacher" in result.output


def test_teacher_then_student_in_two_runs(embedded_training_dataset, tmp_path):
    dataset, store = embedded_training_dataset
    first = train_head(dataset, store=store, out=tmp_path / "h", stage="teacher", **QUICK)
    assert set(first.checkpoints) == {"teacher"}
    assert load_head(tmp_path / "h").stage == "teacher"
    second = train_head(dataset, store=store, out=tmp_path / "h", stage="student", **QUICK)
    assert set(second.checkpoints) == {"student"}
    student = load_head(tmp_path / "h")
    assert student.stage == "student" and set(student.metrics) == {"teacher", "student"}
    # the same teacher again is a no-op; a new teacher makes the old student stale: removed
    again = train_head(dataset, store=store, out=tmp_path / "h", stage="teacher", **QUICK)
    assert again.already_trained and not again.checkpoints
    assert load_head(tmp_path / "h").stage == "student"
    train_head(dataset, store=store, out=tmp_path / "h", stage="teacher", overwrite=True, **QUICK)
    assert load_head(tmp_path / "h").stage == "teacher"


def test_student_stage_refuses_a_teacher_of_other_classes(embedded_training_dataset, tmp_path):
    dataset, store = embedded_training_dataset
    train_head(dataset, store=store, out=tmp_path / "h", stage="teacher", **QUICK)
    with pytest.raises(CheckpointError, match=r"knows the classes \['disc', 'square'\]"):
        train_head(
            dataset,
            store=store,
            out=tmp_path / "h",
            stage="student",
            classes="disc,square,star",
            **QUICK,
        )


def test_config_files_are_read_strictly(embedded_training_dataset, tmp_path):
    from fiftyone_usam.errors import ConfigError

    dataset, store = embedded_training_dataset
    (tmp_path / "train.yaml").write_text("lambda_uncertainty: 0.3\nepochs: 50\n")
    (tmp_path / "head.yaml").write_text("hidden_dim: 16\n")
    train_head(
        dataset,
        store=store,
        out=tmp_path / "h",
        config=tmp_path / "train.yaml",
        head_config=tmp_path / "head.yaml",
        **QUICK,
    )
    head = load_head(tmp_path / "h")
    assert head.train_config.lambda_uncertainty == 0.3
    assert head.train_config.epochs == 3  # the explicit argument wins
    assert head.model.config.hidden_dim == 16
    (tmp_path / "bad.yaml").write_text("lamda_uncertainty: 0.3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        train_head(dataset, store=store, out=tmp_path / "h", config=tmp_path / "bad.yaml", **QUICK)


# -- the training set: fast checks on synthetic stores --------------------------------------


def test_classes_come_sorted_from_the_labels_or_in_ontology_order(labelled_store):
    dataset, store = labelled_store(["dog", "cat", "dog", "cat"])
    data = load_training_set(dataset, label_field="ground_truth", store=store)
    assert data.classes == ("cat", "dog") and data.labels.tolist() == [1, 0, 1, 0]
    assert data.embeddings.shape == (4, 4, 1024) and data.embeddings.dtype == np.float16
    ontology = load_ontology("dog,cat,bird")
    data = load_training_set(dataset, label_field="ground_truth", store=store, ontology=ontology)
    assert data.classes == ("dog", "cat", "bird") and data.labels.tolist() == [0, 1, 0, 1]


def test_samples_missing_from_the_store_are_skipped_with_a_warning_naming_them(
    labelled_store, caplog
):
    dataset, store = labelled_store(["dog", "cat", "dog", "cat"])
    extra = dataset.add_samples([dataset.first().copy(), dataset.first().copy()])
    label(dataset, ["dog", "cat", "dog", "cat", "dog", "cat"])
    with caplog.at_level(logging.WARNING):
        data = load_training_set(dataset, label_field="ground_truth", store=store)
    assert len(data.sample_ids) == 4 and set(data.skipped) == set(extra)
    message = next(r.getMessage() for r in caplog.records if "skipping" in r.getMessage())
    assert "skipping 2 sample(s)" in message and "not in the EmbeddingStore" in message
    assert all(sample_id in message for sample_id in extra)


def test_unlabelled_samples_are_skipped_with_a_warning(labelled_store, caplog):
    dataset, store = labelled_store(["dog", None, "cat", "dog"])
    with caplog.at_level(logging.WARNING):
        data = load_training_set(dataset, label_field="ground_truth", store=store)
    assert len(data.sample_ids) == 3
    assert list(data.skipped.values()) == ["no ground_truth label"]
    assert "skipping 1 sample(s)" in caplog.text and "have no label" in caplog.text


def test_a_store_holding_none_of_the_samples_is_an_error(labelled_store, tmp_path):
    dataset, _ = labelled_store(["dog", "cat"])
    other = write_store(tmp_path / "other", ["a" * 24], np.zeros((1, 4, 1024), np.float32))
    with pytest.raises(
        StoreError, match=r"none of the 2 labelled samples is in the EmbeddingStore"
    ):
        load_training_set(dataset, label_field="ground_truth", store=other)


@pytest.mark.parametrize(
    "names, ontology, message",
    [
        ([None, None], None, "no sample has a ground_truth label"),
        (["dog", "dog", "dog"], None, r"show 1 class \(only 'dog'\).*at least two"),
        (["dog", "dog"], "dog,cat", r"show 1 class \(only 'dog'\)"),
        (
            ["dog", "cow", "cow", "cat"],
            "dog,cat",
            r"labels not in the ontology \(dog, cat\): 'cow' \(2 samples\)",
        ),
    ],
)
def test_label_sets_that_cannot_train_a_head_are_clear_errors(
    labelled_store, names, ontology, message
):
    dataset, store = labelled_store(names)
    ontology = load_ontology(ontology) if ontology else None
    with pytest.raises(TrainingDataError, match=message):
        load_training_set(dataset, label_field="ground_truth", store=store, ontology=ontology)


def test_classes_without_images_are_a_warning(labelled_store, caplog):
    dataset, store = labelled_store(["dog", "cat"])
    with caplog.at_level(logging.WARNING):
        load_training_set(
            dataset, label_field="ground_truth", store=store, ontology=load_ontology("dog,cat,owl")
        )
    assert "no training image of 1 class(es): owl" in caplog.text


def test_nan_and_inf_embeddings_in_the_store_name_the_samples(labelled_store):
    embeddings = np.random.default_rng(0).standard_normal((4, 4, 1024)).astype(np.float32)
    embeddings[1, 2, 3] = np.nan
    embeddings[3, 0, 0] = 1e6  # overflows float16 to inf
    dataset, store = labelled_store(["dog", "cat", "dog", "cat"], embeddings)
    ids = dataset.values("id")
    with pytest.raises(StoreError, match=rf"NaN or infinite .* 2 image\(s\): {ids[1]}, {ids[3]}"):
        load_training_set(dataset, label_field="ground_truth", store=store)


def test_a_field_that_is_not_a_classification_is_a_clear_error(labelled_store):
    import fiftyone as fo

    dataset, store = labelled_store(["dog", "cat"])
    dataset.set_values("boxes", [fo.Detections(detections=[])] * 2)
    with pytest.raises(DatasetNotFoundError, match=r"'boxes' .* is not a fo.Classification field"):
        load_training_set(dataset, label_field="boxes", store=store)
    with pytest.raises(DatasetNotFoundError, match=r"fo.Classification fields here: ground_truth"):
        load_training_set(dataset, label_field="missing", store=store)


def test_no_recorded_store_says_to_embed_first(labelled_store, tmp_path):
    dataset, _ = labelled_store(["dog", "cat"])
    with pytest.raises(StoreError, match=r"no EmbeddingStore is recorded .*`usam embed --dataset"):
        train_head(dataset, out=tmp_path / "h", **QUICK)


def test_training_from_a_synthetic_store_end_to_end(labelled_store, tmp_path):
    """Planted bags through a real store and dataset: the head learns them."""
    from fiftyone_usam.testing.planted import OBJECT, make_planted_bags

    bags = make_planted_bags(2, 12, masks_per_image=16, seed=3)
    dataset, store = labelled_store([bags.classes[c] for c in bags.labels], bags.embeddings)
    report = train_head(
        dataset, store=store.path, out=tmp_path / "h", **{**QUICK, "epochs": 40, "batch_size": 4}
    )
    head = load_head(report.out)
    predicted = head.predict(bags.embeddings)
    objects = bags.kinds == OBJECT
    assert (predicted[objects] == (bags.labels[:, None] + 1).repeat(16, 1)[objects]).mean() > 0.9


def test_training_on_superclasses(labelled_store, tmp_path):
    from fiftyone_usam.ontology import ontology_from_dict

    names = ["cat", "dog", "car", "bus"] * 3
    dataset, store = labelled_store(names)
    groups = ontology_from_dict(
        {
            "classes": ["cat", "dog", "car", "bus"],
            "superclasses": {"animals": ["cat", "dog"], "vehicles": ["car", "bus"]},
        }
    )
    report = train_head(
        dataset, store=store.path, classes=groups, superclasses=True, out=tmp_path / "head", **QUICK
    )
    assert report.classes == ("animals", "vehicles")
    assert load_head(tmp_path / "head").classes == ("animals", "vehicles")
    with pytest.raises(TrainingDataError, match="needs an ontology that groups the classes"):
        train_head(
            dataset,
            store=store.path,
            classes="cat,dog,car,bus",
            superclasses=True,
            out=tmp_path / "other",
            **QUICK,
        )


# -- a store embedded with masks="none" ----------------------------------------------------


def test_a_store_without_masks_trains_the_same_head_as_one_with_masks(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    """Training reads only the embeddings: the store without masks (found on the dataset by
    `usam train`) gives the weights the store with masks gives, and the head fits both."""
    import torch

    from fiftyone_usam.cli import main
    from fiftyone_usam.stages.embed import embed

    dataset = make_dataset(image_files)
    label(dataset, ["disc", "square"] * 3)
    common = dict(checkpoint=tiny_checkpoint, points_per_side=2, device="cpu", progress=False)
    full = embed(dataset, store=tmp_path / "full", **common).store
    none = embed(dataset, store=tmp_path / "none", masks="none", **common).store  # the newest

    args = ["train", "--dataset", dataset.name, "--out", tmp_path / "from-none"]
    args += ["--epochs", 3, "--seed", 0, "--device", "cpu"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained on 6 images of 2 classes" in result.output
    train_head(dataset, store=full, out=tmp_path / "from-full", **QUICK)

    from_none, from_full = load_head(tmp_path / "from-none"), load_head(tmp_path / "from-full")
    assert from_none.provenance["store"] == str(none.resolve())
    assert from_none.store_spec == EmbeddingStore.open(none).spec
    assert not from_none.store_spec.has_masks
    from_none.check_compatible(EmbeddingStore.open(full).spec)  # labels from a store with masks
    for name, value in from_full.model.state_dict().items():
        torch.testing.assert_close(from_none.model.state_dict()[name], value, rtol=0, atol=0)
