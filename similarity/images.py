"""Safe image loading, Street2Shop boxes and backbone preprocessing (Pillow and numpy only).

The web process imports this module, so it must never import TensorFlow or Django.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger("similarity")

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_EXIF_ORIENTATION = 0x0112

# Keras "caffe" preprocessing for VGG: BGR channel order, ImageNet means, no scaling.
IMAGENET_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# LOAD_TRUNCATED_IMAGES is a Pillow module global; serialise the rare case where
# someone switched it on so that our load() still refuses truncated files.
_truncation_lock = threading.Lock()

# A path, the bytes themselves, or a binary file (an open file, an upload, a Django FieldFile).
ImageSource: TypeAlias = str | os.PathLike[str] | bytes | IO[bytes]


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


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding a pixel."""

    format: str  # "JPEG", "PNG" or "WEBP"; phone photos stored as MPO count as JPEG
    width: int  # of the stored pixel grid
    height: int
    orientation: int  # EXIF orientation, 1 (as stored) to 8

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) as shown, once the EXIF orientation is applied."""
        # Orientations 5 to 8 turn the picture a quarter, so its sides swap.
        if 5 <= self.orientation <= 8:
            return self.height, self.width
        return self.width, self.height

    @property
    def extension(self) -> str:
        """The file extension to store the image under: "jpg", "png" or "webp"."""
        return _EXTENSIONS[self.format]


def open_image(
    source: ImageSource,
    *,
    max_pixels: int = 40_000_000,
    max_bytes: int | None = None,
    allowed_formats: Iterable[str] = ALLOWED_FORMATS,
    upright: bool = True,
    max_side: int | None = None,
) -> Image.Image:
    """Open, validate and fully decode an image; return it in RGB, turned upright by its EXIF tag.

    `upright=False` keeps the stored pixel grid: Street2Shop's boxes were drawn on it (browsers
    of the time ignored EXIF orientation), so dataset crops must not be rotated first.

    `max_side` lets a JPEG decode at 1/2, 1/4 or 1/8 scale, the smallest that keeps both sides
    at least `max_side`; other formats, and JPEGs already small enough, decode at full size.
    The pixel cap still applies to the full size. Boxes drawn on the full grid need scaling.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}.")
    data = _read_bytes(source, max_bytes=max_bytes)
    allowed = frozenset(allowed_formats)
    image = _open_header(data, allowed=allowed)
    try:
        _check_size(image, max_pixels=max_pixels)
        if max_side is not None and image.format in ("JPEG", "MPO"):
            # libjpeg scales while decoding, so a 12 MP phone photo wanted at 1024 px never
            # exists at full size in memory: it decodes at half size, a quarter of the pixels.
            image.draft("RGB", (max_side, max_side))
        _load_fully(image)
        return to_rgb(_exif_transpose(image) if upright else image)
    finally:
        image.close()


def read_header(
    source: ImageSource,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    allowed_formats: Iterable[str] = ALLOWED_FORMATS,
) -> ImageHeader:
    """Validate an image from its header alone: format, size, pixel cap and EXIF orientation.

    Cheap enough for the web process: no pixel is decoded, so damaged pixel data is only
    found by open_image later (in the worker). Raises the same ImageError subclasses.
    """
    data = _read_bytes(source, max_bytes=max_bytes)
    image = _open_header(data, allowed=frozenset(allowed_formats))
    try:
        _check_size(image, max_pixels=max_pixels)
        return ImageHeader(
            format=_format_name(image),
            width=image.width,
            height=image.height,
            orientation=_header_orientation(image),
        )
    finally:
        image.close()


def _check_size(image: Image.Image, *, max_pixels: int) -> None:
    width, height = image.size
    # Checked on the header only, before any pixel is decoded.
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"This image is too large ({width}×{height} pixels); the limit is {max_pixels / 1e6:g} megapixels."
        )
    if width < 1 or height < 1:
        raise EmptyImage("This image has no pixels.")


