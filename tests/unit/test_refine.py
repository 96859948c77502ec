"""Refining a head from a reviewer's corrections: what it learns, what it keeps, bad input."""

import copy
import math

import numpy as np
import pytest
import torch

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.refine import (
    CORRECTION_KINDS,
    Corrections,
    RefineConfig,
    corrections_loss,
    refine_head,
)
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT, PART, PlantedBags


def accuracies(head, bags: PlantedBags) -> tuple[float, float]:
    predicted = head.predict(bags.embeddings)
    expected = bags.expected_labels()
    objects, background = bags.kinds == OBJECT, bags.kinds == BACKGROUND
    return (
        float((predicted[objects] == expected[objects]).mean()),
        float((predicted[background] == 0).mean()),
    )


@pytest.fixture(scope="module")
def review(planted, planted_head):
    """A reviewer's corrections of training masks the head labelled with a class: 30 parts
    tagged wrong, 20 parts relabelled to the next class, 20 objects confirmed; and a replay of
    4,000 other training masks."""
    train, _ = planted
    x = train.embeddings.reshape(-1, train.embeddings.shape[-1])
    kinds = train.kinds.reshape(-1)
    labels = planted_head.predict(x)
    rng = np.random.default_rng(0)
    parts = rng.permutation(np.flatnonzero((kinds == PART) & (labels > 0)))
    objects = rng.permutation(np.flatnonzero((kinds == OBJECT) & (labels > 0)))
    wrong, relabel, ok = parts[:30], parts[30:50], objects[:20]
    index = np.concatenate([wrong, relabel, ok])
    targets = np.concatenate([np.full(30, -1), labels[relabel] % 4, labels[ok] - 1])
    corrections = Corrections(x[index], targets, ("wrong",) * 30 + ("relabel",) * 20 + ("ok",) * 20)
    others = np.setdiff1d(np.arange(len(x)), index)
    replay = x[rng.choice(others, 4000, replace=False)]
    return corrections, replay


@pytest.fixture(scope="module")
def refined(planted_head, review):
    corrections, replay = review
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # parts share their class's prototype with its objects: they need 60 epochs, not 40
        return refine_head(planted_head, corrections, replay, RefineConfig(epochs=60))
    finally:
        torch.set_num_threads(threads)


def test_wrong_tags_fall_below_the_threshold(planted_head, review, refined):
    corrections, _ = review
    wrong = corrections.embeddings[:30]
    assert (planted_head.predict(wrong) > 0).all()  # the head did call them a class
    assert (refined.predict(wrong) == 0).all()
    assert (refined.predict_proba(wrong).max(-1) < refined.threshold).all()


def test_relabels_move_to_the_new_class_and_confirmations_stay(review, refined):
    corrections, _ = review
    relabelled = refined.predict(corrections.embeddings[30:50])
    np.testing.assert_array_equal(relabelled, corrections.targets[30:50] + 1)
    confirmed = refined.predict(corrections.embeddings[50:])
    np.testing.assert_array_equal(confirmed, corrections.targets[50:] + 1)
    after = refined.metrics["refinement"]["after"]
    assert after["followed"] == 1.0 and after["changes_followed"] == 1.0
    assert refined.metrics["refinement"]["before"]["changes_followed"] == 0.0


def test_untouched_held_out_masks_are_labelled_as_before(planted, planted_head, refined):
    _, held_out = planted
    before, after = accuracies(planted_head, held_out), accuracies(refined, held_out)
    assert after[0] >= before[0] - 0.02, (before, after)
    assert after[1] >= before[1] - 0.02, (before, after)
    # parts are a ninth of the replay, and the wrong tags rightly take some along
    assert refined.metrics["refinement"]["after"]["replay_kept"] >= 0.9


