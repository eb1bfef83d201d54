"""Seeding the catalogue from a loaded Street2Shop dataset (the real one or make_demo_dataset's)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path

from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import FileField

from shop.models import Category, Product, ProductImage, StreetPhoto
from shop.services.enqueue import IndexQueue
from shop.services.street2shop_dataset import (
    BAD_IMAGE,
    MISSING_PHOTO,
    PhotoChecker,
    SeedingError,
    Street2ShopDataset,
    open_dataset,
)
from shop.street2shop.metadata import DemoProduct, MetadataError, Pair
from shop.street2shop.progress import ProgressPrinter, Stream
from similarity.images import BadBox, clamp_box

BAD_BBOX = "bad_bbox"
# The model keeps one box per (street photo, product); about half the real pairs entries are
# further boxes of the same product in the same photo (mostly re-annotations).
EXTRA_BOX = "extra_box"
NO_SHOP_PHOTO = "no_shop_photo"
PRODUCT_CONFLICT = "product_conflict"

# Products per indexing task while seeding: full VGG19 batches, yet indexing starts early.
INDEX_CHUNK = 8
_SINGULAR: dict[str, str] = {Category.DRESSES: "dress", Category.SKIRTS: "skirt"}

__all__ = [
    "BAD_BBOX",
    "BAD_IMAGE",
    "MISSING_PHOTO",
    "MetadataError",
    "SeedReport",
    "SeedingError",
    "SkippedPhoto",
    "seed_products",
    "seed_street2shop",
]


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
    checker = PhotoChecker(photos_dir=dataset.photos_dir, present=dataset.present, verified=dataset.verified)
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


def _seed_product(
    *,
    product_id: int,
    category: str,
    dataset: Street2ShopDataset,
    checker: PhotoChecker,
    report: SeedReport,
    queue: IndexQueue,
    only: Collection[int] | None = None,
) -> None:
    """One product's pass: store the photos it lacks (creating it from a shop photo) and book the outcome."""
    product = Product.objects.filter(category=category, s2s_product_id=product_id).first()
    new_shop = _new_shop_photos(
        product_id=product_id,
        dataset=dataset,
        have=_stored_shop_ids(product),
        checker=checker,
        report=report,
        only=only,
    )
    if product is None and not new_shop:
        report.products_skipped += 1
        report.skipped_products.append((product_id, NO_SHOP_PHOTO))
        return
    boxes = dataset.boxes.get(product_id, [])
    new_street = _new_street_photos(
        product_id=product_id,
        boxes=boxes if only is None else [pair for pair in boxes if pair.photo_id in only],
        have=_stored_street_ids(product),
        checker=checker,
        report=report,
    )
    if product is not None and not new_shop and not new_street:
        report.products_existing += 1
        return
    files = _copy_files(checker=checker, new_shop=new_shop, new_street=new_street)
    try:
        saved = _save_product(
            product_id=product_id,
            category=category,
            demo=dataset.demo,
            new_shop=new_shop,
            new_street=new_street,
            files=files,
            queue=queue,
        )
    except IntegrityError as error:
        # E.g. the same Street2Shop id already used by a product of another category.
        report.products_skipped += 1
        report.skipped_products.append((product_id, f"{PRODUCT_CONFLICT}: {error}"))
        return
    _book_saved(report, saved=saved, new_street=new_street)


def _stored_shop_ids(product: Product | None) -> set[int]:
    if product is None:
        return set()
    return {pid for pid in product.images.values_list("s2s_photo_id", flat=True) if pid is not None}


def _stored_street_ids(product: Product | None) -> set[int]:
    if product is None:
        return set()
    return {pid for pid in product.street_photos.values_list("s2s_photo_id", flat=True) if pid is not None}


def _new_shop_photos(
    *,
    product_id: int,
    dataset: Street2ShopDataset,
    have: set[int],
    checker: PhotoChecker,
    report: SeedReport,
    only: Collection[int] | None,
) -> list[tuple[int, int]]:
    """(position, photo id) of each usable shop photo not stored yet; the unusable ones are reported."""
    new = []
    for position, photo_id in enumerate(dataset.retrieval[product_id]):
        if only is not None and photo_id not in only:
            continue
        if photo_id in have:
            report.shop_photos_existing += 1
            continue
        size, reason, detail = checker.check(photo_id)
        if size is None:
            report.skip(photo_id=photo_id, product_id=product_id, kind="shop", reason=reason, detail=detail)
            continue
        new.append((position, photo_id))
    return new


