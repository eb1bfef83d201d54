"""Images and data made on the fly for the similarity tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(width: int = 64, height: int = 48, *, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random picture, so JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small, mode="RGB").resize((width, height), Image.Resampling.BILINEAR)
    return image.convert(mode) if mode != "RGB" else image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but whose pixel data is a few bytes of zlib.

    Decoding it would fail as truncated; only a size check made on the header can reject it
    as too large.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def street_and_shop(
    products: int = 12, *, street_per_product: int = 8, informative: int = 8, nuisance: int = 40, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Street and shop features where a few dimensions identify the product and many are noise.

    Unit-variance noise in the nuisance dimensions swamps the product signal for an untrained
    tower; a trained one can learn to ignore it. Returns street, street labels, shop, shop labels
    with two shop rows per product.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(products, informative))

    def rows(labels: np.ndarray, spread: float) -> np.ndarray:
        signal = centres[labels] + spread * rng.normal(size=(len(labels), informative))
        noise = rng.normal(size=(len(labels), nuisance))
        return np.hstack([signal, noise]).astype(np.float32)

    street_labels = np.tile(np.arange(products), street_per_product)
    shop_labels = np.tile(np.arange(products), 2)
    return rows(street_labels, 0.3), street_labels, rows(shop_labels, 0.2), shop_labels
