"""Planning the demo catalogue: products in families, their ids and splits, and every photo to draw.

Cheap and deterministic, so rendering can be spread over processes: everything random here comes
from one generator seeded by the dataset's seed, and each photo later draws from its own
``photo_rng(seed, photo id)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np

# Street2Shop's ids: about 425,000 photos (shop and street in one space) and products up to ~68,000.
PHOTO_ID_SPACE = 425_000
PRODUCT_ID_SPACE = 60_000
TRAIN_FRACTION = 0.7
SECOND_SHOP_PHOTO_RATE = 0.2
GROUP_PHOTO_RATE = 0.03

RGB = tuple[int, int, int]

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

SILHOUETTES = ("a-line", "sheath", "fit-and-flare", "shift", "empire")
SKIRT_SILHOUETTES = ("a-line", "pencil", "pleated", "circle", "wrap")
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
SKIRT_SILHOUETTE_WORDS = {
    "a-line": "A-line",
    "pencil": "pencil",
    "pleated": "pleated",
    "circle": "circle",
    "wrap": "wrap",
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
class Skirt:
    """A skirt product's look: waist to hem only, printed like a dress."""

    silhouette: str
    length: str
    colour: str
    pattern: str
    accent: str
    motif_seed: int

    @property
    def cut(self) -> tuple[str, str]:
        return (self.silhouette, self.length)

    @property
    def look(self) -> tuple[str, ...]:
        return (*self.cut, self.colour, self.pattern, self.accent)


Garment = Dress | Skirt


@dataclass(frozen=True)
class Product:
    product: int
    family: int
    split: str  # "train" or "test", by product as in Street2Shop
    title: str
    price: str
    garment: Garment
    duplicate_of: int | None = None  # a relisting of this product of the same category (no street photos)


@dataclass(frozen=True)
class PhotoTask:
    """One photo to render: a shop photo of one product or a street photo of one or two."""

    photo: int
    kind: str  # "shop", "model" (second shop photo, on a figure), "street", or "copy" (a relisting's shop photo)
    products: tuple[int, ...]
    source: int | None = None  # a copy's original shop photo
    edits: tuple[str, ...] = ()  # how a copy differs from its source: "quality", "resize", "crop"


@dataclass(frozen=True)
class Plan:
    """One category's products and photos."""

    seed: int
    products: tuple[Product, ...]
    photos: tuple[PhotoTask, ...]
    category: str = "dresses"

    def product(self, product_id: int) -> Product:
        return self._by_id[product_id]

    @cached_property
    def _by_id(self) -> dict[int, Product]:
        return {p.product: p for p in self.products}


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


def random_skirt(rng: np.random.Generator) -> Skirt:
    colour = _pick(rng, list(COLOURS))
    pattern = _pick(rng, PATTERNS)
    return Skirt(
        silhouette=_pick(rng, SKIRT_SILHOUETTES),
        length=_pick(rng, list(LENGTHS)),
        colour=colour,
        pattern=pattern,
        accent=_accent_for(rng, colour, pattern),
        motif_seed=int(rng.integers(2**31)),
    )


# Each category (Street2Shop's file-name word), its garment's maker and its planning stream: dresses keep the
# stream they had before skirts existed, so their output is unchanged.
CATEGORY_MAKERS: dict[str, tuple[Callable[[np.random.Generator], Garment], tuple[int, ...]]] = {
    "dresses": (random_dress, ()),
    "skirts": (random_skirt, (0x5C1,)),
}


def garment_name(garment: Garment) -> str:
    return "skirt" if isinstance(garment, Skirt) else "dress"


def wearable(dress: Dress) -> Dress:
    """A strapless dress has no sleeves; say so, so titles and attributes match the picture."""
    return replace(dress, sleeves="sleeveless") if dress.neckline == "strapless" else dress


def family_variant(rng: np.random.Generator, base: Garment, change: str) -> Garment:
    """A near-duplicate of ``base``: another colour, another pattern or another cut."""
    if change == "colour":
        colour = _pick(rng, [c for c in COLOURS if c != base.colour])
        keep_accent = base.pattern != "solid" and base.accent != colour
        accent = base.accent if keep_accent else _accent_for(rng, colour, base.pattern)
        return replace(base, colour=colour, accent=accent)
    if change == "pattern":
        pattern = _pick(rng, [p for p in PATTERNS if p != base.pattern])
        return replace(base, pattern=pattern, accent=_accent_for(rng, base.colour, pattern))
    if isinstance(base, Skirt):
        silhouette = _pick(rng, [s for s in SKIRT_SILHOUETTES if s != base.silhouette])
        return replace(base, silhouette=silhouette, length=_pick(rng, list(LENGTHS)))
    recut = replace(
        base,
        silhouette=_pick(rng, [s for s in SILHOUETTES if s != base.silhouette]),
        neckline=_pick(rng, NECKLINES),
        sleeves=_pick(rng, SLEEVES),
    )
    return wearable(recut)