def test_the_refined_head_is_new_and_records_what_was_done(planted_head, review, refined):
    _, replay = review
    assert refined is not planted_head and refined.model is not planted_head.model
    assert refined.stage == "refined" and planted_head.stage == "student"
    assert refined.classes == planted_head.classes
    assert refined.threshold == planted_head.threshold
    assert refined.train_config == planted_head.train_config
    assert refined.store_spec is planted_head.store_spec
    record = refined.provenance["refinement"]
    assert record["corrections"] == {"ok": 20, "wrong": 30, "relabel": 20}
    assert record["source_stage"] == "student" and record["replay"] == len(replay)
    assert record["config"] == {**record["config"], "seed": 0, "epochs": 60}
    per_class = record["per_class"]
    assert sum(c["wrong"] for c in per_class.values()) == 30
    assert sum(c["relabel"] for c in per_class.values()) == 20
    assert set(per_class) == set(planted_head.classes)
    assert "refinement" not in planted_head.provenance and "refinement" not in planted_head.metrics
    figures = refined.metrics["refinement"]
    assert figures["seconds"] > 0 and figures["steps"] == 60  # 70 corrections: a step an epoch
    assert figures["after"]["corrections_loss"] < figures["before"]["corrections_loss"]


def test_the_input_head_is_unchanged(planted_head, review):
    corrections, replay = review
    state = copy.deepcopy(planted_head.model.state_dict())
    refine_head(planted_head, corrections, replay, RefineConfig(epochs=2))
    for key, value in planted_head.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.requires_grad for p in planted_head.model.parameters())


def test_refinement_is_deterministic_for_a_seed_and_leaves_torchs_rng_alone(planted_head, review):
    corrections, replay = review
    config = RefineConfig(epochs=3)
    torch.manual_seed(5)
    expected_draw = torch.rand(1)
    torch.manual_seed(5)
    first = refine_head(planted_head, corrections, replay, config)
    assert torch.equal(torch.rand(1), expected_draw)
    second = refine_head(planted_head, corrections, replay, config)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    other = refine_head(planted_head, corrections, replay, RefineConfig(epochs=3, seed=1))
    assert not torch.equal(first.model.mlp[-1].weight, other.model.mlp[-1].weight)


def test_the_first_layer_is_frozen_only_when_asked(planted_head, review):
    corrections, replay = review
    tuned = refine_head(planted_head, corrections, replay, RefineConfig(epochs=2))
    frozen = refine_head(
        planted_head, corrections, replay, RefineConfig(epochs=2, tune_first_layer=False)
    )
    first = planted_head.model.mlp[0].weight
    assert torch.equal(frozen.model.mlp[0].weight, first)
    assert not torch.equal(tuned.model.mlp[0].weight, first)
    assert all(p.requires_grad for p in frozen.model.parameters())  # a head to train again
    assert not torch.equal(frozen.model.mlp[-1].weight, planted_head.model.mlp[-1].weight)


def test_without_a_replay_the_corrections_anchor_themselves(planted, planted_head, review):
    corrections, _ = review
    head = refine_head(planted_head, corrections, config=RefineConfig(epochs=60))
    assert (head.predict(corrections.embeddings[:30]) == 0).mean() >= 0.85  # 0.9 when written
    _, held_out = planted
    before, after = accuracies(planted_head, held_out), accuracies(head, held_out)
    assert min(a - b for a, b in zip(after, before, strict=True)) >= -0.02, (before, after)
    assert head.provenance["refinement"]["replay"] == 0
    assert "replay_kept" not in head.metrics["refinement"]["after"]  # no replay to keep


def test_float16_embeddings_refine_like_float32(planted_head, review):
    corrections, replay = review
    half = Corrections(
        corrections.embeddings.astype(np.float16), corrections.targets, corrections.kinds
    )
    head = refine_head(planted_head, half, replay.astype(np.float16), RefineConfig(epochs=2))
    assert head.predict(corrections.embeddings).shape == (len(corrections),)


# --- the corrections and their loss -------------------------------------------------------


