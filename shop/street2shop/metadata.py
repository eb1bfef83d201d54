"""Reading the Exact Street2Shop metadata files: pairs, retrieval and the demo products.

Layout of a dataset root::

    meta/json/train_pairs_{category}.json   [{"photo", "product", "bbox": {"left", "top", "width", "height"}}]
    meta/json/test_pairs_{category}.json
    meta/json/retrieval_{category}.json     [{"photo", "product"}]  shop photos of each product
    meta/json/demo_products_{category}.json optional, written by make_demo_dataset
    photos/{photo_id:09d}.jpg
    photos.txt                              {photo_id:09d},{url}  (read by photos_txt.read_photos_txt)

Product ids are only unique within a category (dress 2056 and skirt 2056 are different
products); photo ids are global.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

SPLITS = ("train", "test")
BOX_KEYS = ("left", "top", "width", "height")
# Product.price holds 8 digits, 2 after the point.
MAX_PRICE = Decimal("1000000")
_CATEGORY_RE = re.compile(r"^[a-z][a-z_]*$")


# Street2Shop's ids have nine digits; 18 always fits the database's 64-bit columns.
MAX_ID_DIGITS = 18


class MetadataError(ValueError):
    """A Street2Shop metadata file is missing or malformed; the message names the file and entry."""


@dataclass(frozen=True, slots=True)
class Pair:
    """One boxed garment in a street photo and the product it shows."""

    index: int  # position in its file, for error messages and stable ordering
    photo_id: int
    product_id: int
    left: int
    top: int
    width: int
    height: int
    split: str | None = None

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.width, self.height)

    @property
    def has_empty_box(self) -> bool:
        return self.width <= 0 or self.height <= 0


@dataclass(slots=True)
class PairsFile:
    path: Path
    split: str | None
    pairs: list[Pair]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def product_ids(self) -> set[int]:
        return {pair.product_id for pair in self.pairs}

    @property
    def photo_ids(self) -> set[int]:
        return {pair.photo_id for pair in self.pairs}


@dataclass(frozen=True, slots=True)
class CategoryFiles:
    train_pairs: Path
    test_pairs: Path
    retrieval: Path
    demo_products: Path

    @property
    def required(self) -> tuple[Path, Path, Path]:
        return (self.train_pairs, self.test_pairs, self.retrieval)

    def missing(self) -> list[Path]:
        return [path for path in self.required if not path.is_file()]


@dataclass(frozen=True, slots=True)
class DemoProduct:
    product_id: int
    title: str
    price: Decimal
    attributes: dict[str, Any] = field(default_factory=dict)
    # A relisting of another product of the set (the generator's duplicates option).
    duplicate_of: int | None = None


def photo_filename(photo_id: int) -> str:
    """The file name of a photo, as in the dataset's archive."""
    return f"{photo_id:09d}.jpg"


def photo_path(root: Path, photo_id: int) -> Path:
    return Path(root) / "photos" / photo_filename(photo_id)


def category_files(root: Path, category: str) -> CategoryFiles:
    if not _CATEGORY_RE.match(category):
        # The category becomes part of file names; refuse anything that could walk the tree.
        raise MetadataError(f"{category!r} is not a category name (lowercase letters, e.g. 'dresses').")
    folder = Path(root) / "meta" / "json"
    return CategoryFiles(
        train_pairs=folder / f"train_pairs_{category}.json",
        test_pairs=folder / f"test_pairs_{category}.json",
        retrieval=folder / f"retrieval_{category}.json",
        demo_products=folder / f"demo_products_{category}.json",
    )


def split_from_filename(path: Path) -> str | None:
    name = Path(path).name
    for split in SPLITS:
        if name.startswith(f"{split}_pairs_"):
            return split
    return None


def load_pairs(path: Path, *, split: str | None = None) -> PairsFile:
    """Parse a {train,test}_pairs file; the split defaults to the one its name says."""
    path = Path(path)
    entries = _load_json_list(path)
    split = split if split is not None else split_from_filename(path)
    pairs = []
    for index, entry in enumerate(entries):
        _require_keys(path, index, entry, ("photo", "product", "bbox"))
        box = entry["bbox"]
        _require_keys(path, index, box, BOX_KEYS, what="bbox")
        left, top, width, height = (_box_value(path, index, key, box[key]) for key in BOX_KEYS)
        pairs.append(
            Pair(
                index=index,
                photo_id=_id_value(path, index, "photo", entry["photo"]),
                product_id=_id_value(path, index, "product", entry["product"]),
                left=left,
                top=top,
                width=width,
                height=height,
                split=split,
            )
        )
    return PairsFile(path=path, split=split, pairs=pairs)


