import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.prompts import grid_points_for_image
from fiftyone_usam.embeddings.sam_backend import load_sam
from fiftyone_usam.testing.scenes import scene

SIZES = [(48, 64), (80, 60), (37, 53)]


@pytest.fixture(scope="module")
def images():
    return [scene(h, w, seed) for seed, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="module")
def proposals(tiny_sam, images):
    return MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=10, batch_size=3
    ).extract(images)


def _predictor_outputs(sam, image, points_per_side):
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    points = grid_points_for_image(points_per_side, *image.shape[:2])
    coords = predictor.transform.apply_coords(points, image.shape[:2])
    masks, iou, low_res = predictor.predict_torch(
        torch.as_tensor(coords, dtype=torch.float)[:, None, :],
        torch.ones((len(points), 1), dtype=torch.int),
        multimask_output=True,
    )
    return masks.numpy(), iou.numpy(), low_res


def test_equals_sam_predictor(tiny_sam, images, proposals):
    """Masks and IoUs equal SamPredictor.predict_torch on the same model, image and points."""
    for image, found in zip(images, proposals, strict=True):
        masks, iou, _ = _predictor_outputs(tiny_sam, image, 10)
        decoded = found.decode_masks()
        assert decoded.shape == masks.shape == (100, 3, *image.shape[:2])
        # the encoder ran on a batch of 3 here, the predictor on 1 image: allow float noise
        # at the 0 threshold, but nothing more
        assert (decoded != masks).mean() < 1e-4
        np.testing.assert_allclose(found.iou_predictions, iou, atol=1e-5)
        np.testing.assert_allclose(
            found.points, grid_points_for_image(10, *image.shape[:2]), atol=1e-4
        )


def test_equals_sam_predictor_exactly_one_image_at_a_time(tiny_sam, images):
    extractor = MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=10, batch_size=1
    )
    for image, found in zip(images, extractor.extract(images), strict=True):
        masks, iou, _ = _predictor_outputs(tiny_sam, image, 10)
        np.testing.assert_array_equal(found.decode_masks(), masks)
        np.testing.assert_array_equal(found.iou_predictions, iou)


def test_embeddings_are_the_four_mask_tokens_in_order(tiny_sam, images, proposals):
    """Each token, through its own hypernetwork MLP, must rebuild the decoder's mask logits."""
    decoder = tiny_sam.mask_decoder
    upscaled = {}
    handle = decoder.output_upscaling.register_forward_hook(lambda m, i, o: upscaled.update(x=o))
    try:
        _, _, low_res = _predictor_outputs(tiny_sam, images[0], 10)
    finally:
        handle.remove()
    tokens = torch.as_tensor(proposals[0].embeddings.astype(np.float32)).reshape(100, 4, 256)
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](tokens[:, i]) for i in range(4)], 1)
    b, c, h, w = upscaled["x"].shape
    rebuilt = (hyper @ upscaled["x"].reshape(b, c, h * w)).reshape(b, 4, h, w)[:, 1:]
    scale = low_res.abs().max()
    assert torch.allclose(rebuilt, low_res, atol=2e-2 * float(scale))  # float16 tokens


def test_output_types_and_shapes(proposals):
    for found, (h, w) in zip(proposals, SIZES, strict=True):
        assert found.embeddings.shape == (100, 1024) and found.embeddings.dtype == np.float16
        assert found.iou_predictions.shape == (100, 3) and found.iou_predictions.dtype == np.float32
        assert found.stability_scores.shape == (100, 3)
        assert ((found.stability_scores >= 0) & (found.stability_scores <= 1)).all()
        assert found.image_size == (h, w) and len(found.mask_rles) == 300
        np.testing.assert_array_equal(found.mask_areas(), found.decode_masks().sum(axis=(2, 3)))
        picked = found.decode_masks([0, 5, 299])
        np.testing.assert_array_equal(picked, found.decode_masks().reshape(300, h, w)[[0, 5, 299]])


def test_batching_does_not_change_results(tiny_sam, images, proposals):
    singles = MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=10, batch_size=1
    ).extract(images)
    for a, b in zip(proposals, singles, strict=True):
        np.testing.assert_allclose(
            a.embeddings.astype(np.float32), b.embeddings.astype(np.float32), atol=1e-2
        )
        np.testing.assert_allclose(a.iou_predictions, b.iou_predictions, atol=1e-5)


def test_mask_chunking_does_not_change_results(tiny_sam, images, proposals):
    chunked = MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=10, batch_size=3, max_mask_bytes=1
    ).extract(images)
    for a, b in zip(proposals, chunked, strict=True):
        assert a.mask_rles == b.mask_rles
        np.testing.assert_array_equal(a.stability_scores, b.stability_scores)


def test_grid_size_sets_d(tiny_sam, images):
    (found,) = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), points_per_side=3).extract(
        images[:1]
    )
    assert found.embeddings.shape == (9, 1024) and len(found.mask_rles) == 27


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
    ],
)
def test_non_rgb_input_is_refused_with_a_hint(tiny_sam, bad):
    with pytest.raises(ValueError, match=r"load_rgb"):
        MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu")).extract([bad])


def test_points_go_through_the_decoder_in_chunks_with_the_same_results(tiny_sam, images, proposals):
    chunked = MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=10, batch_size=3, points_per_batch=7
    ).extract(images)
    for a, b in zip(proposals, chunked, strict=True):
        np.testing.assert_allclose(
            a.embeddings.astype(np.float32), b.embeddings.astype(np.float32), atol=1e-2
        )
        np.testing.assert_allclose(a.iou_predictions, b.iou_predictions, atol=1e-5)
        np.testing.assert_allclose(a.stability_scores, b.stability_scores, atol=1e-3)
        agree = np.mean([x == y for x, y in zip(a.mask_rles, b.mask_rles, strict=True)])
        assert agree > 0.95  # a mask can flip at a logit of exactly the threshold, no more
