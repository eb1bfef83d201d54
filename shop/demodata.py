"""A deterministic synthetic dress catalogue laid out exactly like Street2Shop (Pillow and numpy only).

The real Street2Shop photos cannot be downloaded here, so the shop ships this generator as its
offline default catalogue: studio "shop" photos of drawn dresses and noisy "street" photos of a
figure wearing the same dress, with bounding boxes, in Street2Shop's own files and JSON format.
Products come in small families (same cut in another colour, same colour in another pattern) so
that retrieval has near-duplicates to get wrong.

Every photo is drawn from its own random generator seeded by ``(seed, photo id)``, so the same seed
gives byte-identical files whatever the order or process the photos are rendered in (for the same
numpy and Pillow/libjpeg versions).
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from shop.street2shop import photo_filename
from similarity.files import atomic_write_bytes

CATEGORY = "dresses"
URL_TEMPLATE = "http://demo.fashion-similarity.invalid/photos/{photo:09d}.jpg"
README_MARKER = "Fashion-Similarity synthetic demo dataset"

SHOP_SIZE = (256, 320)
STREET_SIZE = (480, 640)
GROUP_SIZE = (640, 480)
SHOP_QUALITY = 85

# Street2Shop's ids: about 425,000 photos (shop and street in one space) and products up to ~68,000.
PHOTO_ID_SPACE = 425_000
PRODUCT_ID_SPACE = 60_000
TRAIN_FRACTION = 0.7
SECOND_SHOP_PHOTO_RATE = 0.2
GROUP_PHOTO_RATE = 0.03

RGB = tuple[int, int, int]
Point = tuple[float, float]

COLOURS: dict[str, RGB] = {
    "black": (34, 34, 38),
    "ivory": (236, 229, 210),
    "navy": (31, 46, 92),
    "red": (188, 32, 45),
    "burgundy": (112, 26, 48),
    "emerald": (22, 122, 82),
    "olive": (112, 116, 56),
    "mustard": (214, 164, 42),
    "blush pink": (234, 168, 176),
    "sky blue": (128, 178, 224),
    "lavender": (172, 152, 212),
    "coral": (244, 118, 94),
}
WHITE: RGB = (246, 245, 240)

SILHOUETTES = ("a-line", "sheath", "fit-and-flare", "shift", "empire")
LENGTHS: dict[str, float] = {"mini": 1.9, "knee": 2.5, "midi": 3.05, "maxi": 3.6}
NECKLINES = ("v-neck", "round", "square", "strapless", "boat")
SLEEVES = ("sleeveless", "cap", "short", "long")
PATTERNS = ("solid", "horizontal-stripes", "vertical-stripes", "polka-dots", "checks", "floral", "colour-block")

SILHOUETTE_WORDS = {
    "a-line": "A-line",
    "sheath": "sheath",
    "fit-and-flare": "fit-and-flare",
    "shift": "shift",
    "empire": "empire-waist",
}
LENGTH_WORDS = {"mini": "mini", "knee": "knee-length", "midi": "midi", "maxi": "maxi"}
NECKLINE_WORDS = {
    "v-neck": "V-neck",
    "round": "",
    "square": "square-neck",
    "strapless": "strapless",
    "boat": "boat-neck",
}
SLEEVE_WORDS = {
    "sleeveless": "",
    "cap": " with cap sleeves",
    "short": " with short sleeves",
    "long": " with long sleeves",
}
PATTERN_WORDS = {
    "solid": "",
    "horizontal-stripes": "Breton-stripe",
    "vertical-stripes": "pinstripe",
    "polka-dots": "polka-dot",
    "checks": "gingham",
    "floral": "floral",
    "colour-block": "colour-block",
}

SKIN_TONES: tuple[RGB, ...] = ((241, 204, 176), (224, 172, 138), (198, 140, 100), (160, 104, 70), (112, 72, 50))
HAIR_COLOURS: tuple[RGB, ...] = ((30, 24, 20), (70, 45, 28), (120, 80, 40), (200, 160, 90), (150, 60, 35))

# Body landmarks in "body units" (u): origin at the base of the neck, y down, the figure is ~5u tall.
HEAD_CENTRE: Point = (0.0, -0.68)
BUST_Y, WAIST_Y, HIP_Y = 0.5, 1.05, 1.5
ANKLE_Y, SOLE_Y = 3.72, 3.86
SHOULDER_JOINT: Point = (0.6, 0.2)
ELBOW: Point = (0.76, 1.05)
WRIST: Point = (0.8, 1.82)


class DemoDatasetError(ValueError):
    """The output directory cannot be used (e.g. it holds files that are not a demo dataset)."""


@dataclass(frozen=True)
class Dress:
    """What a product looks like; every photo of the product draws exactly this."""

    silhouette: str
    length: str
    neckline: str
    sleeves: str
    colour: str
    pattern: str
    accent: str
    motif_seed: int  # puts a floral print's flowers in the same places in every photo of the product

    @property
    def cut(self) -> tuple[str, str, str, str]:
        return (self.silhouette, self.length, self.neckline, self.sleeves)

    @property
    def look(self) -> tuple[str, ...]:
        """Everything visible; two products never share a look."""
        return (*self.cut, self.colour, self.pattern, self.accent)


@dataclass(frozen=True)
class Product:
    product: int
    family: int
    split: str  # "train" or "test", by product as in Street2Shop
    title: str
    price: str
    dress: Dress


@dataclass(frozen=True)
class PhotoTask:
    """One photo to render: a shop photo of one product or a street photo of one or two."""

    photo: int
    kind: str  # "shop", "model" (second shop photo, on a plain-background figure) or "street"
    products: tuple[int, ...]


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    def as_json(self) -> dict[str, int]:
        # Street2Shop's key order.
        return {"width": self.width, "top": self.top, "left": self.left, "height": self.height}


@dataclass(frozen=True)
class Plan:
    seed: int
    products: tuple[Product, ...]
    photos: tuple[PhotoTask, ...]

    def product(self, product_id: int) -> Product:
        return self._by_id[product_id]

    @cached_property
    def _by_id(self) -> dict[int, Product]:
        return {p.product: p for p in self.products}


@dataclass(frozen=True)
class Summary:
    out_dir: Path
    seed: int
    products: int
    families: int
    shop_photos: int
    street_photos: int
    train_pairs: int
    test_pairs: int
    seconds: float


@dataclass
class RenderedPhoto:
    photo: int
    jpeg: bytes
    boxes: list[tuple[int, Box]] = field(default_factory=list)  # (product, box) for street photos


# --------------------------------------------------------------------------- planning


def photo_rng(seed: int, photo: int) -> np.random.Generator:
    """The generator for one photo, independent of every other photo."""
    return np.random.default_rng([seed, photo])


def random_dress(rng: np.random.Generator) -> Dress:
    colour = _pick(rng, list(COLOURS))
    pattern = _pick(rng, PATTERNS)
    return wearable(
        Dress(
            silhouette=_pick(rng, SILHOUETTES),
            length=_pick(rng, list(LENGTHS)),
            neckline=_pick(rng, NECKLINES),
            sleeves=_pick(rng, SLEEVES),
            colour=colour,
            pattern=pattern,
            accent=_accent_for(rng, colour, pattern),
            motif_seed=int(rng.integers(2**31)),
        )
    )


def wearable(dress: Dress) -> Dress:
    """A strapless dress has no sleeves; say so, so titles and attributes match the picture."""
    return replace(dress, sleeves="sleeveless") if dress.neckline == "strapless" else dress


def family_variant(rng: np.random.Generator, base: Dress, change: str) -> Dress:
    """A near-duplicate of ``base``: another colour, another pattern or another cut."""
    if change == "colour":
        colour = _pick(rng, [c for c in COLOURS if c != base.colour])
        keep_accent = base.pattern != "solid" and base.accent != colour
        accent = base.accent if keep_accent else _accent_for(rng, colour, base.pattern)
        return replace(base, colour=colour, accent=accent)
    if change == "pattern":
        pattern = _pick(rng, [p for p in PATTERNS if p != base.pattern])
        return replace(base, pattern=pattern, accent=_accent_for(rng, base.colour, pattern))
    recut = replace(
        base,
        silhouette=_pick(rng, [s for s in SILHOUETTES if s != base.silhouette]),
        neckline=_pick(rng, NECKLINES),
        sleeves=_pick(rng, SLEEVES),
    )
    return wearable(recut)


def plan_families(rng: np.random.Generator, n_products: int) -> list[tuple[int, Dress]]:
    """``n_products`` distinct dresses in families of 2-4: base, recoloured, repatterned, recut."""
    dresses: list[tuple[int, Dress]] = []
    seen: set[tuple[str, ...]] = set()
    family = 0
    while len(dresses) < n_products:
        # The first family always has a recolour and a repattern, so even tiny sets have distractors.
        size = 3 if family == 0 else int(rng.choice([2, 3, 3, 4]))
        changes = ["colour", "pattern"] if rng.random() < 0.5 else ["pattern", "colour"]
        base = _unique(rng, seen, lambda: random_dress(rng))
        members = [base]
        for change in (changes + ["cut"])[: size - 1]:
            members.append(_unique(rng, seen, lambda c=change: family_variant(rng, base, c)))
        dresses.extend((family, d) for d in members)
        family += 1
    return dresses[:n_products]


def product_title(dress: Dress) -> str:
    colour = dress.colour.capitalize()
    if dress.accent not in (dress.colour, "white"):
        # "Navy polka-dot" implies white dots; any other second colour is named.
        colour = f"{colour} and {dress.accent}"
    words = [colour, PATTERN_WORDS[dress.pattern], NECKLINE_WORDS[dress.neckline]]
    words += [LENGTH_WORDS[dress.length], SILHOUETTE_WORDS[dress.silhouette], "dress"]
    return " ".join(w for w in words if w) + SLEEVE_WORDS[dress.sleeves]


def product_price(rng: np.random.Generator, dress: Dress) -> str:
    base = 35 + 10 * list(LENGTHS).index(dress.length) + (10 if dress.pattern != "solid" else 0)
    return f"{base + 5 * int(rng.integers(0, 12)) - 1:.2f}"


def plan_catalogue(*, seed: int, n_products: int, street_per_product: int) -> Plan:
    """Decide every product, id, split and photo; cheap, so rendering can be spread over processes."""
    if n_products < 2:
        raise DemoDatasetError("need at least 2 products (one for train, one for test)")
    if street_per_product < 1:
        raise DemoDatasetError("need at least 1 street photo per product")
    if seed < 0:
        raise DemoDatasetError("the seed must not be negative")
    rng = np.random.default_rng([seed, 0x5EED])
    dresses = plan_families(rng, n_products)
    product_ids = [int(i) + 1 for i in rng.choice(PRODUCT_ID_SPACE, size=n_products, replace=False)]
    n_train = min(n_products - 1, max(1, round(TRAIN_FRACTION * n_products)))
    train = set(rng.permutation(n_products)[:n_train].tolist())
    products = tuple(
        Product(
            product=pid,
            family=family,
            split="train" if i in train else "test",
            title=product_title(dress),
            price=product_price(rng, dress),
            dress=dress,
        )
        for i, (pid, (family, dress)) in enumerate(zip(product_ids, dresses))
    )
    kinds: list[tuple[str, tuple[int, ...]]] = []
    for p in products:
        kinds.append(("shop", (p.product,)))
        if rng.random() < SECOND_SHOP_PHOTO_RATE:
            kinds.append(("model", (p.product,)))
        kinds += [("street", (p.product,))] * street_per_product
    kinds += [("street", pair) for pair in _group_pairs(rng, products)]
    photo_ids = [int(i) + 1 for i in rng.choice(PHOTO_ID_SPACE, size=len(kinds), replace=False)]
    photos = tuple(PhotoTask(photo=pid, kind=k, products=ps) for pid, (k, ps) in zip(photo_ids, kinds))
    return Plan(seed=seed, products=products, photos=photos)


def _group_pairs(rng: np.random.Generator, products: Sequence[Product]) -> list[tuple[int, int]]:
    """A few street photos show two dresses; both products come from one split so the photo does too."""
    by_split = {s: [p.product for p in products if p.split == s] for s in ("train", "test")}
    splits = [s for s, ids in by_split.items() if len(ids) >= 2]
    if not splits:
        return []
    pairs = []
    for _ in range(max(1, round(GROUP_PHOTO_RATE * len(products)))):
        ids = by_split[_pick(rng, splits)]
        a, b = rng.choice(len(ids), size=2, replace=False)
        pairs.append((ids[int(a)], ids[int(b)]))
    return pairs


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _accent_for(rng: np.random.Generator, colour: str, pattern: str) -> str:
    if pattern == "solid":
        return colour
    options = [c for c in COLOURS if c != colour]
    if pattern in ("polka-dots", "horizontal-stripes", "vertical-stripes", "checks"):
        # Classic prints mostly pair a colour with white or black.
        options += ["white"] * 6 + (["black"] * 3 if colour != "black" else [])
    return _pick(rng, options)


def _unique(rng: np.random.Generator, seen: set[tuple[str, ...]], make: Callable[[], Dress]) -> Dress:
    for _ in range(100):
        dress = make()
        if dress.look not in seen:
            seen.add(dress.look)
            return dress
    raise DemoDatasetError("could not find an unused dress look")


# --------------------------------------------------------------------------- dress geometry (body units)


@dataclass(frozen=True)
class Shape:
    body: list[Point]
    sleeves: list[list[Point]]
    seam_y: float | None  # a visible waist seam, if the cut has one

    def extent(self) -> tuple[float, float, float, float]:
        points = self.body + [p for s in self.sleeves for p in s]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return min(xs), min(ys), max(xs), max(ys)


def side_profile(dress: Dress) -> list[Point]:
    """Half-widths down the right side of the dress, from the underarm to the hem."""
    hem = LENGTHS[dress.length]
    drop = hem - HIP_Y
    waist, hip, hem_half = {
        "sheath": (0.37, 0.5, 0.5 - 0.04 * drop),
        "a-line": (0.37, 0.55, 0.55 + 0.22 * drop),
        "fit-and-flare": (0.34, 0.66, 0.66 + 0.3 * drop),
        "shift": (0.47, 0.5, 0.5 + 0.05 * drop),
        "empire": (0.44, 0.56, 0.56 + 0.17 * drop),
    }[dress.silhouette]
    points = [(0.46, 0.42), (0.46, BUST_Y)]
    if dress.silhouette == "empire":
        points.append((0.42, 0.68))
    points += [(waist, WAIST_Y), ((waist + hip) / 2 + 0.02, (WAIST_Y + HIP_Y) / 2), (hip, HIP_Y), (hem_half, hem)]
    return points


def half_width_at(profile: list[Point], y: np.ndarray) -> np.ndarray:
    ys = [p[1] for p in profile]
    xs = [p[0] for p in profile]
    return np.interp(y, ys, xs)


def neckline_points(dress: Dress) -> list[Point]:
    """The right half of the neckline from the centre front up to the neck edge."""
    if dress.neckline == "v-neck":
        return [(0.0, 0.56), (0.2, 0.02)]
    if dress.neckline == "square":
        return [(0.0, 0.32), (0.21, 0.32), (0.21, 0.02)]
    depth, edge = (0.22, 0.19) if dress.neckline == "round" else (0.09, 0.34)
    return [(edge * math.sin(a), depth * math.cos(a)) for a in np.linspace(0, math.pi / 2, 7)]


def dress_shape(dress: Dress) -> Shape:
    profile = side_profile(dress)
    hem, hem_half = LENGTHS[dress.length], profile[-1][0]
    if dress.neckline == "strapless":
        top = [(0.0, 0.32), (0.25, 0.3), (0.46, 0.34)]
    else:
        shoulder_x = 0.5 if dress.sleeves == "sleeveless" else 0.6
        top = neckline_points(dress) + [(shoulder_x, 0.1), (0.49, 0.26)]
    right = top + profile
    # The hem bows down a little at the centre, as fabric hangs.
    right += [(hem_half * t, hem + 0.07 * (1 - t * t)) for t in np.linspace(1, 0, 8)[1:]]
    body = right + [(-x, y) for x, y in reversed(right)]
    sleeves = [] if dress.sleeves == "sleeveless" or dress.neckline == "strapless" else _sleeves(dress.sleeves)
    seam = {"fit-and-flare": WAIST_Y, "empire": 0.68}.get(dress.silhouette)
    if dress.pattern == "colour-block":
        seam = seam or WAIST_Y
    return Shape(body=body, sleeves=sleeves, seam_y=seam)


def arm_polygon(end: float, thickness: float) -> list[Point]:
    """The right arm (shoulder to ``end`` along it, 0..2 = shoulder, elbow, wrist) as a polygon."""
    path = [SHOULDER_JOINT, ELBOW, WRIST]
    centre = [_along(path, t) for t in np.linspace(0, end, 2 + int(end * 3))]
    outer, inner = [], []
    for i, (x, y) in enumerate(centre):
        nx, ny = _normal(centre, i)
        half = thickness * (1 - 0.12 * min(end, i / max(len(centre) - 1, 1) * end))
        outer.append((x + nx * half, y + ny * half))
        inner.append((x - nx * half, y - ny * half))
    return outer + inner[::-1]


def _sleeves(kind: str) -> list[list[Point]]:
    end = {"cap": 0.22, "short": 0.5, "long": 2.0}[kind]
    arm = arm_polygon(end, 0.12)
    right = [(0.42, 0.06), (0.62, 0.07)] + arm + [(0.47, 0.42)]
    return [right, [(-x, y) for x, y in right]]


def _along(path: list[Point], t: float) -> Point:
    i = min(int(t), len(path) - 2)
    f = t - i
    (x0, y0), (x1, y1) = path[i], path[i + 1]
    return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)


def _normal(points: list[Point], i: int) -> Point:
    a, b = points[max(i - 1, 0)], points[min(i + 1, len(points) - 1)]
    dx, dy = b[0] - a[0], b[1] - a[1]
    norm = math.hypot(dx, dy) or 1.0
    return (dy / norm, -dx / norm)


# --------------------------------------------------------------------------- painting


@dataclass
class Canvas:
    """A transparent figure layer with its body-unit scale and where the body origin sits."""

    image: Image.Image  # RGBA
    dress_mask: Image.Image  # L, 255 where the dress is
    u: float
    origin: Point

    def px(self, points: Sequence[Point]) -> list[Point]:
        ox, oy = self.origin
        return [(ox + x * self.u, oy + y * self.u) for x, y in points]


def colour_rgb(name: str) -> RGB:
    return WHITE if name == "white" else COLOURS[name]


def pattern_pixels(dress: Dress, shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """The printed fabric over the whole canvas (float RGB), laid out in body units so it scales."""
    w, h = size
    xs = (np.arange(w, dtype=np.float32) - origin[0]) / u
    ys = (np.arange(h, dtype=np.float32) - origin[1]) / u
    x, y = np.meshgrid(xs, ys)
    base = np.array(colour_rgb(dress.colour), dtype=np.float32)
    accent = np.array(colour_rgb(dress.accent), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)  # 0 = base colour, 1 = accent
    if dress.pattern == "horizontal-stripes":
        weight = ((y / 0.2) % 1 < 0.45).astype(np.float32)
    elif dress.pattern == "vertical-stripes":
        weight = (((x + 0.05) / 0.16) % 1 < 0.3).astype(np.float32)
    elif dress.pattern == "checks":
        a = ((x / 0.2) % 1 < 0.5).astype(np.float32)
        b = ((y / 0.2) % 1 < 0.5).astype(np.float32)
        weight = (a + b) / 2
    elif dress.pattern == "polka-dots":
        period = 0.22
        row = np.floor(y / period)
        dx = (x / period + 0.5 * (row % 2)) % 1 - 0.5
        dy = (y / period) % 1 - 0.5
        weight = (dx * dx + dy * dy < 0.27**2).astype(np.float32)
    elif dress.pattern == "colour-block":
        # The skirt in the accent colour; sleeves stay in the bodice colour.
        inside = np.abs(x) <= half_width_at(side_profile(dress), y) + 0.02
        weight = ((y > (shape.seam_y or WAIST_Y)) & inside).astype(np.float32)
    pixels = base + weight[..., None] * (accent - base)
    if dress.pattern == "floral":
        pixels = _paint_flowers(dress, pixels, u, origin)
    return pixels


def _paint_flowers(dress: Dress, pixels: np.ndarray, u: float, origin: Point) -> np.ndarray:
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(dress.motif_seed)
    petal = colour_rgb(dress.accent)
    centre = (250, 226, 120) if dress.accent != "mustard" else WHITE
    leaf = (60, 110, 60)
    for _ in range(260):
        # Flowers live in body units, so every photo of the product has them in the same places.
        fx, fy = rng.uniform(-1.6, 1.6), rng.uniform(-0.2, 3.9)
        r = rng.uniform(0.05, 0.085)
        turn = rng.uniform(0, math.tau)
        cx, cy = origin[0] + fx * u, origin[1] + fy * u
        rp = max(r * u * 0.55, 0.8)
        lx, ly = cx + math.cos(turn + 0.6) * r * u * 1.5, cy + math.sin(turn + 0.6) * r * u * 1.5
        draw.ellipse((lx - rp * 0.8, ly - rp * 0.5, lx + rp * 0.8, ly + rp * 0.5), fill=leaf)
        for k in range(5):
            a = turn + k * math.tau / 5
            px, py = cx + math.cos(a) * r * u * 0.6, cy + math.sin(a) * r * u * 0.6
            draw.ellipse((px - rp, py - rp, px + rp, py + rp), fill=petal)
        rc = rp * 0.6
        draw.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=centre)
    return np.asarray(image, dtype=np.float32)


def shading(dress: Dress, shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """Fabric falls away at the sides and folds below the hip; a flared cut folds more."""
    w, h = size
    x = (np.arange(w, dtype=np.float32) - origin[0]) / u
    y = (np.arange(h, dtype=np.float32) - origin[1]) / u
    half = half_width_at(side_profile(dress), y)[:, None]
    t = np.clip(np.abs(x[None, :]) / half, 0, 1.3)
    shade = 1.06 - 0.3 * t**2
    flare = {"sheath": 0.0, "shift": 0.2, "empire": 0.6, "a-line": 0.6, "fit-and-flare": 1.0}[dress.silhouette]
    below_hip = np.clip((y - (shape.seam_y or HIP_Y)) / 0.8, 0, 1)[:, None]
    waves = np.sin(x[None, :] / (half * 0.28 + 0.05) * math.pi + 0.3)
    shade = shade - 0.09 * flare * below_hip * (waves + 1) / 2
    return np.clip(shade, 0.55, 1.1)


@dataclass
class DressLayer:
    """The shaded fabric over the dress's box on a canvas, with its body and sleeve masks."""

    image: Image.Image  # RGB
    body: Image.Image  # L
    sleeves: Image.Image  # L
    offset: tuple[int, int]


