"""seed_street2shop --download against a misbehaving photo server on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from shop.models import PhotoDownload, Product, ProductImage, StreetPhoto
from shop.services import download_pipeline, enqueue, street2shop_dataset
from shop.services.photo_downloads import download_and_seed
from shop.services.seeding import SeedingError, seed_street2shop
from shop.street2shop.download import LOCK_NAME
from shop.street2shop.metadata import photo_filename
from tests import httpserver
from tests import test_seeding as seeding_test
from tests.httpserver import PhotoServer
from tests.test_seeding import box, jpeg, make_dataset

# Products, in the order seeding takes them (those with street photos first, then by id):
# 10 all good, its street photo 2001 shared with 60; 20 has a 404 shop photo, a 500-then-200 one,
# a 429-then-200 street photo and one behind a redirect chain; 30's shop photos are a web page and
# a truncated JPEG (so its street photo 2004 is never fetched); 50's street photos time out, have
# a zero-size box (never fetched) or a box outside the photo; 40's shop photos are an empty body
# and a pixel bomb; 70 has one photo missing from photos.txt; 80's server answers 503 twice, then
# the photo (what --retry-failed is for).
TRAIN = [
    box(2001, 10, 10, 20, 100, 150),
    box(2002, 20, 0, 0, 50, 50),
    box(2004, 30, 0, 0, 50, 50),
    box(2005, 50, 0, 0, 50, 50),
    box(2006, 50, 10, 10, 0, 40),
    box(2007, 50, 500, 500, 20, 20),
    box(2001, 60, 90, 100, 60, 80),
]
TEST = [box(2003, 20, 150, 250, 100, 100)]  # runs over the edge of the 200×300 photo: clamped
RETRIEVAL = {
    10: [1001],
    20: [1002, 1003],
    30: [1004, 1005],
    40: [1006, 1007],
    50: [1008],
    60: [1009],
    70: [1010, 1011],
    80: [1012],
}
RETRIEVAL_IDS = sorted({photo for photos in RETRIEVAL.values() for photo in photos})
STREET_IDS = sorted({entry["photo"] for entry in TRAIN + TEST})
NOT_LISTED = 1010
SKIRT_PHOTOS = (3001, 3002)
READ_TIMEOUT = 0.3
RETRIES = 1
MAX_PIXELS = 1_000_000

OUTCOMES = {  # photo: (outcome, http status, attempts)
    1001: ("ok", 200, 1),
    2001: ("ok", 200, 1),
    1002: ("http_error", 404, 1),
    1003: ("ok", 200, 2),
    2002: ("ok", 200, 2),
    2003: ("ok", 200, 1),
    1004: ("not_an_image", 200, 1),
    1005: ("truncated", 200, 1),
    1008: ("ok", 200, 1),
    2005: ("timeout", None, RETRIES + 1),
    2007: ("ok", 200, 1),
    1009: ("ok", 200, 1),
    1006: ("not_an_image", 200, 1),
    1007: ("too_large", 200, 1),
    1010: ("not_listed", None, 0),
    1011: ("ok", 200, 1),
    1012: ("http_error", 503, RETRIES + 1),
}
GOOD = {photo for photo, (outcome, _, _) in OUTCOMES.items() if outcome == "ok"}
SEEDED = [10, 20, 50, 60, 70]


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def path(photo_id: int) -> str:
    return f"/p/{photo_id}.jpg"


def routes(server: PhotoServer) -> dict[int, httpserver.Route]:
    photo = {photo_id: jpeg(seed=photo_id) for photo_id in (*RETRIEVAL_IDS, *STREET_IDS, *SKIRT_PHOTOS)}
    for hop in (2, 1):
        server.add(f"/hop/{hop}/2003", httpserver.redirect(f"/hop/{hop - 1}/2003" if hop > 1 else "/img/2003"))
    server.add("/img/2003", httpserver.image(photo[2003]))
    special = {
        1002: httpserver.status(404),
        1003: httpserver.fails_first(1, 500, photo[1003]),
        2002: httpserver.fails_first(1, 429, photo[2002], {"Retry-After": "1"}),
        2003: httpserver.redirect("/hop/2/2003"),
        1004: httpserver.html(),
        1005: httpserver.image(photo[1005][:3000]),
        2005: httpserver.slow(READ_TIMEOUT * 3, photo[2005]),
        1006: httpserver.image(b""),
        1007: httpserver.image(png((2000, 2000)), "image/png"),  # 4 megapixels in a few KB
        1012: httpserver.fails_first(RETRIES + 1, 503, photo[1012]),
    }
    return {photo_id: special.get(photo_id) or httpserver.image(data) for photo_id, data in photo.items()}


@pytest.fixture
def server():
    with PhotoServer() as server:
        yield server


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATA_DIR = tmp_path / "data"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def fast(settings) -> None:
    """Short timeouts and backoff so the misbehaving routes cost well under a second each."""
    settings.DOWNLOAD_CONNECT_TIMEOUT = 2.0
    settings.DOWNLOAD_READ_TIMEOUT = READ_TIMEOUT
    settings.DOWNLOAD_TOTAL_TIMEOUT = 5.0
    settings.DOWNLOAD_RETRIES = RETRIES
    settings.DOWNLOAD_BACKOFF_BASE = 0.01
    settings.DOWNLOAD_BACKOFF_MAX = 0.1  # also caps the 429's Retry-After: 1
    settings.DOWNLOAD_WORKERS = 4
    settings.DOWNLOAD_PER_HOST = 4
    settings.IMAGE_MAX_PIXELS = MAX_PIXELS


@pytest.fixture
def delayed(monkeypatch, server: PhotoServer) -> dict[str, list[list[int]]]:
    """Records the indexing tasks seeding would send, and logs them among the server's requests."""
    calls: dict[str, list[list[int]]] = {"index_products": [], "index_street_photos": []}

    def recorder(name: str):
        def send(ids) -> None:
            calls[name].append(list(ids))
            with server.lock:
                server.log.append(f"{name} {list(ids)}")

        return send

    for name in calls:
        monkeypatch.setattr(enqueue, name, recorder(name))
    return calls