def test_counts_and_per_class_counts():
    c = Corrections(
        np.zeros((4, 8), np.float32), np.array([0, -1, 1, 1]), ("ok", "wrong", "relabel", "ok")
    )
    assert c.counts() == {"ok": 2, "wrong": 1, "relabel": 1} and len(c) == 4
    assert c.per_class(["a", "b"], given=np.array([0, 1, 0, 1])) == {
        "a": {"ok": 1, "wrong": 0, "relabel": 0},
        "b": {"ok": 1, "wrong": 1, "relabel": 1},
    }
    assert c.per_class(["a", "b"])["b"]["wrong"] == 0  # without the head's classes: not counted
    assert CORRECTION_KINDS == ("ok", "wrong", "relabel")


def test_corrections_loss_known_answer():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    targets = torch.tensor([-1, 0, 1])
    changed = torch.tensor([True, False, True])
    ce_ok, ce_relabel = -math.log(0.75), -math.log(0.5)
    assert float(corrections_loss(logits[:1], targets[:1], changed[:1], 4.0)) == pytest.approx(0)
    expected = (1 * ce_ok + 4 * ce_relabel + 4 * 0.0) / 9
    assert float(corrections_loss(logits, targets, changed, 4.0)) == pytest.approx(expected)
    uniform = -0.5 * (math.log(0.75) + math.log(0.25)) - math.log(2)
    wrong_only = corrections_loss(logits[1:2], torch.tensor([-1]), torch.tensor([True]), 1.0)
    assert float(wrong_only) == pytest.approx(uniform)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "kinds", "message"),
    [
        ([0, 1], ("ok",), "2 targets but 1 kinds"),
        ([0], ("maybe",), "unknown correction kind"),
        ([2], ("wrong",), "wrong must have target -1"),
        ([-1], ("relabel",), "needs a class index"),
        ([-2], ("ok",), "needs a class index"),
        ([0.5], ("ok",), "integers"),
    ],
)
def test_corrections_refuse_inconsistent_targets_and_kinds(targets, kinds, message):
    with pytest.raises(ConfigError, match=message):
        Corrections(np.zeros((len(targets), 8), np.float32), np.array(targets), kinds)


def test_refuses_no_corrections_saying_how_to_make_some(planted_head):
    empty = Corrections(np.zeros((0, 1024), np.float32), np.zeros(0, np.int64), ())
    with pytest.raises(ConfigError, match="tag instances usam:wrong / usam:ok or edit"):
        refine_head(planted_head, empty)


def test_refuses_embeddings_of_another_size(planted_head):
    bad = Corrections(np.zeros((2, 256), np.float32), np.array([0, -1]), ("ok", "wrong"))
    with pytest.raises(ConfigError, match=r"\(2, 1024\) floats"):
        refine_head(planted_head, bad)
    good = Corrections(np.zeros((2, 1024), np.float32), np.array([0, -1]), ("ok", "wrong"))
    with pytest.raises(ConfigError, match=r"replay embeddings of shape \(R, 1024\)"):
        refine_head(planted_head, good, np.zeros((5, 256), np.float32))


def test_refuses_a_class_the_head_does_not_know(planted_head):
    bad = Corrections(np.zeros((1, 1024), np.float32), np.array([4]), ("relabel",))
    with pytest.raises(ConfigError, match=r"class indices 0\.\.3"):
        refine_head(planted_head, bad)


def test_refuses_non_finite_embeddings(planted_head):
    x = np.zeros((1, 1024), np.float32)
    x[0, 3] = np.nan
    with pytest.raises(ConfigError, match="NaN or infinite"):
        refine_head(planted_head, Corrections(x, np.array([0]), ("ok",)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"replay_batch_size": 0}, "replay_batch_size must be at least 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lambda_anchor": -1.0}, "lambda_anchor must be at least 0"),
        ({"change_weight": 0.0}, "change_weight must be positive"),
    ],
)
def test_refine_config_refuses_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        RefineConfig(**settings)