def dress_layer(canvas: Canvas, dress: Dress) -> DressLayer:
    shape = dress_shape(dress)
    body = Image.new("L", canvas.image.size, 0)
    sleeves = Image.new("L", canvas.image.size, 0)
    ImageDraw.Draw(body).polygon(canvas.px(shape.body), fill=255)
    for polygon in shape.sleeves:
        ImageDraw.Draw(sleeves).polygon(canvas.px(polygon), fill=255)
    # Print and shade only the dress's box: the rest of a figure canvas is head, legs and air.
    box = ImageChops.lighter(body, sleeves).getbbox() or (0, 0, 1, 1)
    body, sleeves = body.crop(box), sleeves.crop(box)
    local = Canvas(canvas.image, canvas.dress_mask, canvas.u, (canvas.origin[0] - box[0], canvas.origin[1] - box[1]))
    fabric = pattern_pixels(dress, shape, body.size, local.u, local.origin)
    shade = shading(dress, shape, body.size, local.u, local.origin)
    sleeve_area = np.asarray(sleeves, dtype=np.float32)[..., None] / 255
    shade = shade[..., None] * (1 - sleeve_area) + 0.86 * sleeve_area
    image = Image.fromarray(np.clip(fabric * shade, 0, 255).astype(np.uint8))
    _draw_details(image, local, dress, shape)
    return DressLayer(image=image, body=body, sleeves=sleeves, offset=(box[0], box[1]))