@pytest.fixture
def root(tmp_path: Path, server: PhotoServer) -> Path:
    root = make_dataset(tmp_path / "s2s", train=TRAIN, test=TEST, retrieval=RETRIEVAL, photos={})
    meta = root / "meta" / "json"
    # A skirt with the same product id: its photos are listed but must never be fetched for dresses.
    (meta / "train_pairs_skirts.json").write_text(json.dumps([box(3002, 10, 0, 0, 50, 50)]))
    (meta / "test_pairs_skirts.json").write_text("[]")
    (meta / "retrieval_skirts.json").write_text(json.dumps([{"photo": 3001, "product": 10}]))
    lines = []
    for photo_id, route in sorted(routes(server).items()):
        url = server.add(path(photo_id), route)
        if photo_id != NOT_LISTED:
            lines.append(f"{photo_id:09d},{url}?v=1,2")  # a comma inside the URL, as in the real file
    (root / "photos.txt").write_text("\n".join(lines) + "\n")
    return root


def run(root: Path, *args: str, **options) -> str:
    out = io.StringIO()
    call_command("seed_street2shop", "--root", str(root), "--download", *args, stdout=out, **options)
    return out.getvalue()


def seeded() -> list[int]:
    return sorted(Product.objects.filter(category="dresses").values_list("s2s_product_id", flat=True))


def recorded() -> dict[int, tuple[str, int | None, int]]:
    return {row.photo_id: (row.outcome, row.http_status, row.attempts) for row in PhotoDownload.objects.all()}


def requested(server: PhotoServer) -> dict[int, int]:
    counts = {photo: server.count(path(photo)) for photo in (*RETRIEVAL_IDS, *STREET_IDS, *SKIRT_PHOTOS)}
    return {photo: count for photo, count in counts.items() if count}


def catalogue() -> tuple[list, list, list]:
    return (
        list(Product.objects.order_by("id").values_list("id", "s2s_product_id", "title")),
        list(ProductImage.objects.order_by("id").values_list("id", "product_id", "s2s_photo_id", "image")),
        list(StreetPhoto.objects.order_by("id").values_list("id", "product_id", "s2s_photo_id", "image")),
    )


# --- one run ----------------------------------------------------------------------------------


