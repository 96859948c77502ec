import numpy as np
import pytest

from fiftyone_usam.inference.postprocess import (
    Instances,
    boxes_xywh,
    decode_instances,
    entropy,
    mask_iou,
    mask_nms,
    semantic_map,
    threshold_candidates,
)
from fiftyone_usam.masks import encode_masks


def rles_of(*masks):
    stack = np.stack(masks, axis=-1).astype(np.uint8)
    h, w = stack.shape[:2]
    return [{"size": [h, w], "counts": c} for c in encode_masks(stack)]


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_entropy_known_values():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(entropy(probs), [0.0, np.log(2), np.log(3)], atol=1e-6)


def test_threshold_keeps_masks_whose_best_class_passes():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    idx, labels, conf = threshold_candidates(probs, 0.5)
    np.testing.assert_array_equal(idx, [0, 2])
    np.testing.assert_array_equal(labels, [1, 3])  # 1-based: 0 is background
    np.testing.assert_allclose(conf, [0.7, 0.8])
    assert len(threshold_candidates(np.zeros((0, 3)), 0.5)[0]) == 0


def test_mask_iou_known_values():
    a, b = box(10, 10, 0, 10, 0, 5), box(10, 10, 0, 10, 2, 7)  # 50 px each, 30 shared
    np.testing.assert_allclose(mask_iou(rles_of(a, b)), [[1, 30 / 70], [30 / 70, 1]])


def test_nms_keeps_the_right_masks():
    h = w = 20
    big = box(h, w, 0, 10, 0, 10)  # 100 px
    near = box(h, w, 0, 10, 0, 9)  # IoU 0.9 with big
    other = box(h, w, 12, 20, 12, 20)
    half = box(h, w, 0, 10, 0, 5)  # IoU 0.5 with big
    rles = rles_of(big, near, other, half)
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    labels = np.array([1, 1, 2, 1])
    # class-aware: near (0.9) suppresses big (IoU 0.9 > 0.7); half (IoU 0.5 with near? 45/100)
    np.testing.assert_array_equal(mask_nms(rles, scores, labels, 0.7), [1, 3, 2])
    np.testing.assert_array_equal(mask_nms(rles, scores, labels, 0.4), [1, 2])
    # big and near with different labels survive class-aware NMS, not agnostic NMS
    labels2 = np.array([2, 1, 2, 1])
    np.testing.assert_array_equal(mask_nms(rles, scores, labels2, 0.7), [1, 3, 2, 0])
    np.testing.assert_array_equal(
        mask_nms(rles, scores, labels2, 0.7, class_agnostic=True), [1, 3, 2]
    )


def test_nms_drops_empty_masks_and_handles_none():
    rles = rles_of(np.zeros((4, 4), bool), box(4, 4, 0, 2, 0, 2))
    np.testing.assert_array_equal(mask_nms(rles, np.array([0.9, 0.5]), np.array([1, 1]), 0.5), [1])
    assert mask_nms([], np.zeros(0), np.zeros(0), 0.5).shape == (0,)


def test_semantic_map_resolves_overlaps_by_confidence():
    left, right = box(4, 6, 0, 4, 0, 4), box(4, 6, 0, 4, 2, 6)
    rles = rles_of(left, right)
    m = semantic_map(rles, np.array([1, 2]), np.array([0.9, 0.6]), (4, 6))
    np.testing.assert_array_equal(m[0], [1, 1, 1, 1, 2, 2])
    m = semantic_map(rles, np.array([1, 2]), np.array([0.5, 0.6]), (4, 6))
    np.testing.assert_array_equal(m[0], [1, 1, 2, 2, 2, 2])
    assert m.dtype == np.uint8
    assert semantic_map([], np.zeros(0, int), np.zeros(0), (3, 2)).sum() == 0


def test_semantic_map_uses_a_wider_type_past_255_classes():
    rles = rles_of(box(2, 2, 0, 1, 0, 1))
    assert semantic_map(rles, np.array([300]), np.array([1.0]), (2, 2))[0, 0] == 300


def test_boxes():
    np.testing.assert_allclose(boxes_xywh(rles_of(box(10, 12, 2, 5, 3, 9))), [[3, 2, 6, 3]])