@dataclass(frozen=True, slots=True)
class _StoredFiles:
    """Media storage names of the photos a pass copied, by photo id."""

    shop: dict[int, str]
    street: dict[int, str]


@dataclass(frozen=True, slots=True)
class _Saved:
    """What one product's transaction wrote."""

    product_pk: int
    created: bool
    images_created: int
    street_ids: list[int]


def _copy_files(
    *, checker: PhotoChecker, new_shop: list[tuple[int, int]], new_street: list[_NewStreetPhoto]
) -> _StoredFiles:
    # Copied before the transaction: with SQLite a transaction holds the write lock.
    # A copy left behind by a failed transaction is reused by the next run.
    image_field = ProductImage._meta.get_field("image")
    street_field = StreetPhoto._meta.get_field("image")
    assert isinstance(image_field, FileField) and isinstance(street_field, FileField)
    return _StoredFiles(
        shop={photo_id: _store(image_field, checker.path(photo_id)) for _, photo_id in new_shop},
        street={item.pair.photo_id: _store(street_field, checker.path(item.pair.photo_id)) for item in new_street},
    )


def _save_product(
    *,
    product_id: int,
    category: str,
    demo: dict[int, DemoProduct],
    new_shop: list[tuple[int, int]],
    new_street: list[_NewStreetPhoto],
    files: _StoredFiles,
    queue: IndexQueue,
) -> _Saved:
    """The product (made if need be) and its new photos in one transaction, queued for indexing on commit."""
    with transaction.atomic():
        product, created = Product.objects.get_or_create(
            category=category,
            s2s_product_id=product_id,
            defaults=_product_defaults(product_id=product_id, category=category, demo=demo),
        )
        images_created = 0
        for position, photo_id in new_shop:
            _, made = ProductImage.objects.get_or_create(
                product=product,
                s2s_photo_id=photo_id,
                defaults={"image": files.shop[photo_id], "position": position},
            )
            images_created += made
        street_ids = []
        for item in new_street:
            street, made = StreetPhoto.objects.get_or_create(
                product=product,
                s2s_photo_id=item.pair.photo_id,
                defaults=_street_defaults(item, image=files.street[item.pair.photo_id]),
            )
            if made:
                street_ids.append(street.pk)
        # Queued on commit, in batches as products arrive: indexing starts while seeding goes on.
        queue.add(product_ids=[product.pk] if created or images_created else [], street_photo_ids=street_ids)
    return _Saved(product_pk=product.pk, created=created, images_created=images_created, street_ids=street_ids)


def _street_defaults(item: _NewStreetPhoto, *, image: str) -> dict[str, object]:
    left, top, width, height = item.bbox
    return {
        "image": image,
        "bbox_left": left,
        "bbox_top": top,
        "bbox_width": width,
        "bbox_height": height,
        "split": item.pair.split,
    }


def _book_saved(report: SeedReport, *, saved: _Saved, new_street: list[_NewStreetPhoto]) -> None:
    if saved.created:
        report.products_created += 1
    else:
        report.products_existing += 1
    if saved.created or saved.images_created:
        report.queued_product_ids.append(saved.product_pk)
    report.shop_photos_created += saved.images_created
    report.street_photos_created += len(saved.street_ids)
    report.clamped_bbox += sum(item.bbox != item.pair.bbox for item in new_street)


def _new_street_photos(
    *, product_id: int, boxes: list[Pair], have: set[int], checker: PhotoChecker, report: SeedReport
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


def _store(image_field: FileField, source: Path) -> str:
    """Copy a photo into media storage under its dataset name, reusing an earlier complete copy."""
    # No instance: upload_to is a plain folder here, so the name depends on the file name alone.
    name = image_field.generate_filename(None, source.name)  # type: ignore[arg-type]
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
