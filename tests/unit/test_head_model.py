"""The MLP and the `Head` driver: shapes, standardisation, probabilities and label ids."""

import numpy as np
import pytest
import torch

from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.head.classifier import Head, default_threshold, labels_from_proba
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from tests.fixtures.head import tiny_spec


def small_head(num_classes=3, **kwargs):
    torch.manual_seed(0)
    return Head(
        MaskClassifier(num_classes, HeadConfig(hidden_dim=8)),
        ["a", "b", "c"][:num_classes],
        **kwargs,
    )


def test_the_mlp_has_four_linear_layers_and_maps_any_leading_shape():
    model = MaskClassifier(5, HeadConfig(hidden_dim=16, dropout=0.0))
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (1024, 16),
        (16, 16),
        (16, 16),
        (16, 5),
    ]
    assert model(torch.zeros(2, 7, 1024)).shape == (2, 7, 5)
    assert model(torch.zeros(3, 1024, dtype=torch.float16)).shape == (3, 5)


def test_standardisation_is_applied_and_tiny_stds_are_floored():
    model = MaskClassifier(2, HeadConfig(hidden_dim=4, dropout=0.0)).eval()
    x = torch.randn(4, 1024)
    before = model(x)
    model.set_standardization(torch.full((1024,), 3.0), torch.zeros(1024))
    assert model.input_std.min().item() == pytest.approx(1e-6)
    model.set_standardization(torch.full((1024,), 3.0), torch.full((1024,), 2.0))
    assert torch.allclose(model(x * 2 + 3), before, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_dim": 0}, "hidden_dim must be at least 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"input_dim": 0}, "input_dim must be at least 1"),
    ],
)
def test_head_config_refuses_nonsense(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        HeadConfig(**kwargs)


def test_default_threshold_scales_with_the_number_of_classes():
    # 1/C + m (1 - 1/C)
    assert default_threshold(2, 0.5) == pytest.approx(0.75)
    assert default_threshold(4, 0.5) == pytest.approx(0.625)
    assert default_threshold(20, 0.0) == pytest.approx(0.05)
    assert small_head(3).threshold == pytest.approx(1 / 3 + 0.5 * 2 / 3)


def test_labels_from_probabilities_known_answer():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    assert labels_from_proba(probs, 0.5).tolist() == [1, 0, 3, 1]
    assert labels_from_proba(probs, 0.9).tolist() == [0, 0, 0, 0]
    assert labels_from_proba(torch.tensor(probs), 0.3).tolist() == [1, 1, 3, 1]


def test_predict_proba_is_a_softmax_over_the_classes_for_numpy_and_torch():
    head = small_head(3)
    x = np.random.default_rng(0).standard_normal((2, 5, 1024)).astype(np.float32)
    probs = head.predict_proba(x)
    assert isinstance(probs, np.ndarray) and probs.shape == (2, 5, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(head.model(torch.from_numpy(x)), -1).numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    as_tensor = head.predict_proba(torch.from_numpy(x[0]))
    assert isinstance(as_tensor, torch.Tensor) and torch.allclose(
        as_tensor, torch.from_numpy(probs[0])
    )
    assert head.predict_proba(np.zeros((0, 1024), np.float32)).shape == (0, 3)


def test_predict_uses_the_stored_threshold_unless_given_one():
    head = small_head(3, threshold=0.0)
    x = np.random.default_rng(1).standard_normal((50, 1024)).astype(np.float32)
    probs = head.predict_proba(x)
    assert head.predict(x).tolist() == (probs.argmax(-1) + 1).tolist()
    assert (head.predict(x, threshold=1.0) == 0).all()
    assert head.predict(x, threshold=0.5).tolist() == labels_from_proba(probs, 0.5).tolist()
    with pytest.raises(ConfigError, match=r"threshold must be a probability in \[0, 1\]"):
        head.predict(x, threshold=2)


def test_wrong_embedding_size_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"expected embeddings of shape \(\.\.\., 1024\)"):
        small_head().predict_proba(np.zeros((3, 256), np.float32))


def test_mask_targets_put_background_at_zero():
    assert small_head(2).mask_targets == {0: "background", 1: "a", 2: "b"}


def test_check_compatible_names_the_differences():
    head = small_head(2, store_spec=tiny_spec(points_per_side=2))
    head.check_compatible(tiny_spec(points_per_side=2))
    with pytest.raises(StoreError, match=r"points_per_side: head 2, store 3.*Embed the images"):
        head.check_compatible(tiny_spec(points_per_side=3))
    with pytest.raises(StoreError, match=r"checkpoint_sha256: head '0+', store '1+'"):
        head.check_compatible(tiny_spec(sha="1" * 64))


def test_check_compatible_without_a_recorded_spec_checks_the_embedding_size():
    from dataclasses import replace

    head = small_head(2)
    head.check_compatible(tiny_spec())
    with pytest.raises(StoreError, match="this head takes 1024-d embeddings"):
        head.check_compatible(replace(tiny_spec(), embedding_dim=256))


def test_a_head_needs_one_output_per_class():
    with pytest.raises(ConfigError, match="3 outputs for 2 classes"):
        Head(MaskClassifier(3, HeadConfig(hidden_dim=4)), ["a", "b"])
