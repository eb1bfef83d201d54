from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from similarity.images import (
    EmptyImage,
    ImageHeader,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    clean_jpeg,
    open_image,
    read_header,
    thumbnail_jpeg,
)

from .factories import encode, photo, png_header_only

HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Gone</body></html>"
CAP = 16_000_000
ORIENTATION = 0x0112
GPS_IFD = 0x8825


def sideways_exif() -> Image.Exif:
    """EXIF as a phone writes it: stored sideways (orientation 6) and where it was taken."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90° clockwise to display"
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.5)
    gps[3], gps[4] = "E", (13.0, 24.0, 36.0)
    return exif


def halves(width: int, height: int) -> Image.Image:
    """Red on the left half, blue on the right, so a turn can be told from a flip."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (220, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 220)
    return Image.fromarray(pixels)


class LimitedStream(io.BytesIO):
    """An upload stream that fails the test if more than `limit` bytes are asked of it."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit
        self.served = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or self.served + size > self.limit:
            pytest.fail(f"read({size}) after {self.served} bytes; at most {self.limit} may be read")
        chunk = super().read(size)
        self.served += len(chunk)
        return chunk


@pytest.mark.parametrize(("fmt", "extension"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_it_reads_the_header_of_each_allowed_format(fmt, extension):
    header = read_header(encode(photo(64, 48), fmt), max_pixels=CAP)

    assert header == ImageHeader(format=fmt, width=64, height=48, orientation=1)
    assert header.upright_size == (64, 48)
    assert header.extension == extension


def test_it_reads_a_phone_mpo_as_jpeg():
    data = encode(photo(64, 48), "MPO", save_all=True, append_images=[photo(32, 24, seed=1)])

    header = read_header(data, max_pixels=CAP)

    assert (header.format, header.extension) == ("JPEG", "jpg")


def test_it_swaps_the_upright_size_for_orientation_6():
    header = read_header(encode(photo(40, 20), "JPEG", exif=sideways_exif()), max_pixels=CAP)

    assert (header.width, header.height, header.orientation) == (40, 20, 6)
    assert header.upright_size == (20, 40)
    assert header.upright_size == open_image(encode(photo(40, 20), "JPEG", exif=sideways_exif())).size


def test_it_reads_a_png_orientation_without_decoding_the_pixels():
    data = encode(photo(40, 20), "PNG", exif=sideways_exif())
    # Pixel data cut short: decoding would raise TruncatedImage, so a header proves none happened.
    cut = data[: data.index(b"IDAT") + 8]

    assert read_header(cut, max_pixels=CAP).upright_size == (20, 40)


def test_it_reads_broken_or_impossible_orientations_as_upright():
    broken = encode(photo(30, 20), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\xff")
    impossible = Image.Exif()
    impossible[ORIENTATION] = 9

    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        assert read_header(broken, max_pixels=CAP).orientation == 1
    assert read_header(encode(photo(30, 20), "JPEG", exif=impossible), max_pixels=CAP).orientation == 1


def test_it_refuses_a_png_over_the_pixel_cap_without_decoding():
    # 40 million pixels claimed by a file of a few dozen bytes whose pixel data would not decode.
    data = png_header_only(6400, 6250)

    with pytest.raises(ImageTooLarge, match=r"6400×6250 pixels.*16 megapixels"):
        read_header(data, max_pixels=CAP)
    assert read_header(data, max_pixels=6400 * 6250).upright_size == (6400, 6250)


def test_it_refuses_images_without_pixels():
    # Pillow already refuses a zero side in the header; either way it never reaches a worker.
    with pytest.raises((TruncatedImage, EmptyImage)):
        read_header(png_header_only(0, 5), max_pixels=CAP)


def test_it_rejects_html_served_as_an_image():
    with pytest.raises(NotAnImage, match="web page"):
        read_header(HTML, max_pixels=CAP)


def test_it_rejects_gif_as_unsupported():
    with pytest.raises(UnsupportedFormat, match="GIF"):
        read_header(encode(photo(), "GIF"), max_pixels=CAP)


@pytest.mark.parametrize(
    ("fmt", "cut"),
    [
        ("JPEG", 4),  # the start-of-image marker only
        ("JPEG", 20),  # inside the first header segment
        ("PNG", 12),  # signature and half a chunk length
        ("PNG", 30),  # inside the size chunk
        ("WEBP", 20),  # inside the RIFF header
    ],
)
def test_it_rejects_a_truncated_header_as_damaged(fmt, cut):
    data = encode(photo(64, 48), fmt, exif=sideways_exif()) if fmt == "JPEG" else encode(photo(64, 48), fmt)

    with pytest.raises(TruncatedImage, match="damaged"):
        read_header(data[:cut], max_pixels=CAP)


def test_it_reads_at_most_one_byte_past_max_bytes_from_a_stream():
    data = encode(photo(), "PNG")

    fits = LimitedStream(data, limit=len(data) + 1)
    assert read_header(fits, max_pixels=CAP, max_bytes=len(data)).width == 64
    too_big = LimitedStream(data + b"\0" * 10_000, limit=len(data) + 1)
    with pytest.raises(ImageTooLarge, match="MB"):
        read_header(too_big, max_pixels=CAP, max_bytes=len(data))
    assert too_big.served == len(data) + 1


def test_it_decodes_a_big_jpeg_at_a_reduced_scale():
    data = encode(photo(2000, 1600), "JPEG", quality=90)

    # Both sides stay at least max_side: 1600 // 224 = 7, so libjpeg's 1/4 scale is the smallest.
    assert open_image(data, max_side=224).size == (500, 400)
    assert open_image(data, max_side=1024).size == (2000, 1600)  # half would be too small
    assert open_image(data).size == (2000, 1600)


def test_it_leaves_small_jpegs_and_other_formats_at_full_size():
    assert open_image(encode(photo(300, 200), "JPEG"), max_side=1024).size == (300, 200)
    assert open_image(encode(photo(2000, 1600), "PNG"), max_side=224).size == (2000, 1600)


def test_it_turns_a_reduced_jpeg_upright():
    data = encode(photo(2000, 1600), "JPEG", exif=sideways_exif())

    assert open_image(data, max_side=224).size == (400, 500)
    assert open_image(data, max_side=224, upright=False).size == (500, 400)


def test_it_still_rejects_truncated_jpegs_when_decoding_at_a_reduced_scale():
    data = encode(photo(2000, 1600), "JPEG", quality=90)

    with pytest.raises(TruncatedImage):
        open_image(data[: len(data) // 2], max_side=224)
    with pytest.raises(TruncatedImage):
        open_image(data[:-2], max_side=224)


def test_it_strips_every_piece_of_metadata_and_keeps_the_photo_upright():
    data = encode(
        halves(300, 200),
        "JPEG",
        quality=95,
        exif=sideways_exif(),
        icc_profile=b"\0" * 128,
        xmp=b"<x:xmpmeta>taken at home</x:xmpmeta>",
        comment=b"serial 1234",
    )
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)  # the phone's photo has its position

    clean = Image.open(io.BytesIO(clean_jpeg(open_image(data, upright=True))))

    assert clean.format == "JPEG"
    assert not clean.getexif()
    assert not {"exif", "icc_profile", "xmp", "comment"} & clean.info.keys()
    assert clean.size == (200, 300)
    # Turned a quarter clockwise: the stored left (red) half is now on top.
    pixels = np.asarray(clean.convert("RGB"), dtype=np.int16)
    assert pixels[20, 100, 0] > 180 and pixels[20, 100, 2] < 60
    assert pixels[280, 100, 2] > 180 and pixels[280, 100, 0] < 60


def test_it_shrinks_the_clean_copy_to_its_longest_side_but_never_enlarges():
    big = Image.open(io.BytesIO(clean_jpeg(photo(3000, 2000), longest=1024)))
    small = Image.open(io.BytesIO(clean_jpeg(photo(300, 200))))

    assert big.size == (1024, 683)
    assert small.size == (300, 200)


def test_it_leaves_no_comment_in_thumbnails():
    image = open_image(encode(photo(), "JPEG", comment=b"serial 1234", exif=sideways_exif()))

    thumbnail = Image.open(io.BytesIO(thumbnail_jpeg(image)))

    assert not {"exif", "comment"} & thumbnail.info.keys()
