import io

import numpy as np
import pytest
from PIL import Image

from fiftyone_usam.errors import ImageLoadError
from fiftyone_usam.images import load_rgb


def test_rgb_png_round_trips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_rgb(tmp_path / "a.png")
    assert image.dtype == np.uint8 and image.shape == (7, 9, 3)
    np.testing.assert_array_equal(image, pixels)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = load_rgb(tmp_path / "g.png")
    assert image.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray)


def test_sixteen_bit_is_scaled_to_eight_bit(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_rgb(tmp_path / "deep.png")
    assert image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[..., 0], [[0, 1, 255], [128, 4, 255]])


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent blue -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> grey
    rgba[1, 1] = (0, 255, 0, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    image = load_rgb(tmp_path / "t.png").astype(int)
    assert tuple(image[0, 0]) == (255, 0, 0)
    assert tuple(image[0, 1]) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in image[1, 0])
    assert tuple(image[1, 1]) == (0, 255, 0)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, left half red; orientation 6 means "rotate 90 degrees clockwise
    # to display", so the displayed image is 20 wide x 40 high with red on top.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    image = load_rgb(tmp_path / "rot.jpg").astype(int)
    assert image.shape == (40, 20, 3)
    assert image[5, 10, 0] > 200 and image[5, 10, 2] < 60  # top: red
    assert image[35, 10, 2] > 200 and image[35, 10, 0] < 60  # bottom: blue


def test_palette_image_with_transparency(tmp_path):
    image = Image.new("P", (3, 3), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    rgb = load_rgb(tmp_path / "p.png")
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[1, 1]) == (0, 255, 0)


def test_truncated_jpeg_is_a_load_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r"cut.jpg"):
        load_rgb(tmp_path / "cut.jpg")


def test_non_image_and_missing_files_are_load_errors(tmp_path):
    (tmp_path / "page.jpg").write_text("<html><body>not an image</body></html>")
    with pytest.raises(ImageLoadError, match=r"not a readable image"):
        load_rgb(tmp_path / "page.jpg")
    with pytest.raises(ImageLoadError, match=r"not found"):
        load_rgb(tmp_path / "nope.png")