def test_it_seeds_exactly_the_products_whose_shop_photos_are_good(db, media, delayed, server, root) -> None:
    run(root)

    assert seeded() == SEEDED
    images = dict(ProductImage.objects.values_list("s2s_photo_id", "product__s2s_product_id"))
    assert images == {1001: 10, 1003: 20, 1008: 50, 1009: 60, 1011: 70}
    street = {(row.s2s_photo_id, row.product.s2s_product_id): row.bbox for row in StreetPhoto.objects.all()}
    assert street == {
        (2001, 10): (10, 20, 100, 150),
        (2001, 60): (90, 100, 60, 80),
        (2002, 20): (0, 0, 50, 50),
        (2003, 20): (150, 250, 50, 50),  # clamped
    }
    assert (media / "products" / "000001003.jpg").read_bytes() == (root / "photos" / "000001003.jpg").read_bytes()


def test_it_records_the_outcome_of_every_photo_it_needed(db, media, delayed, server, root) -> None:
    run(root)

    assert recorded() == OUTCOMES
    row = PhotoDownload.objects.get(photo_id=1003)
    assert row.url == server.url(path(1003)) + "?v=1,2"
    assert row.bytes == len(jpeg(seed=1003))
    assert "pixels" in PhotoDownload.objects.get(photo_id=1007).error


def test_it_requests_each_photo_as_often_as_its_route_needs(db, media, delayed, server, root) -> None:
    run(root)

    assert requested(server) == {photo: attempts for photo, (_, _, attempts) in OUTCOMES.items() if attempts}
    # The redirect chain is followed to its end once.
    assert [server.count(p) for p in ("/hop/2/2003", "/hop/1/2003", "/img/2003")] == [1, 1, 1]


def test_it_fetches_only_the_photos_the_category_and_good_products_need(db, media, delayed, server, root) -> None:
    run(root)

    never = {3001, 3002, 2004, 2006}  # skirts; street photo of a product without shop photo; empty box
    assert not never & set(requested(server))


def test_it_leaves_only_whole_good_photos_in_the_folder(db, media, delayed, server, root) -> None:
    run(root)

    names = {p.name for p in (root / "photos").iterdir()}
    assert names == {photo_filename(photo) for photo in GOOD} | {LOCK_NAME}


def test_it_uses_photos_already_in_the_folder(db, media, delayed, server, root) -> None:
    # As after unpacking the dataset's photos.tar into photos/.
    for photo in (1001, 2001):
        (root / "photos" / photo_filename(photo)).write_bytes(jpeg(seed=photo))

    run(root)

    assert server.count(path(1001)) == server.count(path(2001)) == 0
    assert 1001 not in recorded()
    assert StreetPhoto.objects.filter(s2s_photo_id=2001).count() == 2
    assert seeded() == SEEDED


def test_it_reads_only_the_header_of_photos_it_has_just_validated(
    db, media, delayed, server, tmp_path, monkeypatch
) -> None:
    # Stored sideways (300×200) with EXIF orientation 6. Street2Shop's boxes are on the stored grid
    # (the annotators' browsers ignored EXIF), so this box fits the stored 300×200 photo as it is.
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 200), (90, 30, 160)).save(buffer, format="JPEG", exif=exif.tobytes())
    rotated = buffer.getvalue()
    root = make_dataset(
        tmp_path / "rotated", train=[box(2001, 10, 250, 150, 40, 40)], test=[], retrieval={10: [1001]}, photos={}
    )
    urls = [
        server.add("/r/1001.jpg", httpserver.image(jpeg(seed=1))),
        server.add("/r/2001.jpg", httpserver.image(rotated)),
    ]
    (root / "photos.txt").write_text(f"1001,{urls[0]}\n2001,{urls[1]}\n")
    decoded = []
    real_open_image = street2shop_dataset.open_image
    monkeypatch.setattr(
        street2shop_dataset, "open_image", lambda *a, **k: decoded.append(a) or real_open_image(*a, **k)
    )

    download_and_seed(root=root, category="dresses")

    assert StreetPhoto.objects.get().bbox == (250, 150, 40, 40)
    assert decoded == []  # the downloader decoded both already
    stored = street2shop_dataset._stored_size(root / "photos" / "000002001.jpg")
    assert stored == real_open_image(rotated, upright=False).size == (300, 200)
    assert real_open_image(rotated).size == (200, 300)  # what a shopper's browser shows


