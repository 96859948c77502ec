"""Image checks and duplicate detection on in-memory files."""

import io

import numpy as np
import pytest
from PIL import Image

from fiftyone_usam.sources.validation import (
    REASONS,
    DuplicateIndex,
    ImageLimits,
    Rejected,
    check_image,
    hamming,
    perceptual_hash,
)
from fiftyone_usam.testing.scenes import scene
from tests.fixtures.http_images import photo

LIMITS = ImageLimits(min_size=32, max_bytes=100_000)


def encode(array, format="JPEG", **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def reason(data, limits=LIMITS):
    with pytest.raises(Rejected) as caught:
        check_image(data, limits)
    assert caught.value.reason in REASONS
    return caught.value.reason


def test_a_good_jpeg_is_kept_byte_for_byte():
    data = encode(scene(48, 64, 0), quality=90)
    image = check_image(data, LIMITS)
    assert image.data == data and image.extension == "jpg" and image.mime_type == "image/jpeg"
    assert (image.width, image.height, image.num_channels) == (64, 48, 3)
    assert len(image.sha256) == 64 and 0 <= image.phash < 2**64


def test_rare_formats_are_stored_as_png():
    data = encode(scene(48, 64, 0), "TIFF")
    image = check_image(data, LIMITS)
    assert image.extension == "png" and image.data.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.data))), scene(48, 64, 0))


def test_each_bad_file_is_rejected_for_its_reason():
    good = encode(scene(48, 64, 0), quality=90)
    assert reason(good[: len(good) // 2]) == "corrupt"
    assert reason(good[:-2]) == "corrupt"  # only the end-of-image marker missing
    assert reason(b"<!DOCTYPE html><html><body>404</body></html>") == "not_an_image"
    assert reason(b"") == "not_an_image"
    assert reason(encode(np.zeros((1, 1, 3), np.uint8), "PNG")) == "too_small"
    assert reason(encode(scene(20, 400, 1), "PNG")) == "too_small"  # the shorter side counts
    assert reason(good, ImageLimits(min_size=32, max_bytes=len(good) - 1)) == "too_large"
    assert reason(good, ImageLimits(min_size=32, max_pixels=48 * 64 - 1)) == "too_large"


def test_the_html_rejection_says_what_it_was():
    with pytest.raises(Rejected, match="an HTML page"):
        check_image(b"<html><head></head></html>", LIMITS)


def test_perceptual_hash_is_imagehash_phash():
    imagehash = pytest.importorskip("imagehash")
    for seed in range(5):
        image = Image.fromarray(scene(60, 80, seed))
        assert perceptual_hash(image) == int(str(imagehash.phash(image)), 16)


def test_near_copies_hash_close_and_different_images_far():
    original = Image.fromarray(photo(72, 96, 3))
    recompressed = Image.open(io.BytesIO(encode(np.asarray(original), quality=30)))
    resized = original.resize((80, 60))
    near = [
        hamming(perceptual_hash(original), perceptual_hash(im)) for im in (recompressed, resized)
    ]
    assert max(near) <= 4
    hashes = [perceptual_hash(Image.fromarray(photo(72, 96, seed))) for seed in range(10)]
    far = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(far) > 6


def test_duplicate_index_finds_exact_and_near_copies():
    first = check_image(encode(photo(72, 96, 3), quality=90), LIMITS)
    index = DuplicateIndex(near_duplicate_distance=6)
    index.check(first)
    index.add(first.sha256, first.phash)
    with pytest.raises(Rejected) as exact:
        index.check(first)
    assert exact.value.reason == "duplicate"
    near = check_image(encode(photo(72, 96, 3), quality=30), LIMITS)
    with pytest.raises(Rejected) as caught:
        index.check(near)
    assert caught.value.reason == "near_duplicate"
    index.check(check_image(encode(photo(72, 96, 4), quality=90), LIMITS))  # a new image
    exact_only = DuplicateIndex(near_duplicate_distance=-1)
    exact_only.add(first.sha256, first.phash)
    exact_only.check(near)


def test_hamming_counts_bits():
    assert hamming(0, 0) == 0 and hamming(0b1011, 0b0001) == 2 and hamming(0, 2**64 - 1) == 64