def plan_families(
    rng: np.random.Generator, n_products: int, make: Callable[[np.random.Generator], Garment] = random_dress
) -> list[tuple[int, Garment]]:
    """``n_products`` distinct garments in families of 2-4: base, recoloured, repatterned, recut."""
    garments: list[tuple[int, Garment]] = []
    seen: set[tuple[str, ...]] = set()
    family = 0
    while len(garments) < n_products:
        # The first family always has a recolour and a repattern, so even tiny sets have distractors.
        size = 3 if family == 0 else int(rng.choice([2, 3, 3, 4]))
        changes = ["colour", "pattern"] if rng.random() < 0.5 else ["pattern", "colour"]
        base = _unique(rng, seen, lambda: make(rng))
        members = [base]
        for change in [*changes, "cut"][: size - 1]:
            members.append(_unique(rng, seen, partial(family_variant, rng, base, change)))
        garments.extend((family, g) for g in members)
        family += 1
    return garments[:n_products]


def product_title(garment: Garment) -> str:
    colour = garment.colour.capitalize()
    if isinstance(garment, Skirt):
        if garment.accent != garment.colour:
            colour = f"{colour} and {garment.accent}"
        words = [colour, PATTERN_WORDS[garment.pattern], SKIRT_SILHOUETTE_WORDS[garment.silhouette]]
        return " ".join(w for w in [*words, LENGTH_WORDS[garment.length], "skirt"] if w)
    if garment.accent not in (garment.colour, "white"):
        # "Navy polka-dot" implies white dots; any other second colour is named.
        colour = f"{colour} and {garment.accent}"
    words = [colour, PATTERN_WORDS[garment.pattern], NECKLINE_WORDS[garment.neckline]]
    words += [LENGTH_WORDS[garment.length], SILHOUETTE_WORDS[garment.silhouette], "dress"]
    return " ".join(w for w in words if w) + SLEEVE_WORDS[garment.sleeves]


def product_price(rng: np.random.Generator, garment: Garment) -> str:
    # A skirt costs less than a dress of the same length and print.
    start, step = (35, 10) if isinstance(garment, Dress) else (25, 8)
    base = start + step * list(LENGTHS).index(garment.length) + (step if garment.pattern != "solid" else 0)
    return f"{base + 5 * int(rng.integers(0, 12)) - 1:.2f}"


def plan_catalogue(
    *,
    seed: int,
    n_products: int,
    street_per_product: int,
    category: str = "dresses",
    taken_photos: Set[int] = frozenset(),
) -> Plan:
    """Decide one category's products, ids, splits and photos; photo ids avoid ``taken_photos``."""
    if n_products < 2:
        raise DemoDatasetError(f"need at least 2 {category} (one for train, one for test)")
    if street_per_product < 1:
        raise DemoDatasetError("need at least 1 street photo per product")
    if seed < 0:
        raise DemoDatasetError("the seed must not be negative")
    make, stream = CATEGORY_MAKERS[category]
    rng = np.random.default_rng([seed, 0x5EED, *stream])
    garments = plan_families(rng, n_products, make)
    product_ids = [int(i) + 1 for i in rng.choice(PRODUCT_ID_SPACE, size=n_products, replace=False)]
    n_train = min(n_products - 1, max(1, round(TRAIN_FRACTION * n_products)))
    train = set(rng.permutation(n_products)[:n_train].tolist())
    products = tuple(
        Product(
            product=pid,
            family=family,
            split="train" if i in train else "test",
            title=product_title(g),
            price=product_price(rng, g),
            garment=g,
        )
        for i, (pid, (family, g)) in enumerate(zip(product_ids, garments))
    )
    kinds: list[tuple[str, tuple[int, ...]]] = []
    for p in products:
        kinds.append(("shop", (p.product,)))
        if rng.random() < SECOND_SHOP_PHOTO_RATE:
            kinds.append(("model", (p.product,)))
        kinds += [("street", (p.product,))] * street_per_product
    kinds += [("street", pair) for pair in _group_pairs(rng, products)]
    photo_ids = unused_ids(rng, PHOTO_ID_SPACE, len(kinds), taken_photos)
    photos = tuple(PhotoTask(photo=pid, kind=k, products=ps) for pid, (k, ps) in zip(photo_ids, kinds))
    return Plan(seed=seed, products=products, photos=photos, category=category)


def unused_ids(rng: np.random.Generator, space: int, n: int, taken: Set[int]) -> list[int]:
    """``n`` distinct ids in 1..``space`` outside ``taken``; with nothing taken, exactly one ``rng.choice``."""
    drawn = rng.choice(space, size=n + len(taken), replace=False)
    return [i for i in (int(d) + 1 for d in drawn) if i not in taken][:n]


def _group_pairs(rng: np.random.Generator, products: Sequence[Product]) -> list[tuple[int, int]]:
    """A few street photos show two garments; both products come from one split so the photo does too."""
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


def _unique(rng: np.random.Generator, seen: set[tuple[str, ...]], make: Callable[[], Garment]) -> Garment:
    for _ in range(100):
        garment = make()
        if garment.look not in seen:
            seen.add(garment.look)
            return garment
    raise DemoDatasetError("could not find an unused look")
