"""The extractor prompted with a label field's boxes and points equals SamPredictor."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from fiftyone_usam.embeddings.decoder import prompt_batches
from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.prompts import PromptSet
from fiftyone_usam.embeddings.sam_backend import load_sam
from fiftyone_usam.testing.scenes import scene

BOXES = PromptSet(
    "boxes",
    ("b0", "b1", "b2"),
    (
        np.array([0.1, 0.1, 0.4, 0.5]),
        np.array([0.5, 0.2, 0.45, 0.7]),
        np.array([0.0, 0.0, 1.0, 1.0]),
    ),
)
POINTS = PromptSet(
    "points",
    ("k0", "k1", "k2", "k3"),
    (
        np.array([[0.3, 0.4]]),
        np.array([[0.6, 0.6], [0.7, 0.5]]),
        np.array([[0.2, 0.8], [0.25, 0.75]]),
        np.array([[0.9, 0.1]]),
    ),
)


@pytest.fixture(scope="module")
def image():
    return scene(48, 64, 3)


@pytest.fixture(scope="module")
def predictor(tiny_sam, image):
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image)
    return predictor


def _extract(tiny_sam, image, prompts, **settings):
    extractor = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), **settings)
    return extractor.extract([image], [prompts])[0]


def test_boxes_equal_sam_predictor_single_mask(tiny_sam, image, predictor):
    found = _extract(tiny_sam, image, BOXES)
    boxes = predictor.transform.apply_boxes(BOXES.pixel_boxes(48, 64), (48, 64))
    masks, iou, _ = predictor.predict_torch(
        None, None, boxes=torch.as_tensor(boxes, dtype=torch.float), multimask_output=False
    )
    assert found.masks_per_point == 1 and found.prompt_ids == ("b0", "b1", "b2")
    assert found.decode_masks().shape == masks.shape == (3, 1, 48, 64)
    np.testing.assert_array_equal(found.decode_masks(), masks.numpy())
    np.testing.assert_allclose(found.iou_predictions, iou.numpy(), atol=1e-6)
    # the anchor of a box is its centre, in pixels
    np.testing.assert_allclose(found.points[2], [32, 24], atol=1e-4)


def test_each_keypoints_label_is_one_prompt_of_its_points(tiny_sam, image, predictor):
    found = _extract(tiny_sam, image, POINTS)
    assert found.num_points == 4 and found.masks_per_point == 3
    for i, points in enumerate(POINTS.pixel_points(48, 64)):
        coords = predictor.transform.apply_coords(points, (48, 64))
        masks, iou, _ = predictor.predict_torch(
            torch.as_tensor(coords, dtype=torch.float)[None],
            torch.ones((1, len(points)), dtype=torch.int),
            multimask_output=True,
        )
        np.testing.assert_array_equal(found.decode_masks()[i], masks.numpy()[0])
        np.testing.assert_allclose(found.iou_predictions[i], iou.numpy()[0], atol=1e-6)
        np.testing.assert_allclose(found.points[i], points.mean(axis=0), atol=1e-4)


def test_prompt_tokens_are_the_decoders_four_mask_tokens(tiny_sam, image, predictor):
    """The embedding of a box is the same four tokens the grid's embeddings are."""
    found = _extract(tiny_sam, image, BOXES)
    captured = {}
    decoder = tiny_sam.mask_decoder

    def keep(module, inputs, output):
        captured["hs"] = output[0].detach().clone()

    handle = decoder.transformer.register_forward_hook(keep)
    try:
        boxes = predictor.transform.apply_boxes(BOXES.pixel_boxes(48, 64), (48, 64))
        predictor.predict_torch(None, None, boxes=torch.as_tensor(boxes, dtype=torch.float))
    finally:
        handle.remove()
    tokens = captured["hs"][:, 1 : 1 + decoder.num_mask_tokens].reshape(3, -1)
    np.testing.assert_allclose(found.embeddings, tokens.numpy(), atol=2e-3)  # float16


def test_decoder_batches_keep_prompt_order_and_never_pad_points(tiny_sam):
    _, batches = prompt_batches(POINTS, 10, (48, 64), 256, per_batch=8)
    # runs of equal length: [1], [2, 2], [1]
    assert [b.points.shape[:2] for b in batches] == [(1, 1), (2, 2), (1, 1)]
    anchors, batches = prompt_batches(BOXES, 10, (48, 64), 256, per_batch=2)
    assert [len(b) for b in batches] == [2, 1] and anchors.shape == (3, 2)


def test_small_decoder_batches_give_the_same_proposals(tiny_sam, image):
    whole = _extract(tiny_sam, image, POINTS)
    split = _extract(tiny_sam, image, POINTS, points_per_batch=1)
    # one decoder call or four: the same within float rounding
    assert (whole.decode_masks() != split.decode_masks()).mean() < 1e-3
    np.testing.assert_allclose(whole.embeddings, split.embeddings, atol=1e-3)


def test_grid_and_prompted_images_mix_in_one_batch(tiny_sam, image):
    extractor = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), points_per_side=4)
    grid, boxed = extractor.extract([image, image], [None, BOXES])
    assert grid.num_points == 16 and grid.prompt_ids == ()
    assert boxed.prompt_ids == BOXES.ids
    assert boxed.mask_rles == _extract(tiny_sam, image, BOXES).mask_rles


def test_prompt_sets_must_match_the_images(tiny_sam, image):
    extractor = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"))
    with pytest.raises(ValueError, match="2 prompt sets for 1 images"):
        extractor.extract([image], [BOXES, BOXES])


def test_prompt_set_round_trips_and_fingerprints():
    again = PromptSet.from_item(BOXES.to_item())
    assert again.fingerprint() == BOXES.fingerprint() and again.ids == BOXES.ids
    moved = PromptSet("boxes", BOXES.ids, (BOXES.coords[0] + 0.01, *BOXES.coords[1:]))
    assert moved.fingerprint() != BOXES.fingerprint()
    np.testing.assert_allclose(BOXES.pixel_boxes(100, 200)[0], [20, 10, 100, 60])
