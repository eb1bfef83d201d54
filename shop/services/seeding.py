"""Seeding the catalogue from a folder in Street2Shop layout (the real dataset or make_demo_dataset's)."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Container, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from PIL import Image

from shop.models import Category, Product, ProductImage, Split, StreetPhoto
from shop.services.indexing import IndexQueue
from shop.street2shop import metadata
from shop.street2shop.metadata import DemoProduct, MetadataError, Pair
from shop.street2shop.progress import ProgressPrinter, Stream
from similarity.images import ALLOWED_FORMATS, BadBox, ImageError, clamp_box, open_image

MISSING_PHOTO = "missing_photo"
BAD_IMAGE = "bad_image"
BAD_BBOX = "bad_bbox"
# The model keeps one box per (street photo, product); about half the real pairs entries are
# further boxes of the same product in the same photo (mostly re-annotations).
EXTRA_BOX = "extra_box"
NO_SHOP_PHOTO = "no_shop_photo"
PRODUCT_CONFLICT = "product_conflict"

# Products per indexing task while seeding: full VGG19 batches, yet indexing starts early.
INDEX_CHUNK = 8
_PHOTO_NAME = re.compile(r"^(\d+)\.jpg$")
_SINGULAR = {Category.DRESSES: "dress", Category.SKIRTS: "skirt"}

__all__ = [
    "MetadataError",
    "SeedReport",
    "SeedingError",
    "SkippedPhoto",
    "Street2ShopDataset",
    "open_dataset",
    "seed_products",
    "seed_street2shop",
]


class SeedingError(Exception):
    """The dataset folder cannot be seeded from (other than malformed metadata)."""


@dataclass(frozen=True, slots=True)
class SkippedPhoto:
    photo_id: int
    product_id: int
    kind: str  # "shop" or "street"
    reason: str
    detail: str = ""


@dataclass
class SeedReport:
    category: str
    candidates: int = 0
    products_created: int = 0
    products_existing: int = 0
    products_skipped: int = 0
    shop_photos_created: int = 0
    shop_photos_existing: int = 0
    street_photos_created: int = 0
    street_photos_existing: int = 0
    missing_photo: int = 0
    bad_image: int = 0
    bad_bbox: int = 0
    clamped_bbox: int = 0
    extra_box: int = 0
    skipped: list[SkippedPhoto] = field(default_factory=list)
    skipped_products: list[tuple[int, str]] = field(default_factory=list)
    queued_product_ids: list[int] = field(default_factory=list)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {
            MISSING_PHOTO: self.missing_photo,
            BAD_IMAGE: self.bad_image,
            BAD_BBOX: self.bad_bbox,
            EXTRA_BOX: self.extra_box,
        }

    @property
    def products_seeded(self) -> int:
        """Products that exist after the run: created now or by an earlier run."""
        return self.products_created + self.products_existing

    def skip(self, *, photo_id: int, product_id: int, kind: str, reason: str, detail: str = "") -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        self.skipped.append(SkippedPhoto(photo_id, product_id, kind, reason, detail))

    def add(self, other: SeedReport, *, products: bool = True) -> None:
        """Fold in the report of another pass over the same category (seeding in chunks).

        ``products=False`` folds only what happened to photos (and the products queued for indexing,
        which the caller keeps free of repeats): for a pass that attached photos to products already
        counted by an earlier pass.
        """
        product_fields = {"candidates", "products_created", "products_existing", "products_skipped", "skipped_products"}
        for item in fields(self):
            if not products and item.name in product_fields:
                continue
            value = getattr(self, item.name)
            if isinstance(value, int):
                setattr(self, item.name, value + getattr(other, item.name))
            elif isinstance(value, list):
                value.extend(getattr(other, item.name))


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


@dataclass(frozen=True, slots=True)
class _NewStreetPhoto:
    pair: Pair
    bbox: tuple[int, int, int, int]


def seed_street2shop(
    *,
    root: Path,
    category: str,
    limit: int | None = None,
    stdout: Stream | None = None,
    product_ids: Collection[int] | None = None,
) -> SeedReport:
    """Create products, shop images and street photos for the photos present under root/photos/.

    With ``product_ids``, only those products are seeded, and each one without a shop photo is
    reported as skipped rather than left out.
    """
    dataset = open_dataset(root=root, category=category)
    return seed_products(dataset=dataset, limit=limit, stdout=stdout, product_ids=product_ids)


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


def seed_products(
    *,
    dataset: Street2ShopDataset,
    limit: int | None = None,
    stdout: Stream | None = None,
    product_ids: Collection[int] | None = None,
    index_queue: IndexQueue | None = None,
    photos: Mapping[int, Collection[int]] | None = None,
) -> SeedReport:
    """Seed a loaded dataset's candidates (or just ``product_ids``); see ``seed_street2shop``.

    A caller seeding in several passes may share one ``index_queue`` (and flush it itself) so
    indexing tasks stay full batches. With ``photos`` (product id -> photo ids), a product's pass
    looks only at those of its photos, neither storing nor reporting the others: a downloader
    seeds a product from its first good shop photo and attaches the rest as they arrive.
    """
    if limit is not None and limit < 0:
        raise SeedingError("The limit must be zero or more.")
    category = dataset.category
    checker = _PhotoChecker(photos_dir=dataset.photos_dir, present=dataset.present, verified=dataset.verified)
    if product_ids is None:
        candidates = dataset.candidates()
    else:
        unknown = set(product_ids) - dataset.retrieval.keys()
        if unknown:
            raise SeedingError(
                f"{len(unknown)} products are not in the {category} metadata, e.g. {sorted(unknown)[:5]}"
            )
        candidates = sorted(set(product_ids), key=dataset.order_key())
    report = SeedReport(category=category, candidates=len(candidates))
    queue = index_queue or IndexQueue(chunk=INDEX_CHUNK)
    printer = _SeedProgress(report, stream=stdout) if stdout is not None else None
    try:
        for product_id in candidates:
            if limit is not None and report.products_seeded >= limit:
                break
            _seed_product(
                product_id=product_id,
                category=category,
                dataset=dataset,
                checker=checker,
                report=report,
                queue=queue,
                only=None if photos is None else photos.get(product_id, ()),
            )
            if printer is not None:
                printer.advance()
    finally:
        if index_queue is None:
            queue.flush()  # an interrupted run still queues what it stored
        if printer is not None and printer.done:
            printer.close()
    return report


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


class _PhotoChecker:
    """Decodes each photo once per run; a street photo with several boxes is opened once."""

    def __init__(self, *, photos_dir: Path, present: set[int], verified: set[int] | None = None) -> None:
        self.photos_dir = photos_dir
        self.present = present
        self.verified = verified or set()
        self._results: dict[int, tuple[tuple[int, int] | None, str, str]] = {}

    def path(self, photo_id: int) -> Path:
        return self.photos_dir / metadata.photo_filename(photo_id)

    def check(self, photo_id: int) -> tuple[tuple[int, int] | None, str, str]:
        """(size, "", "") for a usable photo, else (None, reason, detail)."""
        if photo_id not in self._results:
            self._results[photo_id] = self._check(photo_id)
        return self._results[photo_id]

    def _check(self, photo_id: int) -> tuple[tuple[int, int] | None, str, str]:
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


def _seed_product(
    *,
    product_id: int,
    category: str,
    dataset: Street2ShopDataset,
    checker: _PhotoChecker,
    report: SeedReport,
    queue: IndexQueue,
    only: Collection[int] | None = None,
) -> None:
    product = Product.objects.filter(category=category, s2s_product_id=product_id).first()
    have_shop: set[int] = set()
    have_street: set[int] = set()
    if product is not None:
        have_shop = set(product.images.values_list("s2s_photo_id", flat=True))
        have_street = set(product.street_photos.values_list("s2s_photo_id", flat=True))

    new_shop: list[tuple[int, int]] = []  # (position, photo id)
    for position, photo_id in enumerate(dataset.retrieval[product_id]):
        if only is not None and photo_id not in only:
            continue
        if photo_id in have_shop:
            report.shop_photos_existing += 1
            continue
        size, reason, detail = checker.check(photo_id)
        if size is None:
            report.skip(photo_id=photo_id, product_id=product_id, kind="shop", reason=reason, detail=detail)
            continue
        new_shop.append((position, photo_id))
    if product is None and not new_shop:
        report.products_skipped += 1
        report.skipped_products.append((product_id, NO_SHOP_PHOTO))
        return

    boxes = dataset.boxes.get(product_id, [])
    new_street = _new_street_photos(
        product_id=product_id,
        boxes=boxes if only is None else [pair for pair in boxes if pair.photo_id in only],
        have=have_street,
        checker=checker,
        report=report,
    )
    if product is not None and not new_shop and not new_street:
        report.products_existing += 1
        return

    # Copy files before the transaction: with SQLite a transaction holds the write lock.
    # A copy left behind by a failed transaction is reused by the next run.
    image_field = ProductImage._meta.get_field("image")
    street_field = StreetPhoto._meta.get_field("image")
    shop_names = {photo_id: _store(image_field, checker.path(photo_id)) for _, photo_id in new_shop}
    street_names = {item.pair.photo_id: _store(street_field, checker.path(item.pair.photo_id)) for item in new_street}
    try:
        with transaction.atomic():
            product, created = Product.objects.get_or_create(
                category=category,
                s2s_product_id=product_id,
                defaults=_product_defaults(product_id=product_id, category=category, demo=dataset.demo),
            )
            images_created = 0
            for position, photo_id in new_shop:
                _, made = ProductImage.objects.get_or_create(
                    product=product,
                    s2s_photo_id=photo_id,
                    defaults={"image": shop_names[photo_id], "position": position},
                )
                images_created += made
            street_ids = []
            for item in new_street:
                left, top, width, height = item.bbox
                street, made = StreetPhoto.objects.get_or_create(
                    product=product,
                    s2s_photo_id=item.pair.photo_id,
                    defaults={
                        "image": street_names[item.pair.photo_id],
                        "bbox_left": left,
                        "bbox_top": top,
                        "bbox_width": width,
                        "bbox_height": height,
                        "split": item.pair.split,
                    },
                )
                if made:
                    street_ids.append(street.pk)
            # Queued on commit, in batches as products arrive: indexing starts while seeding goes on.
            queue.add(product_ids=[product.pk] if created or images_created else [], street_photo_ids=street_ids)
    except IntegrityError as error:
        # E.g. the same Street2Shop id already used by a product of another category.
        report.products_skipped += 1
        report.skipped_products.append((product_id, f"{PRODUCT_CONFLICT}: {error}"))
        return

    if created:
        report.products_created += 1
    else:
        report.products_existing += 1
    if created or images_created:
        report.queued_product_ids.append(product.pk)
    report.shop_photos_created += images_created
    report.street_photos_created += len(street_ids)
    report.clamped_bbox += sum(item.bbox != item.pair.bbox for item in new_street)


def _new_street_photos(
    *, product_id: int, boxes: list[Pair], have: set[int], checker: _PhotoChecker, report: SeedReport
) -> list[_NewStreetPhoto]:
    """The first usable box of each street photo not stored yet; the other boxes are reported."""
    have = set(have)
    by_photo: dict[int, list[Pair]] = defaultdict(list)
    for pair in boxes:
        by_photo[pair.photo_id].append(pair)
    new = []
    for photo_id, pairs in by_photo.items():

        def skip(reason: str, detail: str, photo_id: int = photo_id) -> None:
            report.skip(photo_id=photo_id, product_id=product_id, kind="street", reason=reason, detail=detail)

        for pair in pairs:
            if pair.has_empty_box:
                skip(BAD_BBOX, f"the box {pair.bbox} has no area (entry {pair.index} of the {pair.split} pairs)")
        usable = [pair for pair in pairs if not pair.has_empty_box]
        if not usable:
            continue
        if photo_id in have:
            report.street_photos_existing += 1
            # Stored by an earlier run; without decoding the photo again, count all but one box
            # as extra (a box that fell outside the photo then is counted as extra now).
            for pair in usable[1:]:
                skip(EXTRA_BOX, _extra_box_detail(pair))
            continue
        size, reason, detail = checker.check(photo_id)
        if size is None:
            # One report per photo, however many boxes it carries.
            skip(reason, detail)
            continue
        for pair in usable:
            try:
                bbox = clamp_box(pair.bbox, size)
            except BadBox as error:
                skip(BAD_BBOX, str(error))
                continue
            if photo_id in have:
                skip(EXTRA_BOX, _extra_box_detail(pair))
            else:
                new.append(_NewStreetPhoto(pair=pair, bbox=bbox))
                have.add(photo_id)
    return new


def _extra_box_detail(pair: Pair) -> str:
    return f"box {pair.bbox}: this photo already has a box for product {pair.product_id}"


def _store(image_field, source: Path) -> str:
    """Copy a photo into media storage under its dataset name, reusing an earlier complete copy."""
    name = image_field.generate_filename(None, source.name)
    storage = image_field.storage
    if storage.exists(name) and storage.size(name) == source.stat().st_size:
        return name
    # A different file under that name (e.g. a partial copy) is left alone; storage picks a free name.
    with source.open("rb") as handle:
        return storage.save(name, File(handle, name=source.name))


def _product_defaults(*, product_id: int, category: str, demo: dict[int, DemoProduct]) -> dict[str, object]:
    if product_id in demo:
        return {"title": demo[product_id].title[:200], "price": demo[product_id].price}
    singular = _SINGULAR.get(category, category)
    return {"title": f"Street2Shop {singular} {product_id}", "price": placeholder_price(product_id=product_id)}


def placeholder_price(*, product_id: int) -> Decimal:
    """A stable made-up price (20.99 to 199.99) for products the dataset gives no price for."""
    return Decimal(20 + (product_id * 7919) % 180) + Decimal("0.99")


class _SeedProgress(ProgressPrinter):
    """The seeding line: candidates done, and how many products were created, already there or skipped."""

    def __init__(self, report: SeedReport, *, stream: Stream) -> None:
        super().__init__(report.candidates, unit="products", stream=stream)
        self.report = report

    def details(self) -> str:
        report = self.report
        return (
            f"  created {report.products_created:,}  existing {report.products_existing:,}"
            f"  skipped {report.products_skipped:,}"
        )