def paint_dress(canvas: Canvas, layer: DressLayer, *, sleeves_only: bool = False) -> None:
    """Paint the dress onto the canvas; with ``sleeves_only`` just the sleeves (over the arms)."""
    mask = layer.sleeves if sleeves_only else ImageChops.lighter(layer.body, layer.sleeves)
    canvas.image.paste(layer.image, layer.offset, mask)
    canvas.dress_mask.paste(255, layer.offset, mask)


def _draw_details(image: Image.Image, canvas: Canvas, dress: Dress, shape: Shape) -> None:
    """Outline and seams in a darker shade, so light dresses stand off a light background."""
    draw = ImageDraw.Draw(image)
    dark = tuple(int(c * 0.55) for c in colour_rgb(dress.colour))
    width = max(1, round(canvas.u / 45))
    draw.line(canvas.px(shape.body + shape.body[:1]), fill=dark, width=width)
    for polygon in shape.sleeves:
        # Only the sleeve's own edges: its closing edges lie inside the bodice.
        draw.line(canvas.px(polygon[1:-1]), fill=dark, width=width)
    if shape.seam_y is not None:
        half = float(half_width_at(side_profile(dress), np.array([shape.seam_y]))[0])
        draw.line(canvas.px([(-half, shape.seam_y), (half, shape.seam_y)]), fill=dark, width=width)