def _format_name(image: Image.Image) -> str:
    # MPO is a JPEG with extra frames (phone previews, depth maps) that we never read.
    return "JPEG" if image.format == "MPO" else str(image.format)


def _header_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation from the metadata already read with the header; 1 if unreadable."""
    try:
        # The base class method, not PngImageFile.getexif(): that one decodes the whole image
        # to look for an eXIf chunk after the pixels. Writers, Pillow too, put it before them;
        # one after them is missed here and only open_image applies it.
        value = Image.Image.getexif(image).get(_EXIF_ORIENTATION, 1)
    except Exception:  # whatever a hostile EXIF block breaks, the photo is kept as stored
        logger.debug("Ignoring unreadable EXIF orientation", exc_info=True)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _read_bytes(source: ImageSource, *, max_bytes: int | None) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        size = os.stat(source).st_size
        if max_bytes is not None and size > max_bytes:
            raise _too_many_bytes(size, max_bytes)
        with open(source, "rb") as handle:
            data = handle.read()
    else:
        with contextlib.suppress(AttributeError, OSError):  # a pipe or socket: read what is left
            source.seek(0)
        # Read one byte past the limit so an oversized stream is detected without reading all of it.
        data = source.read() if max_bytes is None else source.read(max_bytes + 1)
    if not data:
        raise EmptyImage("The file is empty.")
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_many_bytes(len(data), max_bytes)
    return data


def _too_many_bytes(size: int, max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(f"This file is too large ({size / 1e6:.1f} MB); the limit is {max_bytes / 1e6:.1f} MB.")


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
        if _has_signature(data, allowed=allowed):
            # Pillow gives up on a header cut short as if the file were no image at all.
            raise TruncatedImage("This image is damaged or incomplete.") from None
        other = _identify_any(data)
        if other is not None:
            names = ", ".join(sorted(allowed))
            raise UnsupportedFormat(f"{other} files are not supported; please use {names}.") from None
        raise NotAnImage(_not_an_image_message(data)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage("This image is damaged or incomplete.") from exc
    return image


def _has_signature(data: bytes, *, allowed: frozenset[str]) -> bool:
    """Whether the data starts like a file of an allowed format."""
    signatures = {
        "JPEG": data.startswith(b"\xff\xd8\xff"),
        "PNG": data.startswith(b"\x89PNG\r\n\x1a\n"),
        "WEBP": data[:4] == b"RIFF" and data[8:12] == b"WEBP",
    }
    return any(signatures.get(name, False) for name in allowed)


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
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
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


def backbone_input(
    image: Image.Image, *, bbox: tuple[int, int, int, int] | None = None, size: int = 224
) -> Image.Image:
    """The (boxed) image at the backbone's input size.

    Resizing here, not in the batch, means a batch holds 224×224 images instead of decoded
    originals of up to 40 megapixels; preprocessing's own resize is then a no-op.
    """
    if bbox is not None:
        image = crop_box(image, bbox)
    return image.resize((size, size), Image.Resampling.BILINEAR)


def thumbnail_jpeg(image: Image.Image, *, longest: int = 320, quality: int = 85) -> bytes:
    """A small JPEG of the image for grids and lists, aspect ratio kept, without metadata."""
    return _bare_jpeg(image, longest=longest, quality=quality)


def clean_jpeg(image: Image.Image, *, longest: int = 1024, quality: int = 88) -> bytes:
    """The (upright) image as a JPEG at most `longest` pixels a side, with no metadata at all.

    No EXIF (GPS position, camera serial, time), ICC profile, XMP or comment survives: only
    pixels. Turn the image upright first (open_image does), as the orientation tag goes too.
    """
    return _bare_jpeg(image, longest=longest, quality=quality)


def _bare_jpeg(image: Image.Image, *, longest: int, quality: int) -> bytes:
    small = image.copy()
    small.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    rgb = to_rgb(small)
    # Pillow's JPEG encoder copies the comment from .info, and a decoded upload's .info holds
    # its EXIF, ICC and XMP blocks; start from none so nothing can be carried over.
    rgb.info = {}
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=quality, optimize=True)
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