def load_retrieval(path: Path) -> dict[int, list[int]]:
    """Product id to its shop photo ids, in file order (repeats dropped)."""
    path = Path(path)
    photos: dict[int, list[int]] = {}
    seen: set[tuple[int, int]] = set()
    for index, entry in enumerate(_load_json_list(path)):
        _require_keys(path, index, entry, ("photo", "product"))
        photo_id = _id_value(path, index, "photo", entry["photo"])
        product_id = _id_value(path, index, "product", entry["product"])
        if (product_id, photo_id) in seen:
            continue
        seen.add((product_id, photo_id))
        photos.setdefault(product_id, []).append(photo_id)
    return photos


def load_demo_products(root: Path, category: str) -> dict[int, DemoProduct]:
    """Titles, prices and attributes of a demo dataset; empty when the file is absent."""
    path = category_files(root, category).demo_products
    if not path.is_file():
        return {}
    products = {}
    for index, entry in enumerate(_load_json_list(path)):
        _require_keys(path, index, entry, ("product", "title", "price"))
        product_id = _id_value(path, index, "product", entry["product"])
        title = entry["title"]
        if not isinstance(title, str) or not title.strip():
            raise MetadataError(f"{path.name}: entry {index}: 'title' must be a non-empty string")
        price = _price_value(path, index, entry["price"])
        attributes = entry.get("attributes", {})
        if not isinstance(attributes, dict):
            raise MetadataError(f"{path.name}: entry {index}: 'attributes' must be an object")
        duplicate_of = (
            _id_value(path, index, "duplicate_of", entry["duplicate_of"]) if "duplicate_of" in entry else None
        )
        products[product_id] = DemoProduct(product_id, title.strip(), price, attributes, duplicate_of)
    return products


def _load_json_list(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetadataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        # Integers longer than any id are kept as text, so the entry that holds one is named in the
        # error (and int() never meets the 4,300 digits at which Python refuses to convert).
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{path.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, list):
        raise MetadataError(f"{path.name}: expected a JSON array of entries, got {type(data).__name__}")
    return data


def _require_keys(path: Path, index: int, value: Any, keys: tuple[str, ...], *, what: str = "entry") -> None:
    if not isinstance(value, dict):
        raise MetadataError(f"{path.name}: entry {index}: {what} must be an object, got {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise MetadataError(f"{path.name}: entry {index}: {what} is missing {', '.join(map(repr, missing))}")


class _LongInteger(str):
    """A JSON integer of more than MAX_ID_DIGITS digits, left unconverted."""


def _parse_int(text: str) -> int | _LongInteger:
    return _LongInteger(text) if len(text.lstrip("-")) > MAX_ID_DIGITS else int(text)


def _id_value(path: Path, index: int, key: str, value: Any) -> int:
    if isinstance(value, _LongInteger):
        raise MetadataError(
            f"{path.name}: entry {index}: {key!r} has {len(value.lstrip('-'))} digits; "
            f"an id has at most {MAX_ID_DIGITS}"
        )
    # bool is an int subclass; true/false in an id field is a broken file, not id 1/0.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MetadataError(f"{path.name}: entry {index}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _box_value(path: Path, index: int, key: str, value: Any) -> int:
    # Some real entries are written as floats (611.0); accept any finite number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetadataError(f"{path.name}: entry {index}: bbox {key!r} must be a number, got {value!r}")
    return round(value)


def _price_value(path: Path, index: int, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MetadataError(f"{path.name}: entry {index}: 'price' must be a decimal string, got {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise MetadataError(f"{path.name}: entry {index}: 'price' {value!r} is not a number") from None
    if not price.is_finite() or not 0 <= price < MAX_PRICE:
        raise MetadataError(f"{path.name}: entry {index}: 'price' {value!r} must be at least 0 and below {MAX_PRICE}")
    return price.quantize(Decimal("0.01"))
