"""Seeding the catalogue from a Street2Shop-layout folder built by each test."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from shop.models import Product, ProductImage, StreetPhoto
from shop.services import enqueue, seeding
from shop.services.seeding import SeedReport, placeholder_price, seed_street2shop
from shop.street2shop.metadata import MetadataError, load_retrieval, photo_filename

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "street2shop"

HTML = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Gone</body></html>"


def jpeg(size: tuple[int, int] = (200, 300), seed: int = 0) -> bytes:
    # Noise, so the compressed data is long enough that cutting it always damages pixels.
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def box(photo: int, product: int, left: int, top: int, width: int, height: int) -> dict:
    return {"photo": photo, "product": product, "bbox": {"width": width, "top": top, "left": left, "height": height}}


def make_dataset(
    root: Path,
    *,
    train: list[dict],
    test: list[dict],
    retrieval: dict[int, list[int]],
    photos: dict[int, bytes],
    category: str = "dresses",
    demo: list[dict] | None = None,
) -> Path:
    meta = root / "meta" / "json"
    meta.mkdir(parents=True)
    (meta / f"train_pairs_{category}.json").write_text(json.dumps(train))
    (meta / f"test_pairs_{category}.json").write_text(json.dumps(test))
    entries = [{"photo": photo, "product": product} for product, ids in retrieval.items() for photo in ids]
    (meta / f"retrieval_{category}.json").write_text(json.dumps(entries))
    if demo is not None:
        (meta / f"demo_products_{category}.json").write_text(json.dumps(demo))
    (root / "photos").mkdir()
    for photo_id, data in photos.items():
        (root / "photos" / photo_filename(photo_id)).write_bytes(data)
    return root


# Products: 10 and 30 share street photo 2001; 20 has every kind of bad street photo;
# 40's only shop photo is a web page; 50's shop photo is missing; 60 has no street photos;
# 70 has two boxes in one street photo.
TRAIN = [
    box(2001, 10, 10, 20, 100, 150),
    box(2002, 10, 0, 0, 50, 50),  # photo missing
    box(2001, 30, 90, 100, 60, 80),
    box(2007, 30, 500, 500, 20, 20),  # outside the 200x300 photo
    box(2008, 70, 5, 5, 40, 40),
    box(2008, 70, 100, 100, 50, 50),  # a second box of the same product in the same photo
]
TEST = [
    box(2003, 20, 150, 250, 100, 100),  # runs over the right and bottom edges
    box(2004, 20, 10, 10, 0, 40),  # zero width
    box(2005, 20, 0, 0, 50, 50),  # truncated JPEG
    box(2006, 20, 0, 0, 50, 50),  # HTML saved as .jpg
]
RETRIEVAL = {10: [1001, 1002], 20: [1003], 30: [1004], 40: [1005], 50: [1006], 60: [1007], 70: [1008]}


def photos() -> dict[int, bytes]:
    files = {photo: jpeg(seed=photo) for photo in (1001, 1003, 1004, 1007, 1008, 2001, 2003, 2004, 2007, 2008)}
    files[1005] = HTML
    files[2005] = jpeg(seed=2005)[:3000]
    files[2006] = HTML
    return files


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def delayed(monkeypatch) -> dict[str, list[list[int]]]:
    """Records the indexing tasks seeding would send, so no broker or worker is involved."""
    calls: dict[str, list[list[int]]] = {"index_products": [], "index_street_photos": []}
    for name, recorded in calls.items():
        monkeypatch.setattr(enqueue, name, lambda ids, recorded=recorded: recorded.append(list(ids)))
    return calls


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "s2s", train=TRAIN, test=TEST, retrieval=RETRIEVAL, photos=photos())


def seed(root: Path, **kwargs) -> SeedReport:
    return seed_street2shop(root=root, category=kwargs.pop("category", "dresses"), **kwargs)


def test_it_creates_products_shop_images_and_street_photos(db, media, delayed, root) -> None:
    report = seed(root)

    assert sorted(Product.objects.values_list("s2s_product_id", flat=True)) == [10, 20, 30, 60, 70]
    assert (report.products_created, report.products_existing, report.products_skipped) == (5, 0, 1)
    assert report.skipped_products == [(40, "no_shop_photo")]
    assert report.shop_photos_created == ProductImage.objects.count() == 5
    assert report.street_photos_created == StreetPhoto.objects.count() == 4
    product = Product.objects.get(s2s_product_id=10)
    assert product.category == "dresses"
    assert product.title == "Street2Shop dress 10"
    assert product.price == placeholder_price(product_id=10)
    image = product.images.get()
    assert (image.s2s_photo_id, image.image.name, image.position) == (1001, "products/000001001.jpg", 0)
    assert (media / "products" / "000001001.jpg").read_bytes() == (root / "photos" / "000001001.jpg").read_bytes()


def test_it_takes_the_split_from_the_file_each_box_came_from(db, media, delayed, root) -> None:
    seed(root)

    splits = dict(StreetPhoto.objects.values_list("product__s2s_product_id", "split").distinct())
    assert splits == {10: "train", 20: "test", 30: "train", 70: "train"}


def test_it_stores_one_row_per_product_boxed_in_a_street_photo(db, media, delayed, root) -> None:
    seed(root)

    rows = StreetPhoto.objects.filter(s2s_photo_id=2001).order_by("product__s2s_product_id")
    assert [(row.product.s2s_product_id, row.bbox) for row in rows] == [
        (10, (10, 20, 100, 150)),
        (30, (90, 100, 60, 80)),
    ]
    # Both rows point at one copy of the photo.
    assert {row.image.name for row in rows} == {"street/000002001.jpg"}
    assert sorted(p.name for p in (media / "street").iterdir()) == ["000002001.jpg", "000002003.jpg", "000002008.jpg"]


def test_it_stores_a_box_that_runs_over_the_edge_clamped(db, media, delayed, root) -> None:
    report = seed(root)

    assert StreetPhoto.objects.get(s2s_photo_id=2003).bbox == (150, 250, 50, 50)
    assert report.clamped_bbox == 1


def test_it_skips_and_reports_unusable_photos_and_boxes(db, media, delayed, root) -> None:
    report = seed(root)

    skipped = {(s.kind, s.photo_id): s.reason for s in report.skipped}
    assert skipped == {
        ("shop", 1002): "missing_photo",
        ("street", 2002): "missing_photo",
        ("shop", 1005): "bad_image",
        ("street", 2005): "bad_image",
        ("street", 2006): "bad_image",
        ("street", 2004): "bad_bbox",
        ("street", 2007): "bad_bbox",
        ("street", 2008): "extra_box",
    }
    assert report.skipped_counts == {"missing_photo": 2, "bad_image": 3, "bad_bbox": 2, "extra_box": 1}
    details = {s.photo_id: s.detail for s in report.skipped}
    assert "web page" in details[2006]
    assert "damaged or incomplete" in details[2005]
    assert "no area" in details[2004]
    assert "outside" in details[2007]
    assert not StreetPhoto.objects.filter(s2s_photo_id__in=[2002, 2004, 2005, 2006, 2007]).exists()


def test_it_keeps_the_first_box_of_a_product_in_a_photo(db, media, delayed, root) -> None:
    seed(root)

    assert list(StreetPhoto.objects.filter(s2s_photo_id=2008).values_list("bbox_left", "bbox_top")) == [(5, 5)]


def test_it_changes_nothing_when_run_again(db, media, delayed, root, django_capture_on_commit_callbacks) -> None:
    seed(root)
    before = (
        list(Product.objects.values_list("id", "title", "price")),
        list(ProductImage.objects.values_list("id", "image")),
        list(StreetPhoto.objects.values_list("id", "image", "bbox_left", "bbox_top", "bbox_width", "bbox_height")),
    )
    files = sorted(p.relative_to(media) for p in media.rglob("*") if p.is_file())

    with django_capture_on_commit_callbacks() as callbacks:
        again = seed(root)

    assert (again.products_created, again.products_existing) == (0, 5)
    assert (again.shop_photos_created, again.street_photos_created) == (0, 0)
    assert (again.shop_photos_existing, again.street_photos_existing) == (5, 4)
    assert again.skipped_counts == {"missing_photo": 2, "bad_image": 3, "bad_bbox": 2, "extra_box": 1}
    assert callbacks == []
    assert again.queued_product_ids == []
    after = (
        list(Product.objects.values_list("id", "title", "price")),
        list(ProductImage.objects.values_list("id", "image")),
        list(StreetPhoto.objects.values_list("id", "image", "bbox_left", "bbox_top", "bbox_width", "bbox_height")),
    )
    assert after == before
    assert sorted(p.relative_to(media) for p in media.rglob("*") if p.is_file()) == files


def test_it_adds_photos_that_arrived_since_the_last_run(
    db, media, delayed, root, django_capture_on_commit_callbacks
) -> None:
    seed(root)
    (root / "photos" / "000001002.jpg").write_bytes(jpeg(seed=1002))
    (root / "photos" / "000002002.jpg").write_bytes(jpeg(seed=2002))

    with django_capture_on_commit_callbacks(execute=True):
        report = seed(root)

    product = Product.objects.get(s2s_product_id=10)
    assert list(product.images.values_list("s2s_photo_id", "position")) == [(1001, 0), (1002, 1)]
    assert set(product.street_photos.values_list("s2s_photo_id", flat=True)) == {2001, 2002}
    assert (report.shop_photos_created, report.street_photos_created) == (1, 1)
    # New shop photos change the product's features: it is indexed again.
    assert delayed["index_products"][-1] == [product.pk]


def test_it_reuses_a_complete_copy_left_by_an_earlier_run(db, media, delayed, root) -> None:
    (media / "products").mkdir(parents=True)
    (media / "products" / "000001001.jpg").write_bytes((root / "photos" / "000001001.jpg").read_bytes())

    seed(root)

    assert ProductImage.objects.get(s2s_photo_id=1001).image.name == "products/000001001.jpg"
    assert [p.name for p in (media / "products").iterdir() if p.name.startswith("000001001")] == ["000001001.jpg"]


def test_it_honours_the_limit(db, media, delayed, root) -> None:
    report = seed(root, limit=2)

    # Products with street photos present come first, then by id.
    assert sorted(Product.objects.values_list("s2s_product_id", flat=True)) == [10, 20]
    assert report.products_created == 2
    assert not StreetPhoto.objects.filter(product__s2s_product_id=30).exists()

    again = seed(root, limit=2)
    assert (again.products_created, again.products_existing) == (0, 2)

    rest = seed(root, limit=4)
    assert (rest.products_created, rest.products_existing) == (2, 2)
    assert sorted(Product.objects.values_list("s2s_product_id", flat=True)) == [10, 20, 30, 70]


def test_it_queues_new_products_for_indexing_after_they_commit(
    db, media, delayed, root, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        report = seed(root)

    # Nothing is sent before the transaction commits.
    assert delayed == {"index_products": [], "index_street_photos": []}
    by_s2s = dict(Product.objects.values_list("s2s_product_id", "id"))
    # Batched in seeding order (fewer than a chunk here, so one batch at the end).
    expected = [[by_s2s[s2s] for s2s in (10, 20, 30, 70, 60)]]
    assert report.queued_product_ids == expected[0]
    assert len(callbacks) == 6  # one per product as it commits, then the final flush

    for callback in callbacks:
        callback()

    assert delayed["index_products"] == expected
    street = dict(StreetPhoto.objects.values_list("id", "product__s2s_product_id"))
    queued_street = [[street[pk] for pk in ids] for ids in delayed["index_street_photos"]]
    assert queued_street == [[10, 20, 30, 70]]


def test_it_keeps_what_was_stored_when_a_later_product_fails(db, media, delayed, root, monkeypatch) -> None:
    real = seeding.IndexQueue.add
    calls = []

    def fail_on_second(self, **ids):
        calls.append(ids)
        if len(calls) == 2:
            raise RuntimeError("a failure inside the second product's transaction")
        real(self, **ids)

    monkeypatch.setattr(seeding.IndexQueue, "add", fail_on_second)

    with pytest.raises(RuntimeError, match="second product"):
        seed(root)

    # Product 10 was committed; product 20's transaction was rolled back whole.
    assert list(Product.objects.values_list("s2s_product_id", flat=True)) == [10]
    assert StreetPhoto.objects.count() == 1
    assert not ProductImage.objects.filter(s2s_photo_id=1003).exists()


def test_it_reports_a_missing_street_photo_once_however_many_boxes_it_has(db, media, delayed, tmp_path) -> None:
    root = make_dataset(
        tmp_path / "boxes",
        train=[box(2001, 10, 0, 0, 50, 50), box(2001, 10, 5, 5, 50, 50), box(2001, 10, 9, 9, 0, 9)],
        test=[],
        retrieval={10: [1001]},
        photos={1001: jpeg(seed=1)},
    )

    report = seed(root)

    assert sorted((s.photo_id, s.reason) for s in report.skipped) == [(2001, "bad_bbox"), (2001, "missing_photo")]


def test_it_keeps_a_dress_and_a_skirt_with_the_same_dataset_id_apart(db, media, delayed, tmp_path) -> None:
    for category in ("dresses", "skirts"):
        root = make_dataset(
            tmp_path / category,
            category=category,
            train=[],
            test=[],
            retrieval={2056: [1001 if category == "dresses" else 1002]},
            photos={1001: jpeg(seed=1), 1002: jpeg(seed=2)},
        )
        report = seed(root, category=category)

    assert report.skipped_products == []
    assert sorted(Product.objects.values_list("category", "s2s_product_id")) == [("dresses", 2056), ("skirts", 2056)]


def test_it_takes_titles_and_prices_from_demo_products(db, media, delayed, tmp_path) -> None:
    root = make_dataset(
        tmp_path / "demo",
        train=[box(2001, 10, 0, 0, 50, 50)],
        test=[],
        retrieval={10: [1001], 20: [1002]},
        photos={1001: jpeg(seed=1), 1002: jpeg(seed=2), 2001: jpeg(seed=3)},
        demo=[{"product": 10, "title": "Red wrap dress", "price": "49.00", "attributes": {"colour": "red"}}],
    )

    seed(root)

    assert Product.objects.get(s2s_product_id=10).title == "Red wrap dress"
    assert Product.objects.get(s2s_product_id=10).price == Decimal("49.00")
    assert Product.objects.get(s2s_product_id=20).title == "Street2Shop dress 20"


def test_it_seeds_skirts(db, media, delayed, tmp_path) -> None:
    root = make_dataset(
        tmp_path / "skirts",
        category="skirts",
        train=[box(2001, 3, 0, 0, 50, 50)],
        test=[],
        retrieval={3: [1001]},
        photos={1001: jpeg(seed=1), 2001: jpeg(seed=2)},
    )

    seed(root, category="skirts")

    product = Product.objects.get()
    assert (product.category, product.title, product.street_photos.count()) == ("skirts", "Street2Shop skirt 3", 1)


def test_it_rejects_a_folder_without_metadata(db, media, tmp_path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(MetadataError, match="Missing Street2Shop metadata .*train_pairs_dresses.json"):
        seed(tmp_path / "empty")


def test_the_command_prints_a_summary(db, media, delayed, root) -> None:
    out = io.StringIO()

    call_command("seed_street2shop", root=str(root), category="dresses", stdout=out)

    text = out.getvalue()
    assert "products created" in text and "      5" in text
    assert "skipped: bad image" in text
    assert "street      2006  product 20      bad_image  This file is a web page" in text


def test_the_command_honours_the_limit(db, media, delayed, root) -> None:
    call_command("seed_street2shop", "--root", str(root), "--limit", "1", stdout=io.StringIO())

    assert list(Product.objects.values_list("s2s_product_id", flat=True)) == [10]


def test_the_command_fails_clearly_on_a_missing_root(db, tmp_path) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("seed_street2shop", root=str(tmp_path / "nowhere"), stdout=io.StringIO())


def test_the_command_fails_clearly_on_malformed_metadata(db, media, root) -> None:
    (root / "meta" / "json" / "test_pairs_dresses.json").write_text('[{"photo": 1, "product": 2, "bbox": {}}]')

    with pytest.raises(CommandError, match="test_pairs_dresses.json: entry 0: bbox is missing"):
        call_command("seed_street2shop", root=str(root), stdout=io.StringIO())


def test_the_command_fails_clearly_without_a_photos_folder(db, media, root) -> None:
    for photo in (root / "photos").iterdir():
        photo.unlink()
    (root / "photos").rmdir()

    with pytest.raises(CommandError, match="no photos folder"):
        call_command("seed_street2shop", root=str(root), stdout=io.StringIO())


# --- the six real street photos -----------------------------------------------------------

REAL_PHOTOS = {1: 65901, 4: 47942, 5: 5235, 6: 9891, 7: 10049, 9: 21005}  # street photo -> dress product


@pytest.mark.skipif(not (REAL_ROOT / "photos").is_dir(), reason="../shared/street2shop is absent")
def test_it_seeds_from_the_real_street_photos(db, media, delayed, tmp_path) -> None:
    root = tmp_path / "real"
    (root / "meta" / "json").mkdir(parents=True)
    for name in ("train_pairs_dresses.json", "test_pairs_dresses.json", "retrieval_dresses.json"):
        (root / "meta" / "json" / name).symlink_to(REAL_ROOT / "meta" / "json" / name)
    (root / "photos").mkdir()
    for photo in REAL_PHOTOS:
        (root / "photos" / photo_filename(photo)).symlink_to(REAL_ROOT / "photos" / photo_filename(photo))
    # The dataset's shop photos are not here: stand in a generated one for each product's first.
    retrieval = load_retrieval(REAL_ROOT / "meta" / "json" / "retrieval_dresses.json")
    for product in REAL_PHOTOS.values():
        (root / "photos" / photo_filename(retrieval[product][0])).write_bytes(jpeg(seed=product))

    report = seed(root)

    assert report.products_created == 6
    assert report.street_photos_created == 6
    assert (report.bad_image, report.bad_bbox, report.clamped_bbox) == (0, 0, 0)
    rows = {row.s2s_photo_id: row for row in StreetPhoto.objects.select_related("product")}
    assert {photo: row.product.s2s_product_id for photo, row in rows.items()} == REAL_PHOTOS
    assert rows[1].bbox == (560, 143, 755, 1121)
    assert rows[7].bbox == (885, 2106, 614, 1050)
    assert rows[1].image.name == "street/000000001.jpg"
    assert rows[1].image.size == (REAL_ROOT / "photos" / "000000001.jpg").stat().st_size
    # Every other street photo of these products is reported missing, not silently dropped.
    assert report.missing_photo > 0
    assert {s.reason for s in report.skipped} == {"missing_photo"}