@dataclass(frozen=True)
class Person:
    skin: RGB
    hair: RGB
    long_hair: bool
    legs: RGB  # bare skin or tights
    shoes: RGB
    bag: RGB | None


def random_rgb(rng: np.random.Generator, low: int, high: int) -> RGB:
    r, g, b = (int(v) for v in rng.integers(low, high, size=3))
    return (r, g, b)


def random_person(rng: np.random.Generator) -> Person:
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    tights = rng.random() < 0.25
    return Person(
        skin=skin,
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        long_hair=bool(rng.random() < 0.6),
        legs=(40, 36, 40) if tights else skin,
        shoes=random_rgb(rng, 10, 160),
        bag=random_rgb(rng, 20, 200) if rng.random() < 0.3 else None,
    )


def paint_figure(canvas: Canvas, dress: Dress, person: Person) -> None:
    """A simple person wearing the dress: hair, legs, dress, arms, sleeves, head."""
    draw = ImageDraw.Draw(canvas.image)
    hx, hy = HEAD_CENTRE
    if person.long_hair:
        draw.polygon(canvas.px([(-0.3, -0.75), (0.3, -0.75), (0.36, 0.35), (-0.36, 0.35)]), fill=person.hair)
    for side in (-1, 1):
        leg = [(0.08, HIP_Y), (0.42, HIP_Y), (0.27, ANKLE_Y), (0.13, ANKLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in leg]), fill=person.legs)
        foot = [(0.1, ANKLE_Y - 0.04), (0.3, ANKLE_Y - 0.04), (0.34, SOLE_Y), (0.06, SOLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in foot]), fill=person.shoes)
    draw.polygon(canvas.px([(-0.12, -0.4), (0.12, -0.4), (0.14, 0.12), (-0.14, 0.12)]), fill=person.skin)
    draw.polygon(canvas.px([(-0.42, 0.06), (0.42, 0.06), (0.47, 0.45), (-0.47, 0.45)]), fill=person.skin)
    layer = dress_layer(canvas, dress)
    paint_dress(canvas, layer)
    for side in (-1, 1):
        arm = arm_polygon(2.0, 0.085)
        draw.polygon(canvas.px([(side * x, y) for x, y in arm]), fill=person.skin)
        (hx_, hy_) = canvas.px([(side * (WRIST[0] + 0.01), WRIST[1] + 0.1)])[0]
        r = 0.1 * canvas.u
        draw.ellipse((hx_ - r * 0.8, hy_ - r, hx_ + r * 0.8, hy_ + r), fill=person.skin)
    paint_dress(canvas, layer, sleeves_only=True)
    (cx, cy), r = canvas.px([(hx, hy)])[0], canvas.u
    draw.ellipse((cx - 0.26 * r, cy - 0.33 * r, cx + 0.26 * r, cy + 0.33 * r), fill=person.skin)
    draw.chord((cx - 0.3 * r, cy - 0.42 * r, cx + 0.3 * r, cy + 0.2 * r), 180, 360, fill=person.hair)
    if person.bag is not None:
        bx, by = canvas.px([(WRIST[0] + 0.02, WRIST[1] - 0.05)])[0]
        draw.line((bx, by - 0.45 * r, bx, by), fill=person.bag, width=max(1, round(r / 25)))
        draw.rounded_rectangle((bx - 0.3 * r, by, bx + 0.3 * r, by + 0.42 * r), radius=0.06 * r, fill=person.bag)