def test_it_seeds_a_product_from_its_first_good_shop_photo(
    transactional_db, media, delayed, server, tmp_path, settings, monkeypatch
) -> None:
    # 1002 answers only once product 10 has been queued for indexing (or after 4 s): a run that
    # waited for all of a product's photos before seeding it would hold 1002 for the whole 4 s.
    monkeypatch.setattr(download_pipeline, "INDEX_CHUNK", 1)
    settings.DOWNLOAD_READ_TIMEOUT = 10.0
    settings.DOWNLOAD_TOTAL_TIMEOUT = 20.0
    indexed = threading.Event()
    released: list[bool] = []

    def gated(handler, seen: int) -> None:
        released.append(indexed.wait(4.0))
        httpserver.send(handler, 200, jpeg(seed=1002))

    record = enqueue.index_products
    monkeypatch.setattr(enqueue, "index_products", lambda ids: (record(ids), indexed.set()))
    root = make_dataset(
        tmp_path / "first", train=[box(2001, 10, 0, 0, 50, 50)], test=[], retrieval={10: [1001, 1002]}, photos={}
    )
    urls = {
        1001: server.add("/f/1001.jpg", httpserver.image(jpeg(seed=1001))),
        1002: server.add("/f/1002.jpg", gated),
        2001: server.add("/f/2001.jpg", httpserver.image(jpeg(seed=2001))),
    }
    (root / "photos.txt").write_text("".join(f"{photo},{url}\n" for photo, url in urls.items()))

    report = download_and_seed(root=root, category="dresses")

    assert released == [True]
    product = Product.objects.get(s2s_product_id=10)
    # The later shop photo and the street photo are attached to the product made from the first.
    assert sorted(product.images.values_list("s2s_photo_id", flat=True)) == [1001, 1002]
    assert list(product.street_photos.values_list("s2s_photo_id", flat=True)) == [2001]
    assert (report.seed.products_created, report.seed.products_existing) == (1, 0)
    assert (report.seed.shop_photos_created, report.seed.street_photos_created) == (2, 1)
    # Indexed again once it had its second photo.
    assert delayed["index_products"] == [[product.pk], [product.pk]]
    assert delayed["index_street_photos"] == [[product.street_photos.get().pk]]


def test_it_fetches_shop_photos_in_catalogue_order_before_street_photos(
    db, media, delayed, server, tmp_path, settings
) -> None:
    settings.DOWNLOAD_WORKERS = settings.DOWNLOAD_PER_HOST = 1
    retrieval = {pid: [1000 + pid] for pid in (1, 2, 3, 4)}
    train = [box(2000 + pid * 10 + n, pid, 0, 0, 40, 40) for pid in (1, 2, 3) for n in (1, 2)]
    root = make_dataset(tmp_path / "order", train=train, test=[], retrieval=retrieval, photos={})
    photo_ids = [*(1000 + pid for pid in retrieval), *(entry["photo"] for entry in train)]
    lines = [f"{photo},{server.add(f'/o/{photo}.jpg', httpserver.image(jpeg(seed=photo)))}" for photo in photo_ids]
    (root / "photos.txt").write_text("\n".join(lines) + "\n")

    report = download_and_seed(root=root, category="dresses")

    # Products with street photos first (1, 2, 3), then 4; every street photo after every shop photo.
    assert server.log == [f"/o/{photo}.jpg" for photo in (1001, 1002, 1003, 1004, 2011, 2012, 2021, 2022, 2031, 2032)]
    assert report.seed.products_created == 4 and report.seed.street_photos_created == 6


def test_it_reports_a_shop_photo_that_is_also_a_street_photo_once(db, media, delayed, server, tmp_path) -> None:
    # 1001 is product 10's shop photo and carries a box for it, plus an empty box.
    root = make_dataset(
        tmp_path / "both",
        train=[box(1001, 10, 0, 0, 50, 50), box(1001, 10, 5, 5, 0, 9)],
        test=[],
        retrieval={10: [1001]},
        photos={},
    )
    (root / "photos.txt").write_text(f"1001,{server.add('/b/1001.jpg', httpserver.image(jpeg(seed=1)))}\n")

    report = download_and_seed(root=root, category="dresses").seed

    assert (report.shop_photos_created, report.street_photos_created) == (1, 1)
    assert (report.shop_photos_existing, report.street_photos_existing) == (0, 0)
    assert (report.bad_bbox, report.extra_box) == (1, 0)
    assert report.queued_product_ids == [Product.objects.get().pk]


