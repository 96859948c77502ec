"""Baselines on known answers: Otsu on planted images, SAM+CLIP on hand-made proposals with a
tiny real CLIP, and CLIP's loading errors."""

import shutil

import numpy as np
import pytest

from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.inference.clip_backend import DEFAULT_CLIP_MODEL, load_clip
from fiftyone_usam.inference.labelers import (
    OtsuLabeler,
    SamClipLabeler,
    masked_crop,
    otsu_foreground,
    prediction_from_probabilities,
)
from fiftyone_usam.inference.predictor import PredictorConfig
from fiftyone_usam.masks import decode_rles
from fiftyone_usam.ontology import load_ontology, ontology_from_dict
from tests.unit.test_predictor import proposals, rect

H, W = 40, 56


def planted(inside=200, outside=50, speck=False):
    """A two-level image: a rectangle and a disc of ``inside`` on ``outside``; and its truth."""
    truth = rect(H, W, 5, 15, 6, 20)
    yy, xx = np.mgrid[:H, :W]
    truth |= (yy - 25) ** 2 + (xx - 38) ** 2 < 8**2
    if speck:
        truth[34:36, 8:10] = True  # 4 pixels: foreground, but too small for an instance
    image = np.full((H, W, 3), outside, np.uint8)
    image[truth] = inside
    return image, truth


@pytest.mark.parametrize("inside, outside", [(200, 50), (30, 220)])
def test_otsu_finds_exactly_the_planted_objects_whatever_their_brightness(inside, outside):
    image, truth = planted(inside, outside)
    np.testing.assert_array_equal(otsu_foreground(image), truth)


def test_otsu_foreground_is_the_side_off_the_border():
    # a bright frame around a dark centre: the larger-by-area dark side is still foreground
    image = np.full((H, W, 3), 240, np.uint8)
    image[2:-2, 2:-2] = 10
    np.testing.assert_array_equal(otsu_foreground(image), image[..., 0] == 10)


def test_a_flat_image_has_no_foreground():
    labeler = OtsuLabeler()
    prediction = labeler.predict_proposals(None, np.full((H, W, 3), 77, np.uint8))
    assert not prediction.semantic.any() and len(prediction.instances) == 0
    assert prediction.uncertainty == 1.0


def test_otsu_labeler_semantic_map_and_instances():
    image, truth = planted(speck=True)
    labeler = OtsuLabeler(min_area=5)
    assert labeler.classes == ("foreground",) and not labeler.needs_proposals
    prediction = labeler.predict_proposals(None, image)
    assert prediction.semantic.dtype == np.uint8 and prediction.image_size == (H, W)
    np.testing.assert_array_equal(prediction.semantic, truth.astype(np.uint8))  # speck included
    masks = decode_rles(prediction.instances.rles, (H, W))
    disc = truth & ~rect(H, W, 5, 15, 6, 20) & ~rect(H, W, 34, 36, 8, 10)
    np.testing.assert_array_equal(masks[0], disc)  # largest first (disc 197 px > 140 px)
    np.testing.assert_array_equal(masks[1], rect(H, W, 5, 15, 6, 20))
    assert len(masks) == 2  # the 4-pixel speck is below min_area
    np.testing.assert_array_equal(prediction.instances.labels, [1, 1])
    np.testing.assert_array_equal(prediction.instances.confidences, [1.0, 1.0])
    assert prediction.uncertainty == 0.0
    assert len(OtsuLabeler(max_instances=1).predict_proposals(None, image).instances) == 1


def test_otsu_needs_the_image():
    with pytest.raises(ConfigError, match="image"):
        OtsuLabeler().predict_proposals(None, None)


def test_masked_crop_fills_outside_the_mask_and_centres_a_square():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:8] = True  # box 3 x 5
    mask[2, 3] = False
    fill = (1, 2, 3)
    crop = masked_crop(image, mask, fill)
    assert crop.shape == (5, 5, 3) and crop.dtype == np.uint8
    expected = np.empty((5, 5, 3), np.uint8)
    expected[:] = fill
    expected[1:4] = image[2:5, 3:8]
    expected[1, 0] = fill
    np.testing.assert_array_equal(crop, expected)


def rles_of(masks):
    from fiftyone_usam.masks import encode_masks

    stacked = np.stack(masks, axis=-1)
    return [{"size": [H, W], "counts": c} for c in encode_masks(stacked)]


def test_threshold_and_mask_nms_on_known_probabilities():
    a = rect(H, W, 0, 10, 0, 10)
    b = rect(H, W, 0, 10, 0, 9)  # IoU 0.9 with a
    c = rect(H, W, 20, 30, 20, 30)
    d = rect(H, W, 0, 10, 1, 10)  # IoU 0.9 with a, other class
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.25, 0.75]], np.float32)
    sources = np.array([3, 7, 11, 12])
    rles = rles_of([a, b, c, d])
    got = prediction_from_probabilities(rles, probs, sources, (H, W), 0.7, PredictorConfig())
    np.testing.assert_array_equal(got.instances.sources, [3, 12])  # b suppressed, c too unsure
    np.testing.assert_array_equal(got.instances.labels, [1, 2])
    np.testing.assert_allclose(got.instances.confidences, [0.9, 0.75])
    expected = np.zeros((H, W), np.uint8)
    expected[d] = 2
    expected[a] = 1  # the more confident mask wins where they overlap
    np.testing.assert_array_equal(got.semantic, expected)
    assert 0 < got.uncertainty < 1
    agnostic = PredictorConfig(class_agnostic_nms=True)
    got = prediction_from_probabilities(rles, probs, sources, (H, W), 0.7, agnostic)
    np.testing.assert_array_equal(got.instances.sources, [3])


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    return load_clip(tiny_clip_dir, device="cpu")