def new_canvas(extent: tuple[float, float, float, float], u: float, pad: float = 0.1) -> Canvas:
    x0, y0, x1, y1 = extent
    w = math.ceil((x1 - x0 + 2 * pad) * u)
    h = math.ceil((y1 - y0 + 2 * pad) * u)
    origin = ((pad - x0) * u, (pad - y0) * u)
    return Canvas(Image.new("RGBA", (w, h), (0, 0, 0, 0)), Image.new("L", (w, h), 0), u, origin)


FIGURE_EXTENT = (-1.25, -1.1, 1.25, SOLE_Y)


def figure_extent(dress: Dress) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = dress_shape(dress).extent()
    return (min(x0, FIGURE_EXTENT[0]), FIGURE_EXTENT[1], max(x1, FIGURE_EXTENT[2]), max(y1, FIGURE_EXTENT[3]))


# --------------------------------------------------------------------------- photos


def shop_photo(dress: Dress, rng: np.random.Generator) -> Image.Image:
    """The dress alone on a hanger against a plain studio background, centred."""
    w, h = SHOP_SIZE
    x0, y0, x1, y1 = dress_shape(dress).extent()
    hanger_top = -0.45
    u = min(0.88 * h / (y1 - hanger_top), 0.86 * w / (x1 - x0))
    image = studio_background(rng, SHOP_SIZE)
    canvas = new_canvas((min(x0, -0.7), hanger_top, max(x1, 0.7), y1), u)
    draw = ImageDraw.Draw(canvas.image)
    grey = (150, 150, 155, 255)
    line = max(1, round(u / 30))
    draw.line(canvas.px([(0.0, -0.1), (0.0, -0.32)]), fill=grey, width=line)
    draw.arc(_box(canvas.px([(-0.08, -0.45), (0.08, -0.29)])), 180, 90, fill=grey, width=line)
    draw.line(canvas.px([(-0.62, 0.14), (0.0, -0.1), (0.62, 0.14)]), fill=grey, width=line + 1)
    paint_dress(canvas, dress_layer(canvas, dress))
    left = round((w - canvas.image.width) / 2)
    top = round((h - canvas.image.height) / 2)
    _drop_shadow(image, canvas, (left + round(u * 0.06), top + round(u * 0.08)))
    image.paste(canvas.image, (left, top), canvas.image)
    return image


