from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
from PIL import Image

from similarity.images import (
    BadBox,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    backbone_input,
    clamp_box,
    crop_box,
    open_image,
    preprocess_image,
    preprocess_image_mobilenet,
)

from .factories import encode, photo, png_header_only

HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Gone</body></html>"


def test_it_rejects_html_served_as_jpeg(tmp_path):
    page = tmp_path / "dress.jpg"
    page.write_bytes(HTML)

    with pytest.raises(NotAnImage, match="web page"):
        open_image(page)
    with pytest.raises(NotAnImage):
        open_image(HTML)


def test_it_rejects_random_bytes_as_not_an_image():
    with pytest.raises(NotAnImage, match="not an image"):
        open_image(np.random.default_rng(0).bytes(500))


def test_it_rejects_empty_input(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")

    with pytest.raises(EmptyImage):
        open_image(b"")
    with pytest.raises(EmptyImage):
        open_image(empty)
    with pytest.raises(EmptyImage):
        open_image(io.BytesIO())


def test_it_rejects_truncated_jpeg():
    data = encode(photo(320, 240), "JPEG", quality=90)

    with pytest.raises(TruncatedImage):
        open_image(data[: len(data) // 2])
    # Only the end-of-image marker missing.
    with pytest.raises(TruncatedImage):
        open_image(data[:-2])


def test_it_rejects_truncated_png():
    data = encode(photo(320, 240), "PNG")

    with pytest.raises(TruncatedImage):
        open_image(data[: len(data) // 2])


def test_it_rejects_a_png_over_the_pixel_cap_from_its_header():
    # Decoding this file would raise TruncatedImage, so ImageTooLarge proves no decode happened.
    with pytest.raises(ImageTooLarge, match="too large"):
        open_image(png_header_only(8000, 6000))


def test_it_honours_a_custom_pixel_cap():
    data = encode(photo(100, 100), "PNG")

    assert open_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLarge):
        open_image(data, max_pixels=9_999)


def test_it_turns_pillows_decompression_bomb_error_into_image_too_large():
    # Above Pillow's own hard limit (2 × MAX_IMAGE_PIXELS) even when our cap is lifted.
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10

    with pytest.raises(ImageTooLarge):
        open_image(png_header_only(side, side), max_pixels=10**12)


def test_it_rejects_too_many_bytes(tmp_path):
    data = encode(photo(), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)

    for source in (data, io.BytesIO(data), path):
        with pytest.raises(ImageTooLarge, match="MB"):
            open_image(source, max_bytes=len(data) - 1)
    assert open_image(path, max_bytes=len(data)).size == (64, 48)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_it_rejects_unsupported_formats_by_name(fmt):
    with pytest.raises(UnsupportedFormat, match=fmt):
        open_image(encode(photo(), fmt))


def test_it_can_narrow_the_allowed_formats():
    with pytest.raises(UnsupportedFormat, match="PNG"):
        open_image(encode(photo(), "PNG"), allowed_formats={"JPEG"})


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_it_accepts_jpeg_png_and_webp(fmt):
    original = photo(64, 48, seed=3)

    image = open_image(encode(original, fmt, quality=95) if fmt != "PNG" else encode(original, fmt))

    assert image.mode == "RGB"
    assert image.size == (64, 48)
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(original, np.int16))
    assert difference.mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_it_composites_transparency_on_white(fmt):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (200, 0, 0, 255)  # opaque red
    rgba[:, 10:] = (0, 0, 0, 0)  # fully transparent black
    data = (
        encode(Image.fromarray(rgba, "RGBA"), fmt, lossless=True)
        if fmt == "WEBP"
        else encode(Image.fromarray(rgba, "RGBA"), fmt)
    )

    pixels = np.asarray(open_image(data))

    assert pixels.shape == (10, 20, 3)
    assert tuple(pixels[5, 2]) == (200, 0, 0)
    assert tuple(pixels[5, 15]) == (255, 255, 255)


def test_it_converts_palette_greyscale_and_16_bit_images_to_rgb():
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    grey = photo().convert("L")
    sixteen = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))

    for image in (palette, grey, sixteen):
        assert open_image(encode(image, "PNG")).mode == "RGB"
    assert tuple(np.asarray(open_image(encode(sixteen, "PNG")))[0, 0]) == (255, 255, 255)


def test_it_applies_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(photo(40, 20), "JPEG", exif=exif.tobytes())

    assert Image.open(io.BytesIO(data)).size == (40, 20)
    assert open_image(data).size == (20, 40)


def test_it_reads_paths_and_file_objects_from_the_start(tmp_path):
    data = encode(photo(), "JPEG")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    stream = io.BytesIO(data)
    stream.seek(100)

    assert open_image(str(path)).size == (64, 48)
    assert open_image(path).size == (64, 48)
    assert open_image(stream).size == (64, 48)


def test_it_returns_a_loaded_image_independent_of_the_source():
    stream = io.BytesIO(encode(photo(), "PNG"))
    image = open_image(stream)
    stream.close()

    assert np.asarray(image).shape == (48, 64, 3)


def test_it_makes_every_image_error_a_value_error_with_a_readable_message():
    for error in (NotAnImage, TruncatedImage, ImageTooLarge, UnsupportedFormat, EmptyImage):
        assert issubclass(error, ImageError)
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ImageError) as caught:
        open_image(HTML)
    assert str(caught.value)[0].isupper() and str(caught.value).endswith(".")