def test_it_reports_a_product_queued_again_when_a_later_run_attaches_a_photo(
    db, media, delayed, server, tmp_path
) -> None:
    root = make_dataset(tmp_path / "again", train=[], test=[], retrieval={10: [1001, 1002]}, photos={})
    urls = [
        server.add("/a/1001.jpg", httpserver.image(jpeg(seed=1))),
        server.add("/a/1002.jpg", httpserver.fails_first(1, 404, jpeg(seed=2))),
    ]
    (root / "photos.txt").write_text(f"1001,{urls[0]}\n1002,{urls[1]}\n")
    download_and_seed(root=root, category="dresses")

    report = download_and_seed(root=root, category="dresses", retry_failed=True).seed

    product = Product.objects.get()
    assert product.images.count() == 2
    assert (report.products_created, report.products_existing, report.shop_photos_created) == (0, 1, 1)
    assert report.queued_product_ids == [product.pk]


# --- reruns -----------------------------------------------------------------------------------


def test_a_second_run_makes_no_request_and_changes_nothing(db, media, delayed, server, root) -> None:
    run(root)
    before, requests, outcomes = catalogue(), server.total(), recorded()

    text = run(root)

    assert server.total() == requests
    assert catalogue() == before
    assert recorded() == outcomes
    assert "failed before, not requested again" in text


def test_retry_failed_requests_only_the_failures_again(db, media, delayed, server, root) -> None:
    run(root)
    first = requested(server)

    run(root, "--retry-failed")

    again = {photo: count - first.get(photo, 0) for photo, count in requested(server).items()}
    failed = {photo for photo, (outcome, _, _) in OUTCOMES.items() if outcome not in ("ok", "not_listed")}
    assert {photo for photo, extra in again.items() if extra} == failed
    # 80's server has recovered: its photo is stored and the product created.
    assert recorded()[1012] == ("ok", 200, 1)
    assert seeded() == [*SEEDED, 80]


def test_an_interrupted_run_keeps_what_finished_and_resumes(db, media, delayed, server, root) -> None:
    class Interrupting(io.StringIO):
        def write(self, text: str) -> int:
            raise KeyboardInterrupt

    # The progress line is written from the calling thread after the first finished photo.
    with pytest.raises(KeyboardInterrupt):
        download_and_seed(root=root, category="dresses", progress=Interrupting())

    kept = recorded()
    assert len(kept) >= 1
    assert not [p.name for p in (root / "photos").iterdir() if ".part-" in p.name]
    requests = server.total()

    run(root)

    assert seeded() == SEEDED
    failed = {photo for photo, (outcome, _, _) in OUTCOMES.items() if outcome != "ok"}
    assert {photo for photo, (outcome, _, _) in recorded().items() if outcome != "ok"} == failed
    # Nothing that finished before the interrupt was requested again.
    assert sum(server.count(path(photo)) for photo in kept) == sum(OUTCOMES[photo][2] for photo in kept)
    assert server.total() > requests


# --- limits, chunks and indexing ----------------------------------------------------------------


def test_it_goes_on_until_the_limit_counts_good_products(db, media, delayed, server, root) -> None:
    text = run(root, "--limit", "3")

    # 30 fails, so the third product is 50; nothing after 50 is requested.
    assert seeded() == [10, 20, 50]
    assert not {1009, 1006, 1007, 1011, 1012} & set(requested(server))
    assert "products 3/3" in text

    requests = server.total()
    run(root, "--limit", "3")
    assert server.total() == requests

    run(root, "--limit", "4")
    assert seeded() == [10, 20, 50, 60]


def test_it_queues_products_for_indexing_while_later_ones_download(
    transactional_db, media, delayed, server, root, monkeypatch
) -> None:
    monkeypatch.setattr(download_pipeline, "INDEX_CHUNK", 1)

    download_and_seed(root=root, category="dresses", window=2)

    ids = dict(Product.objects.values_list("s2s_product_id", "id"))
    log = server.log
    # Two products at a time, in seeding order: 70 starts only after five others are done.
    assert log.index(f"index_products {[ids[10]]}") < log.index(path(1011))
    assert sorted(i for batch in delayed["index_products"] for i in batch) == sorted(ids.values())
    assert StreetPhoto.objects.count() == sum(map(len, delayed["index_street_photos"]))


