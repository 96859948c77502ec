"""Label-free adaptation: the losses' known answers, the figures, the adapted head, bad input."""

import copy
import math

import numpy as np
import pytest
import torch

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.adapt import (
    MIN_TARGET_IMAGES,
    AdaptConfig,
    adapt_head,
    measure_target,
)
from fiftyone_usam.head.adapt_losses import (
    anchor_loss,
    balance_loss,
    consistency_loss,
    pseudo_label_loss,
    uniform_loss,
)
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT, PlantedBags
from fiftyone_usam.testing.shift import make_shifted_scenes

DIM = 256


def logits_of(*distributions):
    return torch.tensor(distributions, dtype=torch.float64).log()


# --- losses -----------------------------------------------------------------------------------


def test_consistency_loss_known_answer():
    a, b = logits_of([0.5, 0.5]), logits_of([0.25, 0.75])
    kl_ab = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_ba = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(consistency_loss(a, b)) == pytest.approx(0.5 * (kl_ab + kl_ba), rel=1e-9)
    assert float(consistency_loss(b, a)) == pytest.approx(0.5 * (kl_ab + kl_ba), rel=1e-9)


def test_consistency_loss_is_the_mean_over_masks_and_zero_when_views_agree():
    a = logits_of([0.5, 0.5], [0.9, 0.1])
    b = logits_of([0.25, 0.75], [0.9, 0.1])
    single = float(consistency_loss(a[:1], b[:1]))
    assert float(consistency_loss(a, b)) == pytest.approx(single / 2, rel=1e-9)
    assert float(consistency_loss(a, a + 3.0)) == pytest.approx(0.0, abs=1e-12)  # shift-free


def test_consistency_loss_trains_both_views_and_refuses_other_shapes():
    a = logits_of([0.5, 0.5]).requires_grad_()
    b = logits_of([0.2, 0.8]).requires_grad_()
    consistency_loss(a, b).backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        consistency_loss(torch.zeros(2, 3), torch.zeros(3, 3))


def test_uniform_loss_known_answer():
    p = [0.5, 0.25, 0.25]
    expected = -np.mean(np.log(p)) - math.log(3)
    assert float(uniform_loss(logits_of(p))) == pytest.approx(expected, rel=1e-9)
    assert float(uniform_loss(torch.zeros(4, 3))) == pytest.approx(0.0, abs=1e-12)
    assert float(uniform_loss(torch.zeros(0, 3))) == 0.0


def test_anchor_loss_is_the_reverse_kl_to_the_source():
    adapted, source = logits_of([0.9, 0.1]), logits_of([0.6, 0.4])
    expected = 0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4)
    assert float(anchor_loss(adapted, source)) == pytest.approx(expected, rel=1e-9)
    assert float(anchor_loss(source, source)) == pytest.approx(0.0, abs=1e-12)
    # sharpening on the source's class costs less than flattening a mask the source is sure of
    sure = logits_of([0.97, 0.01, 0.01, 0.01])
    sharper = float(anchor_loss(logits_of([0.999, 0.0003, 0.0003, 0.0004]), sure))
    flat = float(anchor_loss(torch.zeros(1, 4, dtype=torch.float64), sure))
    assert sharper < 0.1 < flat


def test_balance_loss_known_answer():
    logits = logits_of([0.8, 0.2], [0.4, 0.6])  # mean (0.6, 0.4)
    prior = torch.tensor([0.5, 0.5], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)
    assert float(balance_loss(logits, prior)) == pytest.approx(expected, rel=1e-9)
    assert float(balance_loss(torch.zeros(0, 2), prior)) == 0.0


def test_pseudo_label_loss_is_cross_entropy_and_zero_without_masks():
    logits = logits_of([0.7, 0.3], [0.2, 0.8])
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert float(pseudo_label_loss(logits, torch.tensor([0, 1]))) == pytest.approx(expected)
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = pseudo_label_loss(empty, torch.zeros(0, dtype=torch.int64))
    loss.backward()  # still differentiable
    assert float(loss.detach()) == 0.0


# --- figures ----------------------------------------------------------------------------------


def constant_head(bias, dim=8):
    """A head whose every mask gets ``softmax(bias)``: last layer weights zero."""
    model = MaskClassifier(len(bias), HeadConfig(hidden_dim=4, input_dim=dim, dropout=0.0))
    with torch.no_grad():
        model.mlp[-1].weight.zero_()
        model.mlp[-1].bias.copy_(torch.tensor(bias))
    return Head(model, [f"c{i}" for i in range(len(bias))])


