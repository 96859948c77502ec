"""USAMPredictor on hand-made proposals and a stand-in head with known probabilities."""

import numpy as np
import pytest

from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.inference.predictor import PredictorConfig, USAMPredictor, candidate_masks
from fiftyone_usam.masks import encode_masks
from fiftyone_usam.ontology import load_ontology, ontology_from_dict


class KnownHead:
    """Returns fixed class probabilities per point (row i of ``probs`` for point i)."""

    def __init__(self, probs, classes, threshold=0.5):
        self.probs = np.asarray(probs, np.float32)
        self.classes = tuple(classes)
        self.threshold = threshold

    def predict_proba(self, embeddings):
        assert embeddings.shape == (len(self.probs), 1024)
        return self.probs


def proposals(masks_per_point, iou=None):
    """``masks_per_point``: (d, 3, H, W) bool."""
    masks = np.asarray(masks_per_point, bool)
    d, _, h, w = masks.shape
    flat = masks.reshape(d * 3, h, w).transpose(1, 2, 0)
    return MaskProposals(
        embeddings=np.zeros((d, 1024), np.float16),
        iou_predictions=np.asarray(iou if iou is not None else np.ones((d, 3)), np.float32),
        stability_scores=np.ones((d, 3), np.float32),
        points=np.zeros((d, 2), np.float32),
        image_size=(h, w),
        mask_rles=tuple(encode_masks(np.asfortranarray(flat.astype(np.uint8)))),
    )


def rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


H, W = 8, 12
# point 0: on the left object (fine: 2x2, medium: 4x4, coarse: whole left half)
# point 1: on the right object; point 2: on background (whole image)
MASKS = [
    [rect(H, W, 0, 2, 0, 2), rect(H, W, 0, 4, 0, 4), rect(H, W, 0, 8, 0, 6)],
    [rect(H, W, 0, 8, 6, 12), rect(H, W, 2, 4, 8, 10), rect(H, W, 0, 4, 6, 12)],
    [rect(H, W, 0, 8, 0, 12), rect(H, W, 0, 1, 0, 1), rect(H, W, 7, 8, 11, 12)],
]
PROBS = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]


@pytest.mark.parametrize(
    "granularity, expected",
    [
        ("fine", [0, 4, 7]),  # smallest mask of each point
        ("medium", [1, 5, 8]),
        ("coarse", [2, 3, 6]),  # largest
        ("all", list(range(9))),
    ],
)
def test_candidate_masks_by_area(granularity, expected):
    flat, point = candidate_masks(proposals(MASKS), granularity)
    np.testing.assert_array_equal(flat, expected)
    np.testing.assert_array_equal(point, np.array(expected) // 3)


def test_best_follows_sams_predicted_iou():
    iou = [[0.1, 0.9, 0.2], [0.3, 0.2, 0.1], [0.0, 0.0, 1.0]]
    flat, _ = candidate_masks(proposals(MASKS, iou), "best")
    np.testing.assert_array_equal(flat, [1, 3, 8])


def test_prediction_keeps_confident_masks_and_paints_the_map():
    # the background point (0.5/0.5) falls below 0.6; cat (0.9) and dog (0.8) stay
    predictor = USAMPredictor(
        KnownHead(PROBS, ["cat", "dog"], threshold=0.6), PredictorConfig(granularity="coarse")
    )
    result = predictor.predict_proposals(proposals(MASKS))
    np.testing.assert_array_equal(result.instances.labels, [1, 2])
    np.testing.assert_allclose(result.instances.confidences, [0.9, 0.8])
    np.testing.assert_array_equal(result.instances.sources, [2, 3])
    expected = np.zeros((H, W), np.uint8)
    expected[:, 6:] = 2
    expected[:, :6] = 1
    np.testing.assert_array_equal(result.semantic, expected)
    entropy = [-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))]
    np.testing.assert_allclose(result.instances.entropies, entropy, rtol=1e-5)
    np.testing.assert_allclose(result.uncertainty, np.mean(entropy) / np.log(2), rtol=1e-5)
    assert result.image_size == (H, W)


