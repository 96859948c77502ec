import copy
import threading

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.mask_runs import MaskRuns
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


# -- mask_encoding, encode_workers, encoder_attention ------------------------------------------


def _odd_images():
    """Odd sizes, 1-pixel-wide and 1-pixel-high images, and a single pixel."""
    rng = np.random.default_rng(3)
    sizes = [(37, 53), (1, 40), (41, 1), (1, 1), (64, 48)]
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _extract(sam, images, **settings):
    settings = {"points_per_side": 4, "batch_size": 2, **settings}
    return MaskEmbeddingExtractor(load_sam(sam, device="cpu"), **settings).extract(images)


def _assert_same(a, b):
    assert a.image_size == b.image_size
    assert a.mask_rles == b.mask_rles
    np.testing.assert_array_equal(a.stability_scores, b.stability_scores)
    np.testing.assert_array_equal(a.iou_predictions, b.iou_predictions)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


@pytest.mark.parametrize("max_mask_bytes", [1 << 28, 1])
def test_device_and_host_mask_encoding_are_identical(tiny_sam, max_mask_bytes):
    images = _odd_images()
    host = _extract(tiny_sam, images, mask_encoding="host", max_mask_bytes=max_mask_bytes)
    device = _extract(tiny_sam, images, mask_encoding="device", max_mask_bytes=max_mask_bytes)
    for a, b in zip(host, device, strict=True):
        _assert_same(a, b)
        assert len(a.mask_rles) == 48


@pytest.mark.parametrize("threshold", [1e9, -1e9])
def test_device_encoding_of_all_empty_and_all_full_masks(tiny_sam, threshold):
    sam = copy.deepcopy(tiny_sam)
    sam.mask_threshold = threshold  # every mask empty, or every mask full
    images = _odd_images()[:3]
    host = _extract(sam, images, mask_encoding="host")
    for a, b in zip(host, _extract(sam, images, mask_encoding="device"), strict=True):
        _assert_same(a, b)
        assert (a.mask_areas() == (0 if threshold > 0 else a.image_size[0] * a.image_size[1])).all()


def test_large_images_are_encoded_alike_either_way(tiny_sam, images):
    settings = {"points_per_side": 3, "max_mask_pixels": 1000}
    host = _extract(tiny_sam, images[:2], mask_encoding="host", **settings)
    for a, b in zip(host, _extract(tiny_sam, images[:2], **settings), strict=True):
        _assert_same(a, b)


def test_encode_workers_keep_order_and_results(tiny_sam, images):
    many = [*images, *_odd_images()]
    inline = _extract(tiny_sam, many, encode_workers=0)
    for workers in (1, 3):
        for a, b in zip(inline, _extract(tiny_sam, many, encode_workers=workers), strict=True):
            _assert_same(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_while_encoding_is_raised_by_extract(tiny_sam, images, monkeypatch, workers):
    threads = []

    def broken(self):
        threads.append(threading.current_thread().name)
        raise RuntimeError("boom")

    monkeypatch.setattr(MaskRuns, "counts", broken)
    with pytest.raises(RuntimeError, match="boom"):
        _extract(tiny_sam, images, encode_workers=workers)
    assert threads and all(name.startswith("usam-rle") == (workers > 0) for name in threads)


def test_masks_none_still_skips_the_masks(tiny_sam, images):
    (full,) = _extract(tiny_sam, images[:1])
    (none,) = _extract(tiny_sam, images[:1], masks="none")
    assert none.mask_rles == () and np.isnan(none.stability_scores).all()
    np.testing.assert_array_equal(full.embeddings, none.embeddings)


def test_sdpa_encoder_attention_equals_the_reference(tiny_sam, images):
    sam = copy.deepcopy(tiny_sam)
    with torch.no_grad():  # random weights start with zero relative positions: make them count
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    loaded = load_sam(sam, device="cpu")
    auto = MaskEmbeddingExtractor(loaded, points_per_side=4)
    assert auto.encoder_attention == "reference"  # auto: sdpa on CUDA only
    sdpa = MaskEmbeddingExtractor(loaded, points_per_side=4, encoder_attention="sdpa")
    reference, fast = auto.encode(images[:2]), sdpa.encode(images[:2])
    assert (reference - fast).abs().max() <= 1e-5 * reference.abs().max()
    attention = [m for m in sam.modules() if type(m).__name__ == "Attention"]
    assert attention and all("forward" not in m.__dict__ for m in attention)  # put back
    assert torch.equal(auto.encode(images[:2]), reference)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("mask_encoding", "gpu"), ("encoder_attention", "flash"), ("encode_workers", -1)],
)
def test_bad_speed_settings_are_refused(tiny_sam, setting, value):
    with pytest.raises(ValueError, match=setting):
        MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), **{setting: value})


# -- pipelined: the host's work on a batch overlapping the device's on the next ------------------


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_pipelined_batches_equal_extract_batch_by_batch(tiny_sam, images, workers):
    extractor = MaskEmbeddingExtractor(
        load_sam(tiny_sam, device="cpu"), points_per_side=4, batch_size=2, encode_workers=workers
    )
    batches = [images, _odd_images()[:2], images[:1], []]
    with extractor.pipelined() as submit:
        futures = [submit(batch) for batch in batches]  # all submitted before any is taken
        streamed = [[future.result() for future in batch] for batch in futures]
    for batch, found in zip(batches, streamed, strict=True):
        assert len(found) == len(batch)
        for a, b in zip(extractor.extract(batch), found, strict=True):
            _assert_same(a, b)


def test_pipelined_host_work_overlaps_the_next_batch(tiny_sam, images, monkeypatch):
    """The next batch's encoder runs while the host still encodes the batch before it."""
    from fiftyone_usam.embeddings import extractor as module

    release, events = threading.Event(), []
    encode, with_masks = MaskEmbeddingExtractor.encode, module._with_masks

    def slow_host(proposals, parts):
        assert release.wait(30)  # the host's part waits until the device starts batch 2
        events.append("host")
        return with_masks(proposals, parts)

    def encode_and_release(self, batch):
        events.append("encode")
        if len(events) > 1:
            release.set()
        return encode(self, batch)

    monkeypatch.setattr(module, "_with_masks", slow_host)
    monkeypatch.setattr(MaskEmbeddingExtractor, "encode", encode_and_release)
    extractor = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), points_per_side=2)
    with extractor.pipelined() as submit:
        first = submit(images[:1])
        assert not first[0].done()
        second = submit(images[1:2])
        assert first[0].result().mask_rles and second[0].result().mask_rles
    assert events == ["encode", "encode", "host", "host"]


def test_pipelined_raises_device_errors_at_submit_and_host_errors_in_the_future(
    tiny_sam, images, monkeypatch
):
    def broken(self):
        raise OSError("host part failed")

    extractor = MaskEmbeddingExtractor(load_sam(tiny_sam, device="cpu"), points_per_side=2)
    with extractor.pipelined() as submit:
        with pytest.raises(ValueError, match="load_rgb"):
            submit([np.zeros((4, 4), np.uint8)])
        monkeypatch.setattr(MaskRuns, "counts", broken)
        (future,) = submit(images[:1])
        with pytest.raises(OSError, match="host part failed"):
            future.result()
        monkeypatch.undo()
        (ok,) = submit(images[:1])  # a failed image leaves the pipeline working
        assert len(ok.result().mask_rles) == 12