def test_measure_target_known_figures():
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    sure = measure_target(constant_head([5.0, 0.0, 0.0, 0.0]), x, x[::-1].copy())
    p = np.exp([5.0, 0, 0, 0]) / np.exp([5.0, 0, 0, 0]).sum()
    assert sure.class_shares == (1.0, 0.0, 0.0, 0.0) and sure.background_share == 0.0
    assert sure.mean_entropy == pytest.approx(-(p * np.log(p)).sum() / math.log(4), rel=1e-5)
    assert sure.view_agreement == 1.0 and (sure.num_images, sure.num_masks) == (3, 15)
    unsure = measure_target(constant_head([0.0, 0.0, 0.0, 0.0]), x)
    assert unsure.background_share == 1.0 and unsure.class_shares == (0.0,) * 4
    assert unsure.mean_entropy == pytest.approx(1.0) and unsure.view_agreement is None
    assert unsure.as_dict()["class_shares"] == {"c0": 0.0, "c1": 0.0, "c2": 0.0, "c3": 0.0}
    assert "background 100.0%" in unsure.summary() and "views agree" not in unsure.summary()
    assert "views agree 100.0%" in sure.summary() and "c0 100.0%" in sure.summary()


def sign_head():
    """Two classes: logits ``10 * (relu(x), relu(-x))`` of a 1-d input (0 is background)."""
    model = MaskClassifier(2, HeadConfig(hidden_dim=2, input_dim=1, dropout=0.0, standardize=False))
    first, second, third, last = (m for m in model.mlp if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        for layer, gain in ((second, 1.0), (third, 1.0), (last, 10.0)):
            layer.weight.copy_(torch.eye(2) * gain)
        for layer in (first, second, third, last):
            layer.bias.zero_()
    return Head(model, ["plus", "minus"])


def test_measure_target_view_agreement_counts_matching_labels():
    x = np.array([[[1.0], [-1.0], [1.0], [0.0]]], np.float32)  # labels 1, 2, 1, 0
    views = np.array([[[1.0], [1.0], [0.0], [0.0]]], np.float32)  # labels 1, 1, 0, 0
    figures = measure_target(sign_head(), x, views)
    assert figures.view_agreement == 0.5
    assert figures.class_shares == (0.5, 0.25) and figures.background_share == 0.25


# --- adapt_head on a planted shift --------------------------------------------------------------


def accuracies(head: Head, bags: PlantedBags) -> tuple[float, float]:
    predicted = head.predict(bags.embeddings)
    expected = bags.expected_labels()
    objects, background = bags.kinds == OBJECT, bags.kinds == BACKGROUND
    return (
        float((predicted[objects] == expected[objects]).mean()),
        float((predicted[background] == 0).mean()),
    )


@pytest.fixture(scope="module")
def shifted():
    """A medium planted shift (s=0.9) and a head trained on its source (about 2 s)."""
    scenes = make_shifted_scenes(0.9, source_images_per_class=10, target_images_per_class=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        head = fit_head(
            scenes.source.embeddings,
            scenes.source.labels,
            scenes.source.classes,
            TrainConfig(epochs=40, patience=20, batch_size=16, seed=0, device="cpu"),
            HeadConfig(hidden_dim=64, input_dim=DIM),
        )
    finally:
        torch.set_num_threads(threads)
    return scenes, head


def test_adaptation_raises_object_accuracy_on_a_planted_shift(shifted):
    scenes, head = shifted
    objects_before, background_before = accuracies(head, scenes.target)
    adapted = adapt_head(head, scenes.target.embeddings, scenes.view)
    objects_after, background_after = accuracies(adapted, scenes.target)
    assert objects_before < 0.8  # the shift hurts the source head
    assert objects_after >= objects_before + 0.2, (objects_before, objects_after)
    assert background_after >= background_before - 0.02
    figures = adapted.metrics["adaptation"]
    assert figures["after"]["view_agreement"] > figures["before"]["view_agreement"]


def test_adapted_head_is_new_with_stage_and_provenance_and_the_source_is_untouched(shifted):
    scenes, head = shifted
    state = copy.deepcopy(head.model.state_dict())
    metrics, provenance = copy.deepcopy(head.metrics), copy.deepcopy(head.provenance)
    target = scenes.target.embeddings.astype(np.float16)  # as an EmbeddingStore holds them
    adapted = adapt_head(head, target, config=AdaptConfig(epochs=2))
    assert adapted is not head and adapted.model is not head.model
    assert head.stage == "student" and head.metrics == metrics and head.provenance == provenance
    for name, tensor in head.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert adapted.stage == "adapted" and adapted.classes == head.classes
    assert adapted.threshold == head.threshold and adapted.store_spec is head.store_spec
    assert not torch.equal(adapted.model.input_mean, head.model.input_mean)
    record = adapted.provenance["adaptation"]
    assert record["config"]["epochs"] == 2 and record["config"]["consistency"] is True
    assert record["num_images"] == 40 and record["num_masks"] == 40 * 100
    assert record["views"] is False and record["source_stage"] == "student"
    figures = adapted.metrics["adaptation"]
    assert set(figures["before"]) == set(figures["after"]) >= {"background_share", "mean_entropy"}
    assert figures["before"]["view_agreement"] is None and figures["trained"] is True
    assert adapted.metrics["student"] == head.metrics["student"]


def test_adaptation_is_deterministic_for_a_seed(shifted):
    scenes, head = shifted
    x, v = scenes.target.embeddings[:MIN_TARGET_IMAGES], scenes.view[:MIN_TARGET_IMAGES]
    torch.manual_seed(5)
    outside = torch.rand(1)
    torch.manual_seed(5)
    first = adapt_head(head, x, v, AdaptConfig(epochs=2, seed=3))
    assert torch.equal(torch.rand(1), outside)  # the caller's RNG is left alone
    second = adapt_head(head, x, v, AdaptConfig(epochs=2, seed=3))
    other = adapt_head(head, x, v, AdaptConfig(epochs=2, seed=4))
    a, b, c = (h.model.state_dict() for h in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_switches_turn_ingredients_off(shifted):
    scenes, head = shifted
    x = scenes.target.embeddings[:MIN_TARGET_IMAGES]
    off = AdaptConfig(target_statistics=False, pseudo_labels=False, consistency=False)
    unchanged = adapt_head(head, x, config=off)
    assert unchanged.metrics["adaptation"]["trained"] is False
    for name, tensor in head.model.state_dict().items():
        assert torch.equal(unchanged.model.state_dict()[name], tensor), name
    statistics_only = adapt_head(head, x, config=AdaptConfig(pseudo_labels=False))  # no views
    expected_mean = torch.as_tensor(x).reshape(-1, DIM).double().mean(0).float()
    torch.testing.assert_close(statistics_only.model.input_mean, expected_mean)
    torch.testing.assert_close(statistics_only.model.mlp[0].weight, head.model.mlp[0].weight)


def test_shifted_scenes_source_does_not_depend_on_the_strength_and_views_share_masks():
    weak = make_shifted_scenes(0.0, source_images_per_class=2, target_images_per_class=2, dim=16)
    strong = make_shifted_scenes(1.0, source_images_per_class=2, target_images_per_class=2, dim=16)
    np.testing.assert_array_equal(weak.source.embeddings, strong.source.embeddings)
    assert not np.allclose(weak.target.embeddings, strong.target.embeddings)
    assert strong.view.shape == strong.target.embeddings.shape
    assert not np.array_equal(strong.view, strong.target.embeddings)
    # the same masks, fresh noise: without noise the view is the target
    quiet = make_shifted_scenes(1.0, source_images_per_class=2, target_images_per_class=2, noise=0)
    np.testing.assert_array_equal(quiet.view, quiet.target.embeddings)
    with pytest.raises(ValueError, match="at least 0"):
        make_shifted_scenes(-0.5)


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_head():
    torch.manual_seed(0)
    return Head(MaskClassifier(3, HeadConfig(hidden_dim=8, input_dim=16)), ["a", "b", "c"])


def test_refuses_embeddings_of_another_size(small_head):
    with pytest.raises(ConfigError, match=r"shape \(N, d, 16\).*got \(8, 5, 32\)"):
        adapt_head(small_head, np.zeros((8, 5, 32), np.float32))
    with pytest.raises(ConfigError, match=r"shape \(N, d, 16\)"):
        adapt_head(small_head, np.zeros((40, 16), np.float32))
    with pytest.raises(ConfigError, match=r"shape \(N, d, 16\)"):
        measure_target(small_head, np.zeros((2, 5, 8), np.float32))


def test_refuses_views_of_another_shape(small_head):
    target = np.zeros((8, 5, 16), np.float32)
    with pytest.raises(ConfigError, match=r"the views' embeddings must have the target's shape"):
        adapt_head(small_head, target, np.zeros((8, 4, 16), np.float32))


def test_refuses_a_target_too_small_saying_how_many_are_needed(small_head):
    with pytest.raises(ConfigError, match=r"at least 8 target images, got 5: add 3 more"):
        adapt_head(small_head, np.zeros((5, 5, 16), np.float32))
    measure_target(small_head, np.zeros((1, 5, 16), np.float32))  # measuring needs one image


def test_refuses_non_finite_embeddings(small_head):
    target = np.zeros((8, 5, 16), np.float32)
    bad = target.copy()
    bad[3, 2, 1] = np.nan
    with pytest.raises(ConfigError, match=r"target embeddings hold NaN"):
        adapt_head(small_head, bad)
    with pytest.raises(ConfigError, match=r"views' embeddings hold NaN"):
        adapt_head(small_head, target, bad)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"confident_margin": 0.2, "uncertain_margin": 0.5}, "uncertain_margin <= confident"),
        ({"confident_margin": 1.0}, "confident_margin < 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lambda_anchor": -1.0}, "lambda_anchor"),
    ],
)
def test_adapt_config_refuses_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        AdaptConfig(**settings)