def test_overlaps_go_to_the_more_confident_mask():
    probs = [[0.7, 0.3], [0.05, 0.95], [0.5, 0.5]]
    predictor = USAMPredictor(
        KnownHead(probs, ["cat", "dog"], 0.6), PredictorConfig(granularity="fine")
    )
    # fine: point 0 -> 2x2 top-left cat; point 1 -> 2x2 (rows 2-3, cols 8-9) dog; no overlap
    result = predictor.predict_proposals(proposals(MASKS))
    assert result.semantic[0, 0] == 1 and result.semantic[2, 8] == 2
    # medium: point 0 -> rows 0-3, cols 0-3 (cat 0.7); point 1 -> cols 2-11 (dog 0.95)
    masks = [MASKS[0], [rect(H, W, 0, 8, 2, 12)] * 3, MASKS[2]]
    result = USAMPredictor(
        KnownHead(probs, ["cat", "dog"], 0.6), PredictorConfig(granularity="medium")
    ).predict_proposals(proposals(masks))
    assert result.semantic[0, 3] == 2  # dog (0.95) wins where both cover
    assert result.semantic[0, 1] == 1


def test_nothing_kept_means_background_and_full_uncertainty():
    predictor = USAMPredictor(KnownHead(PROBS, ["cat", "dog"], threshold=0.99))
    result = predictor.predict_proposals(proposals(MASKS))
    assert len(result.instances) == 0 and result.semantic.sum() == 0 and result.uncertainty == 1.0


def test_superclass_groups_sum_probabilities():
    ontology = load_ontology(["cat", "dog", "car"])
    groups = ontology_from_dict(
        {"classes": ["cat", "dog", "car"], "superclasses": {"animal": ["cat", "dog"]}}
    )
    probs = [[0.4, 0.4, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    predictor = USAMPredictor(
        KnownHead(probs, ontology.names, 0.6), PredictorConfig(granularity="coarse"), groups=groups
    )
    assert predictor.classes == ("animal", "car")
    result = predictor.predict_proposals(proposals(MASKS))
    np.testing.assert_array_equal(result.instances.labels, [1, 2, 1])  # 0.8, 0.8, 0.6
    np.testing.assert_allclose(sorted(result.instances.confidences), [0.6, 0.8, 0.8], rtol=1e-6)


def test_grouping_must_cover_the_heads_classes():
    groups = ontology_from_dict({"classes": ["cat"], "superclasses": {"animal": ["cat"]}})
    with pytest.raises(ConfigError, match="'dog' is not in the grouping ontology"):
        USAMPredictor(KnownHead(PROBS, ["cat", "dog"]), groups=groups)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown granularity 'whole'"):
        PredictorConfig(granularity="whole")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nms_iou must be in"):
        PredictorConfig(nms_iou=1.5)


def test_one_forward_pass_for_a_batch_labels_each_image_as_alone():
    import torch

    from fiftyone_usam.head.classifier import Head
    from fiftyone_usam.head.model import HeadConfig, MaskClassifier

    torch.manual_seed(0)
    head = Head(MaskClassifier(2, HeadConfig(hidden_dim=16)), ["a", "b"], threshold=0.5)
    rng = np.random.default_rng(0)
    batch = []
    for d, (h, w) in [(3, (8, 12)), (5, (6, 7)), (1, (9, 4))]:
        masks = rng.random((d, 3, h, w)) < 0.4
        p = proposals(masks)
        embeddings = rng.normal(size=(d, 1024)).astype(np.float16)
        batch.append(MaskProposals(embeddings, *(getattr(p, f) for f in FIELDS[1:])))
    predictor = USAMPredictor(head, PredictorConfig(nms_iou=0.9))
    together = predictor.predict_batch(batch)
    assert predictor.predict_batch([]) == []
    assert sum(len(p.instances) for p in together) > 0
    for alone, joint in zip((predictor.predict_proposals(p) for p in batch), together, strict=True):
        np.testing.assert_array_equal(alone.semantic, joint.semantic)
        assert alone.instances.rles == joint.instances.rles
        np.testing.assert_array_equal(alone.instances.labels, joint.instances.labels)
        np.testing.assert_allclose(alone.instances.confidences, joint.instances.confidences, 1e-6)


FIELDS = ("embeddings", "iou_predictions", "stability_scores", "points", "image_size", "mask_rles")
