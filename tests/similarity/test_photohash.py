"""The perceptual hash of shop photos, Hamming distances, and near pairs among many hashes."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from shop.street2shop.demo.photos import shop_photo
from shop.street2shop.demo.plan import Garment, photo_rng, random_dress, random_skirt
from similarity.photohash import (
    _popcount_by_bytes,
    components,
    hamming,
    hamming_to_many,
    near_pairs,
    perceptual_hash,
    popcount,
    signed64,
)

# Measured on 200 demo shop photos (dresses and skirts, at 256×320 and 800×1000): quality 70 and
# ×0.9 / ×1.1 at most 8 bits (mean ~1.1), 4 % cut off each side at most 16 (mean ~8.7); photos of
# different garments are ~26 apart on average. Cropping moves every frequency: pHash's weak spot.
MAX_EDIT_DISTANCE = 10
MAX_CROP_DISTANCE = 18


def jpeg_copy(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def edited_copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    dx, dy = round(0.04 * w), round(0.04 * h)
    return {
        "jpeg 70": jpeg_copy(image, 70),
        "×0.9": image.resize((round(w * 0.9), round(h * 0.9)), Image.Resampling.LANCZOS),
        "×1.1": image.resize((round(w * 1.1), round(h * 1.1)), Image.Resampling.LANCZOS),
        "crop 4 %": image.crop((dx, dy, w - dx, h - dy)),
    }


def demo_photos(count: int, seed: int) -> list[tuple[Garment, Image.Image]]:
    rng = np.random.default_rng(seed)
    garments = [(random_dress if i % 3 else random_skirt)(rng) for i in range(count)]
    return [
        (g, shop_photo(g, photo_rng(seed, i)).resize((800, 1000), Image.Resampling.BICUBIC))
        for i, g in enumerate(garments)
    ]


def test_it_hashes_edited_copies_close_and_other_garments_far():
    photos = demo_photos(30, seed=5)
    hashes = [perceptual_hash(image) for _, image in photos]
    distances: dict[str, list[int]] = {}
    for (_, image), value in zip(photos, hashes):
        for edit, copy in edited_copies(image).items():
            distances.setdefault(edit, []).append(hamming(value, perceptual_hash(copy)))
    others = [
        hamming(hashes[i], hashes[j])
        for i in range(len(photos))
        for j in range(i + 1, len(photos))
        if photos[i][0].cut != photos[j][0].cut or photos[i][0].pattern != photos[j][0].pattern
    ]
    for edit, found in distances.items():
        print(f"{edit}: max {max(found)}, mean {np.mean(found):.2f}, {found}")
    print(f"other garments: mean {np.mean(others):.1f}, min {min(others)}")
    for edit in ("jpeg 70", "×0.9", "×1.1"):
        assert max(distances[edit]) <= MAX_EDIT_DISTANCE
        assert np.mean(distances[edit]) <= 3
    assert max(distances["crop 4 %"]) <= MAX_CROP_DISTANCE
    assert np.mean(others) >= 2 * np.mean(distances["crop 4 %"])
    assert np.mean(others) >= 18


def test_it_hashes_the_same_pixels_the_same():
    dress = replace(random_dress(np.random.default_rng(1)), pattern="solid")
    image = shop_photo(dress, photo_rng(1, 1))
    assert perceptual_hash(image) == perceptual_hash(image.copy())
    assert perceptual_hash(image) == perceptual_hash(image.convert("RGBA"))


def test_it_returns_a_signed_64_bit_int():
    for _, image in demo_photos(6, seed=8):
        value = perceptual_hash(image)
        assert isinstance(value, int)
        assert -(2**63) <= value < 2**63
        assert int(np.int64(value)) == value  # fits a PostgreSQL bigint as it is


def test_it_rejects_an_empty_image():
    with pytest.raises(ValueError, match="empty"):
        perceptual_hash(Image.new("RGB", (10, 0)))


def test_it_counts_differing_bits_of_signed_hashes():
    assert hamming(0, 0) == 0
    assert hamming(-1, 0) == 64
    assert hamming(-(2**63), 0) == 1
    assert hamming(2**63 - 1, -1) == 1
    assert hamming(-1, 2**64 - 1) == 0  # the same 64 bits, signed or not
    values = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, size=500, dtype=np.int64, endpoint=True)
    query = int(values[7])
    expected = [hamming(query, int(v)) for v in values]
    assert hamming_to_many(query, values).tolist() == expected
    assert hamming_to_many(query, values).dtype == np.int64
    assert _popcount_by_bytes(values).tolist() == popcount(values).tolist()
    assert signed64(2**64 - 5) == -5


def planted_hashes(n: int, seed: int) -> np.ndarray:
    """Random hashes, a few hundred of them copies of another with up to 12 bits flipped."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    for _ in range(n // 5):
        source, target = rng.integers(n, size=2)
        flips = rng.choice(64, size=int(rng.integers(0, 13)), replace=False)
        values[target] = values[source] ^ np.bitwise_or.reduce(
            np.uint64(1) << flips.astype(np.uint64), initial=np.uint64(0)
        )
    return values.view(np.int64)


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    bits = hashes.view(np.uint64)
    close = popcount((bits[:, None] ^ bits[None, :]).view(np.int64)) <= max_distance
    i, j = np.nonzero(np.triu(close, k=1))
    return [(int(a), int(b)) for a, b in zip(i, j)]


@pytest.mark.parametrize("max_distance", [0, 1, 3, 6, 10, 16])
def test_it_finds_the_same_near_pairs_as_brute_force(max_distance: int):
    hashes = planted_hashes(2000, seed=max_distance)
    found = near_pairs(hashes, max_distance)
    print(f"max_distance {max_distance}: {len(found)} pairs")
    assert found == brute_force_pairs(hashes, max_distance)
    assert len(found) > 10


def test_it_finds_every_pair_at_the_full_distance():
    hashes = planted_hashes(30, seed=1)
    assert near_pairs(hashes, 64) == [(i, j) for i in range(30) for j in range(i + 1, 30)]
    assert near_pairs(hashes[:0], 4) == []
    with pytest.raises(ValueError):
        near_pairs(hashes, -1)


def test_it_labels_components_by_their_smallest_index():
    labels = components(8, [(5, 3), (3, 6), (1, 2), (7, 6), (2, 2)])
    assert labels.tolist() == [0, 1, 1, 3, 4, 3, 3, 3]
    assert components(3, []).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        components(3, [(0, 3)])