def model_photo(dress: Dress, rng: np.random.Generator) -> Image.Image:
    """A second shop photo: the dress on a figure in the studio."""
    w, h = SHOP_SIZE
    x0, y0, x1, y1 = figure_extent(dress)
    u = min(0.94 * h / (y1 - y0), 0.92 * w / (x1 - x0))
    canvas = new_canvas((x0, y0, x1, y1), u)
    paint_figure(canvas, dress, replace(random_person(rng), bag=None))
    image = studio_background(rng, SHOP_SIZE)
    image.paste(canvas.image, (round((w - canvas.image.width) / 2), round((h - canvas.image.height) / 2)), canvas.image)
    return image


def studio_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    tone = np.array([rng.integers(236, 250)] * 3, dtype=np.float32) + rng.integers(-4, 5, size=3)
    ramp = np.linspace(1.0, 0.95, h, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(tone * ramp, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _drop_shadow(image: Image.Image, canvas: Canvas, offset: tuple[int, int]) -> None:
    shadow = Image.new("L", image.size, 0)
    shadow.paste(canvas.dress_mask.point(lambda v: v * 50 // 255), offset)
    shadow = shadow.filter(ImageFilter.GaussianBlur(3))
    image.paste((90, 90, 95), (0, 0), shadow)


def _box(points: list[Point]) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = points
    return (x0, y0, x1, y1)


def street_photo(dresses: Sequence[Dress], rng: np.random.Generator) -> tuple[Image.Image, list[Box]]:
    """People wearing the dresses in a cluttered, badly lit scene; one box per dress, in order."""
    size = STREET_SIZE if len(dresses) == 1 else GROUP_SIZE
    w, h = size
    image = scene(rng, size)
    boxes = []
    slot_w = w / len(dresses)
    for i, dress in enumerate(dresses):
        layer, mask = _posed_figure(dress, rng, height=rng.uniform(0.6, 0.95) * h)
        dx0, dy0, dx1, dy1 = _solid_bbox(mask)
        # Keep the whole dress inside the photo (and inside this person's slot); feet may be cut off.
        lo_x, hi_x = i * slot_w - dx0, (i + 1) * slot_w - dx1
        lo_y, hi_y = -dy0, h - dy1
        left = round(rng.uniform(lo_x, max(lo_x, hi_x)))
        top = round(rng.uniform(max(lo_y, hi_y - 0.12 * h), max(lo_y, hi_y)))
        image.paste(layer, (left, top), layer)
        boxes.append(_clamped_box(dx0 + left, dy0 + top, dx1 + left, dy1 + top, size))
    return degrade(image, rng), boxes


def _posed_figure(dress: Dress, rng: np.random.Generator, *, height: float) -> tuple[Image.Image, Image.Image]:
    x0, y0, x1, y1 = figure_extent(dress)
    u = height / (y1 - y0)
    canvas = new_canvas((x0, y0, x1, y1), u)
    paint_figure(canvas, dress, random_person(rng))
    angle = float(rng.uniform(-8, 8))
    layer = canvas.image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    mask = canvas.dress_mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return layer, mask


def _solid_bbox(mask: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the at-least-half-covered pixels (rotation blurs the mask edge)."""
    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        raise DemoDatasetError("the dress vanished while posing the figure")
    return box


def _clamped_box(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int]) -> Box:
    w, h = size
    left, top = max(0, int(x0)), max(0, int(y0))
    right, bottom = min(w, int(x1)), min(h, int(y1))
    return Box(left=left, top=top, width=max(1, right - left), height=max(1, bottom - top))


def scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A cluttered background: a street with buildings and pavement, or a room."""
    image = street_scene(rng, size) if rng.random() < 0.65 else room_scene(rng, size)
    return _add_texture(image, rng)


def street_scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    horizon = int(h * rng.uniform(0.5, 0.68))
    sky_top, sky_bottom = rng.integers(120, 200, size=3), rng.integers(190, 245, size=3)
    image = _vertical_gradient(size, sky_top, sky_bottom)
    draw = ImageDraw.Draw(image)
    x = int(rng.integers(-60, 0))
    while x < w:
        bw, bh = int(rng.integers(60, 180)), int(rng.integers(int(h * 0.2), horizon))
        facade = random_rgb(rng, 70, 210)
        draw.rectangle((x, horizon - bh, x + bw, horizon), fill=facade)
        window = tuple(int(v * 0.55) for v in facade) if rng.random() < 0.7 else (200, 215, 230)
        for wy in range(horizon - bh + 10, horizon - 30, 34):
            for wx in range(x + 8, x + bw - 16, 26):
                draw.rectangle((wx, wy, wx + 14, wy + 20), fill=window)
        x += bw + int(rng.integers(0, 20))
    pavement = _vertical_gradient((w, h - horizon), rng.integers(90, 130, size=3), rng.integers(140, 190, size=3))
    image.paste(pavement, (0, horizon))
    for k in range(1, 8):
        # Paving joints converging on a vanishing point, for a sense of ground.
        draw.line((w / 2 + (k - 4) * 30, horizon, w / 2 + (k - 4) * w * 0.45, h), fill=(95, 95, 98), width=1)
    for _ in range(int(rng.integers(2, 6))):
        _clutter(draw, rng, size, horizon)
    return image


def room_scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    floor = int(h * rng.uniform(0.6, 0.78))
    wall = rng.integers(150, 235, size=3)
    image = _vertical_gradient(size, wall, wall * 0.85)
    draw = ImageDraw.Draw(image)
    stripe = tuple(int(v * 0.93) for v in wall)
    for sx in range(0, w, int(rng.integers(18, 40))):
        draw.rectangle((sx, 0, sx + 6, floor), fill=stripe)
    wood = rng.integers(90, 170, size=3) * np.array([1.0, 0.75, 0.5])
    image.paste(_vertical_gradient((w, h - floor), wood * 0.8, wood), (0, floor))
    for py in range(floor, h, 22):
        draw.line((0, py, w, py), fill=tuple(int(v * 0.6) for v in wood), width=1)
    for _ in range(int(rng.integers(2, 5))):
        fx, fy = int(rng.integers(0, w - 60)), int(rng.integers(10, max(11, floor - 120)))
        fw, fh = int(rng.integers(40, 120)), int(rng.integers(40, 110))
        draw.rectangle((fx, fy, fx + fw, fy + fh), fill=(60, 45, 30))
        draw.rectangle((fx + 5, fy + 5, fx + fw - 5, fy + fh - 5), fill=random_rgb(rng, 30, 230))
    if rng.random() < 0.6:
        px = int(rng.integers(0, w - 60))
        draw.rectangle((px + 15, floor - 40, px + 45, floor + 10), fill=(150, 80, 50))
        draw.ellipse((px, floor - 130, px + 60, floor - 30), fill=(40, 110, 50))
    return image


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int], horizon: int) -> None:
    w, h = size
    kind = int(rng.integers(3))
    x = int(rng.integers(0, w))
    if kind == 0:  # lamp post with a sign
        draw.rectangle((x, int(h * 0.1), x + 6, horizon + 40), fill=(50, 55, 60))
        draw.rectangle((x - 20, int(h * 0.25), x + 26, int(h * 0.25) + 30), fill=random_rgb(rng, 0, 255))
    elif kind == 1:  # tree
        draw.rectangle((x, horizon - 80, x + 12, horizon + 20), fill=(80, 60, 40))
        r = int(rng.integers(35, 70))
        leaves = (50, int(rng.integers(90, 150)), 55)
        draw.ellipse((x + 6 - r, horizon - 80 - r * 2, x + 6 + r, horizon - 60), fill=leaves)
    else:  # parked car
        cw = int(rng.integers(120, 200))
        body = random_rgb(rng, 20, 230)
        draw.rounded_rectangle((x, horizon - 10, x + cw, horizon + 45), radius=12, fill=body)
        draw.rounded_rectangle((x + cw * 0.2, horizon - 40, x + cw * 0.75, horizon - 8), radius=10, fill=body)
        for wx in (x + cw * 0.2, x + cw * 0.8):
            draw.ellipse((wx - 14, horizon + 30, wx + 14, horizon + 58), fill=(20, 20, 20))


def _vertical_gradient(size: tuple[int, int], top: np.ndarray, bottom: np.ndarray) -> Image.Image:
    w, h = size
    t = np.linspace(0, 1, max(h, 1), dtype=np.float32)[:, None, None]
    top_ = np.asarray(top, dtype=np.float32)
    bottom_ = np.asarray(bottom, dtype=np.float32)
    pixels = np.broadcast_to(top_ + t * (bottom_ - top_), (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _add_texture(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blotchy low-frequency dirt over the background so it is not flat."""
    w, h = image.size
    blotches = rng.normal(128, 10, size=(h // 16 + 1, w // 16 + 1)).clip(0, 255).astype(np.uint8)
    dirt = Image.fromarray(blotches).resize((w, h), Image.Resampling.BILINEAR).convert("RGB")
    return ImageChops.add(image, dirt, offset=-128)


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A phone camera: softness, other lighting, a colour cast and sensor noise."""
    # Pillow's C paths, not float numpy: this runs on every street photo and dominated the run time.
    w, h = image.size
    soft = float(rng.uniform(0.5, 0.8))
    image = image.resize((round(w * soft), round(h * soft)), Image.Resampling.BILINEAR)
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    mean = float(np.asarray(image.reduce(8)).mean())
    contrast, brightness = rng.uniform(0.75, 1.15), rng.uniform(0.75, 1.2)
    cast = rng.uniform(0.88, 1.12, size=3)
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([((levels - mean) * contrast + mean * brightness) * c for c in cast])
    image = image.point(np.clip(lut, 0, 255).astype(np.uint8).tolist())
    spread = int(rng.integers(6, 16))
    noise = rng.integers(0, 2 * spread + 1, size=(h, w, 3), dtype=np.uint8)
    return ImageChops.add(image, Image.fromarray(noise), offset=-spread)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes with no metadata, so equal pixels give equal files."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue()


def render_photo(task: PhotoTask, dresses: Sequence[Dress], seed: int) -> RenderedPhoto:
    """Draw one planned photo from its own generator."""
    rng = photo_rng(seed, task.photo)
    if task.kind == "shop":
        return RenderedPhoto(task.photo, encode_jpeg(shop_photo(dresses[0], rng), SHOP_QUALITY))
    if task.kind == "model":
        return RenderedPhoto(task.photo, encode_jpeg(model_photo(dresses[0], rng), SHOP_QUALITY))
    image, boxes = street_photo(dresses, rng)
    quality = int(rng.integers(55, 71))  # heavy compression, like phone uploads
    return RenderedPhoto(task.photo, encode_jpeg(image, quality), list(zip(task.products, boxes)))


def _render_job(job: tuple[PhotoTask, tuple[Dress, ...], int]) -> RenderedPhoto:
    return render_photo(*job)


# --------------------------------------------------------------------------- files


def retrieval_entries(plan: Plan) -> list[dict[str, int]]:
    shop = [t for t in plan.photos if t.kind in ("shop", "model")]
    return [{"photo": t.photo, "product": t.products[0]} for t in sorted(shop, key=lambda t: (t.products[0], t.photo))]


def pair_entries(plan: Plan, rendered: dict[int, RenderedPhoto], split: str) -> list[dict[str, object]]:
    """Street2Shop pair rows for one split, shuffled like the real files (a photo's boxes stay together)."""
    street = [t for t in plan.photos if t.kind == "street" and plan.product(t.products[0]).split == split]
    order = np.random.default_rng([plan.seed, 0xB0C5, split == "test"]).permutation(len(street))
    rows: list[dict[str, object]] = []
    for i in order:
        photo = street[int(i)].photo
        for product, box in rendered[photo].boxes:
            rows.append({"photo": photo, "product": product, "bbox": box.as_json()})
    return rows


def product_entries(plan: Plan) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for p in sorted(plan.products, key=lambda p: p.product):
        d = p.dress
        attributes = {
            "silhouette": d.silhouette,
            "length": d.length,
            "neckline": d.neckline,
            "sleeves": d.sleeves,
            "colour": d.colour,
            "pattern": d.pattern,
            "accent_colour": d.accent,
        }
        rows.append(
            {"product": p.product, "title": p.title, "price": p.price, "family": p.family, "attributes": attributes}
        )
    return rows


def readme_text(plan: Plan, street_per_product: int) -> str:
    files = [
        ("photos/<9-digit id>.jpg", "shop and street photos, one id space"),
        ("photos.txt", "<9-digit id>,<url> (the URLs do not resolve)"),
        (f"meta/json/retrieval_{CATEGORY}.json", "product -> shop photo"),
        (f"meta/json/train_pairs_{CATEGORY}.json", "street photo, product, bbox in pixels (train products)"),
        (f"meta/json/test_pairs_{CATEGORY}.json", "the same for the disjoint test products"),
        (f"meta/json/demo_products_{CATEGORY}.json", "extra: title, price, family and attributes"),
    ]
    listing = "".join(f"  {name:<40} {what}\n" for name, what in files)
    return (
        f"{README_MARKER} ({CATEGORY}).\n\n"
        f"Generated by `python manage.py make_demo_dataset OUT_DIR --products {len(plan.products)} "
        f"--seed {plan.seed} --street-per-product {street_per_product}`.\n"
        "Every photo is drawn by shop/demodata.py; none comes from the Exact Street2Shop dataset\n"
        "(Kiapour et al., ICCV 2015), whose layout and JSON format this set copies:\n\n"
        f"{listing}\n"
        "The same seed gives the same files. Products come in families (same cut in another colour,\n"
        "same colour in another pattern) so that similar-looking distractors exist. Running the\n"
        "command again over this directory rewrites it file by file and removes photos it no longer lists.\n"
    )


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write into a non-empty directory unless it is an earlier demo dataset."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DemoDatasetError(f"{out_dir} is not a directory")
    readme = out_dir / "README.txt"
    is_demo = readme.is_file() and readme.read_text(errors="replace").startswith(README_MARKER)
    if any(out_dir.iterdir()) and not is_demo:
        raise DemoDatasetError(f"{out_dir} is not empty and does not hold a demo dataset; choose another directory")


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target and rename, so a reader never sees half a file."""
    # No fsync: the set is regenerated from its seed, and syncing thousands of photos is slow.
    atomic_write_bytes(path, data, fsync=False)


def remove_stale_photos(photos_dir: Path, keep: set[str]) -> int:
    """Drop photos left by an earlier, larger or differently seeded run in the same directory."""
    removed = 0
    for path in photos_dir.iterdir():
        if re.fullmatch(r"\d{9}\.jpg", path.name) and path.name not in keep:
            path.unlink()
            removed += 1
    return removed


def generate_dataset(
    out_dir: Path,
    *,
    n_products: int = 160,
    seed: int = 0,
    street_per_product: int = 3,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Write a complete demo dataset to ``out_dir``; files are overwritten one by one, atomically."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    plan = plan_catalogue(seed=seed, n_products=n_products, street_per_product=street_per_product)
    photos_dir, meta_dir = out_dir / "photos", out_dir / "meta" / "json"
    photos_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "README.txt", readme_text(plan, street_per_product).encode())

    jobs = [(t, tuple(plan.product(p).dress for p in t.products), seed) for t in plan.photos]
    rendered: dict[int, RenderedPhoto] = {}
    for done, photo in enumerate(_render_all(jobs, workers), start=1):
        write_atomic(photos_dir / photo_filename(photo.photo), photo.jpeg)
        rendered[photo.photo] = photo
        if on_progress is not None:
            on_progress(done, len(jobs))
    remove_stale_photos(photos_dir, {photo_filename(t.photo) for t in plan.photos})

    lines = [f"{t.photo:09d},{URL_TEMPLATE.format(photo=t.photo)}" for t in sorted(plan.photos, key=lambda t: t.photo)]
    # Like Street2Shop's files: no trailing newline, one JSON array on one line.
    write_atomic(out_dir / "photos.txt", "\n".join(lines).encode())
    train = pair_entries(plan, rendered, "train")
    test = pair_entries(plan, rendered, "test")
    write_json(meta_dir / f"retrieval_{CATEGORY}.json", retrieval_entries(plan))
    write_json(meta_dir / f"train_pairs_{CATEGORY}.json", train)
    write_json(meta_dir / f"test_pairs_{CATEGORY}.json", test)
    write_json(meta_dir / f"demo_products_{CATEGORY}.json", product_entries(plan))
    return Summary(
        out_dir=out_dir,
        seed=seed,
        products=len(plan.products),
        families=len({p.family for p in plan.products}),
        shop_photos=sum(t.kind != "street" for t in plan.photos),
        street_photos=sum(t.kind == "street" for t in plan.photos),
        train_pairs=len(train),
        test_pairs=len(test),
        seconds=time.perf_counter() - started,
    )


def write_json(path: Path, rows: list) -> None:
    write_atomic(path, json.dumps(rows, ensure_ascii=False).encode())


def _render_all(jobs: list[tuple[PhotoTask, tuple[Dress, ...], int]], workers: int) -> Iterator[RenderedPhoto]:
    if workers <= 1:
        yield from map(_render_job, jobs)
        return
    # Spawned, not forked: callers such as the demo command may already run threads.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Results come back in job order, so the output does not depend on the worker count.
        yield from pool.map(_render_job, jobs, chunksize=8)


def labelled_photos(*, seed: int, n_products: int) -> tuple[list[Image.Image], list[int], list[Image.Image], list[int]]:
    """(shop photos, their products, boxed street crops, their products) of single-product photos of a plan."""
    plan = plan_catalogue(seed=seed, n_products=n_products, street_per_product=1)
    shop: list[Image.Image] = []
    street: list[Image.Image] = []
    shop_labels: list[int] = []
    street_labels: list[int] = []
    for task in plan.photos:
        if task.kind not in ("shop", "street") or len(task.products) != 1:
            continue
        dress = plan.product(task.products[0]).dress
        rng = photo_rng(plan.seed, task.photo)
        if task.kind == "shop":
            shop.append(shop_photo(dress, rng))
            shop_labels.append(task.products[0])
        else:
            image, (box,) = street_photo([dress], rng)
            street.append(image.crop((box.left, box.top, box.left + box.width, box.top + box.height)))
            street_labels.append(task.products[0])
    return shop, shop_labels, street, street_labels
