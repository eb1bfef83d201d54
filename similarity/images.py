"""Safe image loading, Street2Shop boxes and backbone preprocessing (Pillow and numpy only).

The web process imports this module, so it must never import TensorFlow or Django.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from numbers import Integral
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger("similarity")

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})

# Keras "caffe" preprocessing for VGG: BGR channel order, ImageNet means, no scaling.
IMAGENET_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# LOAD_TRUNCATED_IMAGES is a Pillow module global; serialise the rare case where
# someone switched it on so that our load() still refuses truncated files.
_truncation_lock = threading.Lock()


class ImageError(ValueError):
    """An uploaded or downloaded file cannot be used as a photo; the message is shown to shoppers."""


class NotAnImage(ImageError):
    """The data is not an image at all (e.g. an HTML error page)."""


class TruncatedImage(ImageError):
    """The image header is fine but the pixel data is cut short or damaged."""


class ImageTooLarge(ImageError):
    """Too many pixels or too many bytes."""


class UnsupportedFormat(ImageError):
    """A real image in a format we do not accept."""


class EmptyImage(ImageError):
    """Zero bytes."""


class BadBox(ValueError):
    """A bounding box that selects no pixels."""


def open_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    max_pixels: int = 40_000_000,
    max_bytes: int | None = None,
    allowed_formats: Iterable[str] = ALLOWED_FORMATS,
    upright: bool = True,
) -> Image.Image:
    """Open, validate and fully decode an image; return it in RGB, turned upright by its EXIF tag.

    `upright=False` keeps the stored pixel grid: Street2Shop's boxes were drawn on it (browsers
    of the time ignored EXIF orientation), so dataset crops must not be rotated first.
    """
    data = _read_bytes(source, max_bytes=max_bytes)
    allowed = frozenset(allowed_formats)
    image = _open_header(data, allowed=allowed)
    try:
        width, height = image.size
        # Checked on the header only, before any pixel is decoded.
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"This image is too large ({width}×{height} pixels); "
                f"the limit is {max_pixels / 1e6:g} megapixels."
            )
        if width < 1 or height < 1:
            raise EmptyImage("This image has no pixels.")
        _load_fully(image)
        return to_rgb(_exif_transpose(image) if upright else image)
    finally:
        image.close()


def _read_bytes(source: str | os.PathLike | bytes | BinaryIO, *, max_bytes: int | None) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        size = os.stat(source).st_size
        if max_bytes is not None and size > max_bytes:
            raise _too_many_bytes(size, max_bytes)
        with open(source, "rb") as handle:
            data = handle.read()
    else:
        try:
            source.seek(0)
        except (AttributeError, OSError):
            pass  # a pipe or socket: read what is left
        # Read one byte past the limit so an oversized stream is detected without reading all of it.
        data = source.read() if max_bytes is None else source.read(max_bytes + 1)
    if not data:
        raise EmptyImage("The file is empty.")
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_many_bytes(len(data), max_bytes)
    return data


def _too_many_bytes(size: int, max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"This file is too large ({size / 1e6:.1f} MB); the limit is {max_bytes / 1e6:.1f} MB."
    )


def _open_header(data: bytes, *, allowed: frozenset[str]) -> Image.Image:
    # catch_warnings is process-global; the worst a concurrent thread can see is this filter
    # briefly, and Pillow's warning only fires far above our default pixel cap anyway.
    try:
        # Only the allowed decoders look at the data. Phone JPEGs with embedded previews come
        # back as format "MPO" through the JPEG decoder, which is what we want.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(allowed))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("This image is too large to process safely.") from exc
    except UnidentifiedImageError:
        other = _identify_any(data)
        if other is not None:
            names = ", ".join(sorted(allowed))
            raise UnsupportedFormat(f"{other} files are not supported; please use {names}.") from None
        raise NotAnImage(_not_an_image_message(data)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage("This image is damaged or incomplete.") from exc
    return image


def _identify_any(data: bytes) -> str | None:
    """Name the format of an image we refuse, for a helpful message; None if it is no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as other:
                return other.format or "This kind of image"
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return None
    except (OSError, SyntaxError, ValueError, EOFError):
        return None