def scene_proposals():
    """Point 0: a rectangle (and an empty mask); point 1: a disc; point 2: the whole image."""
    image, _ = planted()
    image[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 4  # some texture for CLIP
    empty = np.zeros((H, W), bool)
    disc = planted()[1] & ~rect(H, W, 5, 15, 6, 20)
    whole = np.ones((H, W), bool)
    masks = [
        [rect(H, W, 5, 15, 6, 20), empty, rect(H, W, 5, 10, 6, 20)],
        [disc, rect(H, W, 20, 30, 30, 40), disc],
        [whole, whole, rect(H, W, 0, 20, 0, 28)],
    ]
    return image, proposals(masks)


def test_clip_probabilities_equal_clips_own_zero_shot_logits(tiny_clip):
    import torch

    image, props = scene_proposals()
    labeler = SamClipLabeler(tiny_clip, load_ontology("disc,square,sky"), batch_size=2)
    rles = [props.rle(i) for i in (0, 3, 6)]
    probs = labeler.mask_probabilities(image, rles)
    crops = [masked_crop(image, m, labeler.fill) for m in decode_rles(rles, (H, W))]
    prompts = ["a photo of a disc", "a photo of a square", "a photo of a sky"]
    inputs = tiny_clip.processor(text=prompts, images=crops, return_tensors="pt", padding=True)
    with torch.inference_mode():
        expected = tiny_clip.model(**inputs).logits_per_image.softmax(dim=-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert probs.shape == (3, 3)
    # the crops differ, so CLIP tells them apart even with random weights
    assert np.abs(probs[0] - probs[1]).max() > 1e-4


def test_sam_clip_keeps_nonempty_candidates_of_the_granularity(tiny_clip):
    image, props = scene_proposals()
    ontology = load_ontology("disc,square")
    everything = SamClipLabeler(
        tiny_clip, ontology, PredictorConfig(threshold=0.5, nms_iou=1.0, granularity="all")
    )
    got = everything.predict_proposals(props, image)
    # with 2 classes the best probability is always >= 0.5: every non-empty mask passes;
    # mask 1 is empty, masks 6 and 7 are identical (IoU 1.0 is not above nms_iou)
    assert sorted(got.instances.sources.tolist()) == [0, 2, 3, 4, 5, 6, 7, 8]
    assert got.semantic.shape == (H, W) and got.image_size == (H, W)
    assert set(np.unique(got.semantic)) <= {1, 2}
    np.testing.assert_array_equal(
        decode_rles(got.instances.rles, (H, W)), props.decode_masks(got.instances.sources)
    )
    fine = SamClipLabeler(tiny_clip, ontology, PredictorConfig(threshold=0.5, granularity="fine"))
    # point 0's smallest mask is the empty one: it has no candidate left
    assert sorted(fine.predict_proposals(props, image).instances.sources.tolist()) == [4, 8]
    nothing = SamClipLabeler(tiny_clip, ontology, PredictorConfig(threshold=1.0))
    prediction = nothing.predict_proposals(props, image)
    assert len(prediction.instances) == 0 and prediction.uncertainty == 1.0
    assert not prediction.semantic.any()


def test_sam_clip_defaults_and_prompts(tiny_clip):
    ontology = ontology_from_dict(
        {"classes": ["cat", {"name": "dog", "prompts": ["a dog", "a puppy"]}]}
    )
    labeler = SamClipLabeler(tiny_clip, ontology)
    described = labeler.describe()
    assert labeler.threshold == 0.7 and labeler.classes == ("cat", "dog")
    assert described["prompts"] == {"cat": ["a photo of a cat"], "dog": ["a dog", "a puppy"]}
    assert described["crop_fill"] == [123, 117, 104]  # CLIP's mean colour
    assert labeler.text.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(labeler.text, axis=1), 1.0, rtol=1e-5)


def test_sam_clip_refuses_an_image_of_another_size(tiny_clip):
    _, props = scene_proposals()
    labeler = SamClipLabeler(tiny_clip, load_ontology("a,b"))
    with pytest.raises(ConfigError, match="changed after it was embedded"):
        labeler.predict_proposals(props, np.zeros((H + 1, W, 3), np.uint8))


def test_tiny_clip_loads_from_its_directory(tiny_clip, tiny_clip_dir):
    assert tiny_clip.name == str(tiny_clip_dir.resolve())
    text = tiny_clip.encode_text(["a photo of a cat", "a dog"])
    assert text.shape == (2, 16) and text.dtype == np.float32
    assert tiny_clip.encode_images([]).shape == (0, 16)


def test_offline_hub_id_says_which_directory_to_pass():
    with pytest.raises(CheckpointError, match=r"pass --clip-model clip-weights"):
        load_clip(DEFAULT_CLIP_MODEL, device="cpu")


def test_a_directory_without_clip_or_tokenizer_is_refused(tiny_clip_dir, tmp_path):
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_clip(tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="no CLIP directory"):
        load_clip(tmp_path / "missing", device="cpu")
    broken = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_clip_dir, broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="only 2 tokens"):
        load_clip(broken, device="cpu")
