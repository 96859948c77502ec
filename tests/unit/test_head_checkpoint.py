"""Head checkpoints: round trip, no pickle, atomic writes, and clear errors."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from fiftyone_usam.errors import CheckpointError, StoreError
from fiftyone_usam.head import checkpoint
from fiftyone_usam.head.checkpoint import load_head, save_head
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.layout import find_checkpoint
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from tests.fixtures.head import tiny_spec


def make_head(seed=0, classes=("cat", "dog")):
    torch.manual_seed(seed)
    model = MaskClassifier(len(classes), HeadConfig(hidden_dim=8))
    model.set_standardization(torch.randn(1024), torch.rand(1024) + 0.5)
    return Head(
        model,
        classes,
        threshold=0.7,
        stage="student",
        train_config=TrainConfig(epochs=3),
        store_spec=tiny_spec(),
        metrics={"student": {"val_bag_accuracy": 1.0, "val_loss": float("nan")}},
        provenance={"dataset": "d"},
    )


def test_round_trip_gives_the_same_predictions_and_metadata(tmp_path):
    head = make_head()
    path = save_head(head, tmp_path / "head")
    assert sorted(p.name for p in path.iterdir()) == ["head.json", "head.safetensors"]
    loaded = load_head(path)
    x = np.random.default_rng(0).standard_normal((6, 1024)).astype(np.float32)
    assert np.array_equal(loaded.predict_proba(x), head.predict_proba(x))
    assert loaded.classes == ("cat", "dog") and loaded.threshold == 0.7
    assert loaded.train_config == TrainConfig(epochs=3)
    assert loaded.model.config == HeadConfig(hidden_dim=8)
    assert loaded.store_spec == tiny_spec() and loaded.stage == "student"
    assert loaded.metrics["student"] == {"val_bag_accuracy": 1.0, "val_loss": None}
    metadata = json.loads((path / "head.json").read_text())
    assert metadata["background"]["convention"] == "threshold"
    assert metadata["background"]["label_id"] == 0
    assert metadata["provenance"] == {"dataset": "d"}


def test_loading_never_unpickles(tmp_path, monkeypatch):
    save_head(make_head(), tmp_path / "head")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_head(tmp_path / "head")


def test_an_out_directory_resolves_to_its_student_else_its_teacher(tmp_path):
    teacher = make_head(seed=1)
    teacher.stage = "teacher"
    save_head(teacher, tmp_path / "out" / "teacher")
    assert find_checkpoint(tmp_path / "out") == tmp_path / "out" / "teacher"
    save_head(make_head(seed=2), tmp_path / "out" / "student")
    assert find_checkpoint(tmp_path / "out") == tmp_path / "out" / "student"
    assert (
        find_checkpoint(tmp_path / "out" / "teacher" / "head.json") == tmp_path / "out" / "teacher"
    )
    assert load_head(tmp_path / "out").stage == "student"


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"no U-SAM head checkpoint at .*usam train --out"):
        load_head(tmp_path / "nothing")


def test_weights_that_do_not_match_their_metadata_are_refused(tmp_path):
    path = save_head(make_head(), tmp_path / "a")
    other = save_head(make_head(seed=5), tmp_path / "b")
    os.replace(other / "head.safetensors", path / "head.safetensors")
    with pytest.raises(CheckpointError, match=r"does not match its head\.json"):
        load_head(path)


def test_a_pickle_posing_as_weights_is_refused(tmp_path):
    path = save_head(make_head(), tmp_path / "a")
    torch.save(make_head().model.state_dict(), path / "head.safetensors")
    with pytest.raises(CheckpointError):
        load_head(path)


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    old = make_head(seed=1)
    path = save_head(old, tmp_path / "head")
    x = np.ones((2, 1024), np.float32)
    expected = old.predict_proba(x)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "fsync_files", crash)  # the last step before the swap
    with pytest.raises(KeyboardInterrupt):
        save_head(make_head(seed=2), path)
    assert np.array_equal(load_head(path).predict_proba(x), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]  # no temp left behind


def test_a_half_written_checkpoint_is_never_taken_for_one(tmp_path, monkeypatch):
    original = checkpoint._metadata

    def crash_after_weights(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_metadata", crash_after_weights)
    with pytest.raises(KeyboardInterrupt):
        save_head(make_head(), tmp_path / "out" / "student")
    monkeypatch.setattr(checkpoint, "_metadata", original)
    assert not (tmp_path / "out" / "student").exists()
    with pytest.raises(CheckpointError, match="no U-SAM head checkpoint"):
        load_head(tmp_path / "out")


def test_a_directory_that_is_not_a_checkpoint_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="exists and is not a U-SAM head checkpoint"):
        save_head(make_head(), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_newer_formats_and_bad_metadata_are_clear_errors(tmp_path):
    path = save_head(make_head(), tmp_path / "head")
    metadata = json.loads((path / "head.json").read_text())
    (path / "head.json").write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_head(path)
    bad_config = {**metadata, "head_config": {**metadata["head_config"], "width": 3}}
    (path / "head.json").write_text(json.dumps(bad_config))
    with pytest.raises(CheckpointError, match="unknown setting\\(s\\) 'width'"):
        load_head(path)
    (path / "head.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_head(path)


def test_a_loaded_head_refuses_embeddings_of_another_spec(tmp_path):
    loaded = load_head(save_head(make_head(), tmp_path / "head"))
    loaded.check_compatible(tiny_spec())
    with pytest.raises(StoreError, match="trained on embeddings of another kind"):
        loaded.check_compatible(tiny_spec(points_per_side=4))