def _not_an_image_message(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "This file is a web page, not an image."
    return "This file is not an image."


def _load_fully(image: Image.Image) -> None:
    """Decode every pixel now so truncated data fails here, not later in a worker."""
    try:
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            with _truncation_lock:
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    image.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = True
        else:
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("This image is too large to process safely.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage("This image is damaged or incomplete.") from exc


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        # A broken EXIF block should not cost the shopper their photo; keep it as stored.
        logger.debug("Ignoring unreadable EXIF orientation", exc_info=True)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparent areas become white, not black."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode.startswith("I;16"):
        # 16-bit greyscale PNG: Pillow's convert("RGB") would clip, so scale to 8 bits.
        pixels = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def clamp_box(bbox: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Clamp a (left, top, width, height) box to an image of (width, height)."""
    if len(bbox) != 4 or not all(isinstance(value, Integral) for value in bbox):
        raise BadBox(f"A box must be four whole numbers (left, top, width, height), got {bbox!r}.")
    left, top, width, height = (int(value) for value in bbox)
    image_width, image_height = (int(value) for value in size)
    if width <= 0 or height <= 0:
        raise BadBox(f"The box {bbox!r} has no area.")
    new_left, new_top = max(left, 0), max(top, 0)
    new_right, new_bottom = min(left + width, image_width), min(top + height, image_height)
    if new_right - new_left < 1 or new_bottom - new_top < 1:
        raise BadBox(f"The box {bbox!r} lies outside the {image_width}×{image_height} image.")
    return new_left, new_top, new_right - new_left, new_bottom - new_top


def crop_box(image: Image.Image, bbox: tuple[int, int, int, int]) -> Image.Image:
    """Crop a (left, top, width, height) box, clamped to the image."""
    left, top, width, height = clamp_box(bbox, image.size)
    return image.crop((left, top, left + width, top + height))


def detected_format(source: BinaryIO) -> str:
    """The format Pillow reads from a file's header ("JPEG", "PNG", "WEBP"…); the position is kept."""
    position = source.tell()
    try:
        source.seek(0)
        with Image.open(source) as image:
            return "JPEG" if image.format == "MPO" else str(image.format)
    finally:
        source.seek(position)


def backbone_input(image: Image.Image, *, bbox: tuple[int, int, int, int] | None = None, size: int = 224) -> Image.Image:
    """The (boxed) image at the backbone's input size.

    Resizing here, not in the batch, means a batch holds 224×224 images instead of decoded
    originals of up to 40 megapixels; preprocessing's own resize is then a no-op.
    """
    if bbox is not None:
        image = crop_box(image, bbox)
    return image.resize((size, size), Image.Resampling.BILINEAR)


def thumbnail_jpeg(image: Image.Image, *, longest: int = 320, quality: int = 85) -> bytes:
    """A small JPEG of the image for grids and lists, aspect ratio kept."""
    small = image.copy()
    small.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    to_rgb(small).save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _resized_pixels(image: Image.Image, size: int) -> np.ndarray:
    rgb = image if image.mode == "RGB" else to_rgb(image)
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.float32)


def preprocess_image(image: Image.Image, size: int = 224) -> np.ndarray:
    """Resize to size×size and apply Keras' VGG "caffe" preprocessing, in numpy."""
    pixels = _resized_pixels(image, size)
    # Same order of operations as keras.applications.imagenet_utils: flip to BGR, then centre.
    bgr = pixels[..., ::-1] - IMAGENET_BGR_MEANS
    return np.ascontiguousarray(bgr, dtype=np.float32)


def preprocess_image_mobilenet(image: Image.Image, size: int = 224) -> np.ndarray:
    """Resize to size×size and scale RGB to [-1, 1], as Keras' MobileNetV2 ("tf" mode) preprocessing."""
    pixels = _resized_pixels(image, size)
    # Divide then subtract, in float32, as imagenet_utils does, so the results match bit for bit.
    pixels /= np.float32(127.5)
    pixels -= np.float32(1.0)
    return np.ascontiguousarray(pixels, dtype=np.float32)