def test_it_keeps_a_box_inside_the_image_unchanged():
    assert clamp_box((10, 20, 30, 40), (100, 100)) == (10, 20, 30, 40)
    assert clamp_box((0, 0, 100, 100), (100, 100)) == (0, 0, 100, 100)


def test_it_clamps_a_box_partly_outside_the_image():
    assert clamp_box((-10, -5, 30, 20), (100, 50)) == (0, 0, 20, 15)
    assert clamp_box((90, 40, 30, 20), (100, 50)) == (90, 40, 10, 10)
    assert clamp_box((np.int64(99), 0, 5, 5), (100, 50)) == (99, 0, 1, 5)


@pytest.mark.parametrize(
    "box",
    [
        (10, 10, 0, 5),  # zero width
        (10, 10, 5, 0),  # zero height
        (10, 10, -5, 5),  # negative width
        (100, 10, 5, 5),  # starts at the right edge
        (10, 50, 5, 5),  # starts at the bottom edge
        (-20, 10, 20, 5),  # ends at the left edge
        (500, 500, 10, 10),  # far away
        (1.5, 2, 3, 4),  # not whole pixels
    ],
)
def test_it_rejects_boxes_that_select_no_pixels(box):
    with pytest.raises(BadBox):
        clamp_box(box, (100, 50))


def test_it_crops_the_clamped_box():
    pixels = np.arange(50 * 100 * 3, dtype=np.uint32).reshape(50, 100, 3) % 251
    image = Image.fromarray(pixels.astype(np.uint8))

    crop = crop_box(image, (90, 40, 30, 20))

    assert crop.size == (10, 10)
    assert np.array_equal(np.asarray(crop), pixels[40:50, 90:100].astype(np.uint8))


@pytest.mark.parametrize(
    ("preprocess", "application"), [(preprocess_image, "vgg19"), (preprocess_image_mobilenet, "mobilenet_v2")]
)
def test_it_preprocesses_exactly_like_keras(preprocess, application):
    keras_application = importlib.import_module(f"keras.applications.{application}")
    image = photo(300, 200, seed=7)
    resized = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)

    ours = preprocess(image)
    theirs = keras_application.preprocess_input(resized.copy())

    assert ours.shape == (224, 224, 3)
    assert ours.dtype == np.float32
    assert ours.flags.c_contiguous
    assert np.array_equal(ours, theirs)


def test_it_preprocesses_to_the_requested_size_and_converts_to_rgb():
    out = preprocess_image(photo(30, 30, mode="RGBA"), size=32)

    assert out.shape == (32, 32, 3)


def test_it_keeps_the_stored_pixel_grid_when_asked_not_to_turn_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers turn it a quarter
    data = encode(Image.new("RGB", (300, 200), (90, 30, 160)), "JPEG", exif=exif.tobytes())

    assert open_image(data).size == (200, 300)
    assert open_image(data, upright=False).size == (300, 200)


def test_it_resizes_the_boxed_crop_to_the_backbone_input():
    image = Image.new("RGB", (400, 300), (10, 20, 30))

    assert backbone_input(image, bbox=(10, 10, 100, 50)).size == (224, 224)
    assert backbone_input(image, size=96).size == (96, 96)
