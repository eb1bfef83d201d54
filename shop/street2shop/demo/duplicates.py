"""Relistings: a retailer listing a garment again under a new product id, its shop photos saved once more.

Planned after every original, from their own stream, so adding them changes no original id, photo or pair.
A copy's photos are made from its original's JPEG files: re-encoded at another quality, slightly
resized and/or re-cropped (each margin cut, or padded with the photo's own edge, by 1-6 % of the side).
"""

from __future__ import annotations

import io
from collections.abc import Sequence, Set
from dataclasses import replace

import numpy as np
from PIL import Image

from shop.street2shop.demo.photos import SHOP_QUALITY, encode_jpeg
from shop.street2shop.demo.plan import (
    CATEGORY_MAKERS,
    PHOTO_ID_SPACE,
    PRODUCT_ID_SPACE,
    DemoDatasetError,
    PhotoTask,
    Plan,
    product_price,
    unused_ids,
)

EDITS = ("quality", "resize", "crop")
SECOND_COPY_RATE = 0.25
QUALITIES = tuple(q for q in range(70, 96) if q != SHOP_QUALITY)
MAX_SCALE_CHANGE, MIN_SCALE_CHANGE = 0.15, 0.03
MAX_MARGIN, MIN_MARGIN = 0.06, 0.01


def check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise DemoDatasetError(f"the duplicates fraction must be at least 0 and below 1, not {fraction}")


def plan_relistings(plan: Plan, fraction: float, taken_photos: Set[int]) -> Plan:
    """``plan`` plus copies of round(``fraction`` × its products): the first chosen twice, others sometimes.

    Copies keep their original's title, family, split and look, get a new price, and have shop photos only;
    their photo ids avoid ``taken_photos`` and their product ids the category's own.
    """
    check_fraction(fraction)
    originals = [p for p in plan.products if p.duplicate_of is None]
    n_relisted = round(fraction * len(originals))
    if n_relisted == 0:
        return plan
    rng = np.random.default_rng([plan.seed, 0xD0B1E, list(CATEGORY_MAKERS).index(plan.category)])
    chosen = [originals[int(i)] for i in rng.choice(len(originals), size=n_relisted, replace=False)]
    sources = [p for i, p in enumerate(chosen) for _ in range(2 if i == 0 or rng.random() < SECOND_COPY_RATE else 1)]
    product_ids = unused_ids(rng, PRODUCT_ID_SPACE, len(sources), {p.product for p in plan.products})
    copies = [
        replace(p, product=pid, price=product_price(rng, p.garment), duplicate_of=p.product)
        for pid, p in zip(product_ids, sources)
    ]
    # One way of saving again per copy, applied to each of its photos.
    wanted = [
        (copy, source, edits)
        for copy, edits in zip(copies, [_pick_edits(rng) for _ in copies])
        for source in _shop_photos(plan, copy.duplicate_of)
    ]
    photo_ids = unused_ids(rng, PHOTO_ID_SPACE, len(wanted), taken_photos)
    tasks = tuple(
        PhotoTask(photo=photo, kind="copy", products=(copy.product,), source=source, edits=edits)
        for photo, (copy, source, edits) in zip(photo_ids, wanted)
    )
    return replace(plan, products=plan.products + tuple(copies), photos=plan.photos + tasks)


def _shop_photos(plan: Plan, product: int | None) -> list[int]:
    return [t.photo for t in plan.photos if t.kind in ("shop", "model") and t.products == (product,)]


def _pick_edits(rng: np.random.Generator) -> tuple[str, ...]:
    """One, two or all three edits."""
    count = int(rng.integers(1, len(EDITS) + 1))
    return tuple(EDITS[int(i)] for i in sorted(rng.choice(len(EDITS), size=count, replace=False)))


def relisted_jpeg(jpeg: bytes, edits: Sequence[str], rng: np.random.Generator) -> bytes:
    """The source photo saved again with ``edits``; the same ``rng`` state gives the same bytes."""
    with Image.open(io.BytesIO(jpeg)) as opened:
        image = opened.convert("RGB")
    if "crop" in edits:
        image = recrop(image, rng)
    if "resize" in edits:
        image = rescale(image, rng)
    quality = QUALITIES[int(rng.integers(len(QUALITIES)))] if "quality" in edits else SHOP_QUALITY
    return encode_jpeg(image, quality)


def recrop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cut or pad each margin (left, top, right, bottom) by 1-6 % of its side; padding repeats the edge."""
    w, h = image.size
    shares = rng.uniform(MIN_MARGIN, MAX_MARGIN, size=4) * rng.choice([-1, 1], size=4)
    left, top, right, bottom = (round(float(s) * side) for s, side in zip(shares, (w, h, w, h)))
    # The studio background runs to every edge, so repeating the edge pixels pads with background.
    pixels = np.pad(
        np.asarray(image),
        ((max(-top, 0), max(-bottom, 0)), (max(-left, 0), max(-right, 0)), (0, 0)),
        mode="edge",
    )
    ph, pw = pixels.shape[:2]
    return Image.fromarray(pixels[max(top, 0) : ph - max(bottom, 0), max(left, 0) : pw - max(right, 0)])


def rescale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Resize by 3-15 % up or down, keeping the aspect ratio."""
    change = rng.uniform(MIN_SCALE_CHANGE, MAX_SCALE_CHANGE) * (1 if rng.random() < 0.5 else -1)
    w, h = image.size
    return image.resize((round(w * (1 + change)), round(h * (1 + change))), Image.Resampling.LANCZOS)