def test_seed_street2shop_seeds_only_the_products_asked_for(db, media, delayed, tmp_path) -> None:
    root = make_dataset(
        tmp_path / "present",
        train=seeding_test.TRAIN,
        test=seeding_test.TEST,
        retrieval=seeding_test.RETRIEVAL,
        photos=seeding_test.photos(),
    )

    report = seed_street2shop(root=root, category="dresses", product_ids=[30, 50, 10])

    assert seeded() == [10, 30]
    # 50's only shop photo is missing: asked for by id, it is reported rather than left out.
    assert report.skipped_products == [(50, "no_shop_photo")]
    assert report.candidates == 3
    with pytest.raises(SeedingError, match="not in the dresses metadata"):
        seed_street2shop(root=root, category="dresses", product_ids=[999])


# --- the command's report -------------------------------------------------------------------------


def test_the_command_prints_a_summary_table(db, media, delayed, server, root) -> None:
    text = run(root, "--workers", "2")

    def count(label: str) -> int:
        [line] = [line for line in text.splitlines() if line.strip().startswith(label)]
        return int(line.split()[-1].replace(",", ""))

    assert count("photos needed by 8 products") == len(OUTCOMES)
    assert count("downloaded") == len(GOOD)
    assert (count("failed: http error"), count("failed: timeout"), count("failed: not an image")) == (2, 1, 2)
    assert (count("failed: truncated"), count("failed: too large"), count("not in photos.txt")) == (1, 1, 1)
    assert count("requests made") == sum(attempts for _, _, attempts in OUTCOMES.values())
    assert count("products created") == 5
    assert count("skipped: bad bbox") == 2
    assert "photos/s with 2 workers" in text


def test_the_command_writes_the_failures_to_csv(db, media, delayed, server, root, settings) -> None:
    text = run(root)

    default = Path(settings.DATA_DIR) / "street2shop" / "failures-dresses.csv"
    assert f"10 photos that could not be used are listed in {default}" in text
    with open(default, newline="", encoding="utf-8") as handle:
        rows = {(int(row["photo_id"]), row["outcome"]): row for row in csv.DictReader(handle)}
    failed = {(photo, outcome) for photo, (outcome, _, _) in OUTCOMES.items() if outcome != "ok"}
    assert set(rows) == failed | {(2006, "bad_bbox"), (2007, "bad_bbox")}
    assert rows[(1002, "http_error")]["http_status"] == "404"
    assert rows[(1002, "http_error")]["product_ids"] == "20"
    assert rows[(2007, "bad_bbox")]["kind"] == "street"
    assert "outside" in rows[(2007, "bad_bbox")]["error"]

    elsewhere = media.parent / "failures.csv"
    run(root, "--failures-csv", str(elsewhere))
    with open(elsewhere, newline="", encoding="utf-8") as handle:
        again = list(csv.DictReader(handle))
    # Failures of earlier runs stay listed, marked as such.
    assert {row["earlier_run"] for row in again if row["outcome"] not in ("bad_bbox", "not_listed")} == {"yes"}


def test_the_command_prints_only_the_summary_when_quiet(db, media, delayed, server, root) -> None:
    text = run(root, "--quiet")

    assert "\r" not in text
    assert sum("photos/s  ETA" in line for line in text.splitlines()) == 1  # the final progress line


def test_the_command_refuses_download_options_without_download(db, media, root) -> None:
    with pytest.raises(CommandError, match="only apply with --download"):
        call_command("seed_street2shop", "--root", str(root), "--retry-failed", stdout=io.StringIO())


def test_the_command_fails_clearly_without_photos_txt(db, media, root) -> None:
    (root / "photos.txt").unlink()

    with pytest.raises(CommandError, match="photos.txt"):
        run(root)


def test_the_admin_lists_downloads_by_outcome_read_only(db, admin_client) -> None:
    PhotoDownload.objects.create(
        photo_id=1002, url="http://shop.example/1002.jpg", outcome="http_error", http_status=404
    )
    PhotoDownload.objects.create(photo_id=2005, url="http://shop.example/2005.jpg", outcome="timeout")

    page = admin_client.get("/admin/shop/photodownload/", {"outcome__exact": "timeout"})

    assert page.status_code == 200
    assert b"2005" in page.content and b"1002" not in page.content
    assert admin_client.get("/admin/shop/photodownload/add/").status_code == 403
    change = admin_client.get(f"/admin/shop/photodownload/{PhotoDownload.objects.get(photo_id=1002).pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content
