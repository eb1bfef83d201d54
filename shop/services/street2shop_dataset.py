"""One Street2Shop category loaded for seeding: its metadata, the photos present and which of them decode."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Container
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from PIL import Image

from shop.models import Category, Split
from shop.street2shop import metadata
from shop.street2shop.metadata import DemoProduct, MetadataError, Pair
from similarity.images import ALLOWED_FORMATS, ImageError, open_image

# Why a photo cannot be used, whatever it is used for (seeding adds the reasons of boxes).
MISSING_PHOTO = "missing_photo"
BAD_IMAGE = "bad_image"

_PHOTO_NAME = re.compile(r"^(\d+)\.jpg$")

# (size, "", "") for a usable photo, else (None, reason, detail).
PhotoCheck = tuple[tuple[int, int] | None, str, str]


class SeedingError(Exception):
    """The dataset folder cannot be seeded from (other than malformed metadata)."""


@dataclass(slots=True)
class Street2ShopDataset:
    """One category's metadata and the photos present, loaded once for one or several seeding passes."""

    root: Path
    category: str
    photos_dir: Path
    retrieval: dict[int, list[int]]
    boxes: dict[int, list[Pair]]  # product id -> its boxes, train file first, in file order
    demo: dict[int, DemoProduct]
    present: set[int]  # photo ids under photos_dir; a downloader adds what it fetches
    # Photos known to decode (the downloader has just validated them): only their header is read.
    verified: set[int] = field(default_factory=set)

    def street_photo_ids(self, product_id: int) -> list[int]:
        """The product's street photos that carry a box with an area, in file order."""
        return list(dict.fromkeys(pair.photo_id for pair in self.boxes.get(product_id, ()) if not pair.has_empty_box))

    def photo_ids(self, product_id: int) -> list[int]:
        """Every photo seeding this product can use: its shop photos, then its street photos."""
        return list(dict.fromkeys([*self.retrieval.get(product_id, ()), *self.street_photo_ids(product_id)]))

    def order_key(self, available: Container[int] | None = None) -> Callable[[int], tuple[bool, int]]:
        """Products with a usable street photo in ``available`` (default: present) first, then by id."""
        available = self.present if available is None else available
        return lambda pid: (not any(photo_id in available for photo_id in self.street_photo_ids(pid)), pid)

    def candidates(self, available: Container[int] | None = None) -> list[int]:
        """Products with a shop photo in ``available`` (default: present), in seeding order.

        Products with street photos come first: they are the ones training and evaluation can
        use, which matters when a limit cuts the list short.
        """
        available = self.present if available is None else available
        products = (pid for pid, photo_ids in self.retrieval.items() if any(p in available for p in photo_ids))
        return sorted(products, key=self.order_key(available))


def open_dataset(*, root: Path, category: str) -> Street2ShopDataset:
    """Load a category's metadata and list the photos folder, failing clearly on a bad folder."""
    root = Path(root)
    if category not in Category.values:
        raise SeedingError(f"Unknown category {category!r}; choose one of: {', '.join(Category.values)}.")
    if not root.is_dir():
        raise SeedingError(f"The dataset folder {root} does not exist.")
    retrieval, boxes, demo = _load_metadata(root=root, category=category)
    photos_dir = root / "photos"
    if not photos_dir.is_dir():
        raise SeedingError(f"There is no photos folder at {photos_dir}; extract photos.tar there first.")
    return Street2ShopDataset(
        root=root,
        category=category,
        photos_dir=photos_dir,
        retrieval=retrieval,
        boxes=boxes,
        demo=demo,
        present=_present_photo_ids(photos_dir),
    )


def _load_metadata(
    *, root: Path, category: str
) -> tuple[dict[int, list[int]], dict[int, list[Pair]], dict[int, DemoProduct]]:
    files = metadata.category_files(root, category)
    missing = files.missing()
    if missing:
        names = ", ".join(path.name for path in missing)
        raise MetadataError(f"Missing Street2Shop metadata in {files.retrieval.parent}: {names}")
    boxes: dict[int, list[Pair]] = defaultdict(list)
    for split, path in ((Split.TRAIN, files.train_pairs), (Split.TEST, files.test_pairs)):
        for pair in metadata.load_pairs(path, split=split.value).pairs:
            boxes[pair.product_id].append(pair)
    return (
        metadata.load_retrieval(files.retrieval),
        dict(boxes),
        metadata.load_demo_products(root, category),
    )


def _present_photo_ids(photos_dir: Path) -> set[int]:
    # One directory listing instead of a stat per id: the full dataset has ~425,000 photos.
    ids = set()
    with os.scandir(photos_dir) as entries:
        for entry in entries:
            match = _PHOTO_NAME.match(entry.name)
            if match and entry.is_file():
                ids.add(int(match.group(1)))
    return ids


class PhotoChecker:
    """Decodes each photo once per run; a street photo with several boxes is opened once."""

    def __init__(self, *, photos_dir: Path, present: set[int], verified: set[int] | None = None) -> None:
        self.photos_dir = photos_dir
        self.present = present
        self.verified = verified or set()
        self._results: dict[int, PhotoCheck] = {}

    def path(self, photo_id: int) -> Path:
        return self.photos_dir / metadata.photo_filename(photo_id)

    def check(self, photo_id: int) -> PhotoCheck:
        """(size, "", "") for a usable photo, else (None, reason, detail)."""
        if photo_id not in self._results:
            self._results[photo_id] = self._check(photo_id)
        return self._results[photo_id]

    def _check(self, photo_id: int) -> PhotoCheck:
        if photo_id not in self.present:
            return None, MISSING_PHOTO, ""
        if photo_id in self.verified:
            with suppress(OSError, ValueError, SyntaxError):
                return _stored_size(self.path(photo_id)), "", ""
        try:
            # Not turned upright: Street2Shop's boxes are on the stored pixel grid (see open_image).
            image = open_image(
                self.path(photo_id),
                max_pixels=settings.IMAGE_MAX_PIXELS,
                allowed_formats=ALLOWED_FORMATS,
                upright=False,
            )
        except ImageError as error:
            return None, BAD_IMAGE, str(error)
        except OSError as error:
            return None, BAD_IMAGE, f"unreadable: {error.strerror or error}"
        size = image.size
        image.close()
        return size, "", ""


def _stored_size(path: Path) -> tuple[int, int]:
    """The stored pixel grid's size, from the header alone (boxes are clamped to it)."""
    with Image.open(path) as image:
        return image.size