@pytest.mark.parametrize("n", [254, 300])
def test_nms_many_masks(n):
    rng = np.random.default_rng(0)
    masks = [
        box(16, 16, *sorted(rng.integers(0, 17, 2)), *sorted(rng.integers(0, 17, 2)))
        for _ in range(n)
    ]
    kept = mask_nms(rles_of(*masks), rng.random(n), np.ones(n, int), 0.5)
    assert 0 < len(kept) < n


def test_semantic_map_from_crops_equals_the_full_decode():
    rng = np.random.default_rng(3)
    masks = [rng.random((31, 45)) < 0.3 for _ in range(4)] + [
        box(31, 45, *sorted(rng.integers(0, 32, 2)), *sorted(rng.integers(0, 46, 2)))
        for _ in range(8)
    ]
    rles = rles_of(*masks)
    labels, scores = rng.integers(1, 4, len(masks)), rng.random(len(masks))
    scores[3] = scores[5]  # a tie: the same mask wins either way
    crop = semantic_map(rles, labels, scores, (31, 45))
    np.testing.assert_array_equal(crop, semantic_map(rles, labels, scores, (31, 45), decode="full"))
    assert crop.any()


def test_instances_decode_their_crops_once():
    rles = rles_of(box(8, 8, 1, 4, 2, 7), box(8, 8, 0, 8, 0, 1))
    instances = Instances(
        tuple(rles), np.array([1, 2]), np.ones(2, np.float32), np.zeros(2, np.float32), np.arange(2)
    )
    np.testing.assert_array_equal(instances.boxes, [[2, 1, 5, 3], [0, 0, 1, 8]])
    assert instances.crops is instances.crops  # cached
    assert [c.shape for c in instances.crops] == [(3, 5), (8, 1)] and instances.crops[0].all()


def test_instances_of_many_images_decoded_together_equal_each_decoded_alone():
    rng = np.random.default_rng(4)

    def instances_of(size, n):
        masks = [rng.random(size) < 0.4 for _ in range(n)]
        return Instances(
            tuple(rles_of(*masks)) if n else (),
            np.ones(n, np.int64),
            np.ones(n, np.float32),
            np.zeros(n, np.float32),
            np.arange(n),
        )

    many = [instances_of((12, 9), 3), instances_of((7, 15), 2), instances_of((12, 9), 0)]
    many += [instances_of((12, 9), 4)]
    alone = [(i.boxes.copy(), [c.copy() for c in i.crops]) for i in map(_copy_instances, many)]
    decode_instances(many)
    for instances, (boxes, crops) in zip(many, alone, strict=True):
        assert "crops" in instances.__dict__ or len(instances) == 0
        np.testing.assert_array_equal(instances.boxes, boxes)
        assert len(instances.crops) == len(crops)
        for a, b in zip(instances.crops, crops, strict=True):
            np.testing.assert_array_equal(a, b)


def _copy_instances(instances):
    fields = ("rles", "labels", "confidences", "entropies", "sources")
    return Instances(*(getattr(instances, f) for f in fields))


def _greedy_nms(rles, scores, labels, iou_threshold, class_agnostic):
    """The plain algorithm: one IoU matrix over all masks, most confident first."""
    areas = [int(mask_iou([r])[0, 0] > 0) for r in rles]
    order = [i for i in np.argsort(-scores, kind="stable") if areas[i]]
    ious = mask_iou([rles[i] for i in order])
    kept = []
    for rank, index in enumerate(order):
        if not any(
            ious[rank, k] > iou_threshold and (class_agnostic or labels[order[k]] == labels[index])
            for k in kept
        ):
            kept.append(rank)
    return [order[k] for k in kept]


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_within_labels_equals_the_plain_algorithm(class_agnostic):
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        masks = [
            box(20, 20, *sorted(rng.integers(0, 21, 2)), *sorted(rng.integers(0, 21, 2)))
            for _ in range(n)
        ]
        rles = rles_of(*masks)
        scores = rng.choice([0.2, 0.5, 0.7, 0.9], n)  # ties too
        labels = rng.integers(1, 4, n)
        got = mask_nms(rles, scores, labels, 0.4, class_agnostic=class_agnostic)
        assert got.tolist() == _greedy_nms(rles, scores, labels, 0.4, class_agnostic)
