"""Uploads a hostile client cannot turn against the shop: rate, size, pixels, privacy, deadlines, settings."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client, RequestFactory
from django.test.client import ClientHandler
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from shop.models import SearchQuery
from shop.services import search as search_service
from tests.factories import image_bytes, jpeg_bytes

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    cache.clear()
    yield
    cache.clear()


def _upload(data: bytes | None = None, name: str = "photo.jpg") -> io.BytesIO:
    upload = io.BytesIO(data if data is not None else jpeg_bytes(size=(120, 160)))
    upload.name = name
    return upload


def _search_files() -> list[Path]:
    root = Path(settings.SEARCH_UPLOAD_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- rate and queue bounds -----------------------------------------------------------------------


def test_it_answers_429_with_retry_after_past_the_rate_limit(client, settings, django_capture_on_commit_callbacks):
    settings.SEARCH_RATE_LIMIT = "3/m"
    before = set(_search_files())
    with django_capture_on_commit_callbacks() as queued:
        codes = [client.post(reverse("search"), {"image": _upload()}).status_code for _ in range(6)]

    assert codes == [302, 302, 302, 429, 429, 429]
    assert SearchQuery.objects.count() == 3 and len(queued) == 3 and len(set(_search_files()) - before) == 3
    refused = client.post(reverse("search"), {"image": _upload()})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many searches" in refused.content.decode() and "Back to search" in refused.content.decode()


def test_it_counts_each_client_address_on_its_own(settings, django_capture_on_commit_callbacks):
    settings.SEARCH_RATE_LIMIT = "1/m"
    first, second = Client(REMOTE_ADDR="127.0.0.2"), Client(REMOTE_ADDR="127.0.0.3")
    with django_capture_on_commit_callbacks():
        assert first.post(reverse("search"), {"image": _upload()}).status_code == 302
        assert first.post(reverse("search"), {"image": _upload()}).status_code == 429
        assert second.post(reverse("search"), {"image": _upload()}).status_code == 302


def test_it_counts_the_last_forwarded_hop_behind_a_proxy(settings, django_capture_on_commit_callbacks):
    settings.SEARCH_RATE_LIMIT = "1/m"
    settings.SEARCH_RATE_LIMIT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    client = Client(REMOTE_ADDR="127.0.0.1")
    with django_capture_on_commit_callbacks():
        # A client cannot escape the limit by inventing earlier hops: the proxy's hop counts.
        assert (
            client.post(reverse("search"), {"image": _upload()}, HTTP_X_FORWARDED_FOR="1.2.3.4, 127.0.0.9").status_code
            == 302
        )
        assert (
            client.post(reverse("search"), {"image": _upload()}, HTTP_X_FORWARDED_FOR="5.6.7.8, 127.0.0.9").status_code
            == 429
        )


def test_it_says_busy_past_the_pending_bound_without_storing_anything(client, settings):
    settings.SEARCH_MAX_PENDING = 2
    for _ in range(2):
        SearchQuery.objects.create(image="x.jpg")
    before = set(_search_files())
    response = client.post(reverse("search"), {"image": _upload()})

    assert response.status_code == 503 and response["Retry-After"] == "10"
    assert "The shop is busy" in response.content.decode()
    assert SearchQuery.objects.count() == 2 and set(_search_files()) == before


def test_it_does_not_count_overdue_searches_as_pending(settings):
    settings.SEARCH_MAX_PENDING = 1
    old = SearchQuery.objects.create(image="x.jpg")
    SearchQuery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    search_service.check_capacity()  # no SearchBusy


# --- body size and decoding in the web process --------------------------------------------------


class _Endless(io.RawIOBase):
    """A request body that never ends and counts what the server read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer)
        buffer[:size] = b"a" * size
        self.read_bytes += size
        return size


def test_it_refuses_a_1_gb_body_without_reading_it():
    body = _Endless()
    token = _get_new_csrf_string()
    environ = RequestFactory()._base_environ(
        PATH_INFO="/search/",
        REQUEST_METHOD="POST",
        CONTENT_TYPE="multipart/form-data; boundary=XYZ",
        CONTENT_LENGTH=str(1 << 30),
        **{"wsgi.input": io.BufferedReader(body)},
        # A valid CSRF pair, so the refusal comes from the size and not from a missing token.
        HTTP_COOKIE=f"csrftoken={token}",
        HTTP_X_CSRFTOKEN=token,
    )
    # The test client's handler: the whole middleware stack, as a server would call it.
    response = ClientHandler(enforce_csrf_checks=True)(environ)

    assert response.status_code == 413
    assert "Photo too large" in response.content.decode()
    # Nothing past the cap (and the multipart overhead) was read; in fact nothing at all here.
    assert body.read_bytes <= settings.UPLOAD_MAX_BYTES + 64 * 1024


def test_it_refuses_a_body_over_the_cap_that_states_a_smaller_length(client, settings):
    settings.UPLOAD_MAX_BYTES = 50_000
    response = client.post(reverse("search"), {"image": _upload(os.urandom(200_000))})
    assert response.status_code == 413 and SearchQuery.objects.count() == 0


def test_it_validates_an_upload_from_its_header_without_decoding_a_pixel(
    client, monkeypatch, django_capture_on_commit_callbacks
):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the web process decoded pixels")

    phone_photo = _upload(jpeg_bytes(size=(4000, 3000), quality=70))
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("search"), {"image": phone_photo})
    assert response.status_code == 302  # a 12 MP phone photo is welcome


def test_it_refuses_an_upload_over_the_phone_pixel_cap_from_its_header(client):
    # 6400 × 6250 = 40 MP: fine for the dataset cap, far over the uploads' 16 MP.
    buffer = io.BytesIO()
    Image.new("L", (6400, 6250)).save(buffer, "PNG")
    response = client.post(reverse("search"), {"image": _upload(buffer.getvalue(), "big.png")})
    assert response.status_code == 400
    assert "too large (6400×6250 pixels)" in response.content.decode()


# --- private photos -------------------------------------------------------------------------------


def _exif_jpeg(size=(120, 80)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned a quarter
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 1.0), 3: "E", 4: (4.0, 53.0, 2.0)}  # GPS position
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buffer, "JPEG", exif=exif, comment=b"shot at home")
    return buffer.getvalue()


def _stored_query(data: bytes, **fields) -> SearchQuery:
    query = SearchQuery(**fields)
    query.image.save(f"{query.pk}-upload.jpg", ContentFile(data), save=True)
    return query


def test_it_keeps_only_a_clean_upright_copy_of_a_searched_photo():
    query = _stored_query(_exif_jpeg(), width=80, height=120, bbox_left=10, bbox_top=20, bbox_width=40, bbox_height=60)
    original = Path(query.image.path)

    image, bbox = search_service._clean_copy(query)

    query.refresh_from_db()
    assert query.photo_ready and query.image.name.endswith(f"{query.pk}.jpg")
    assert query.image.name.count("/") == 3  # one day's folder, YYYY/MM/DD/
    assert not original.exists()  # the bytes as sent are gone
    with Image.open(query.image.path) as clean:
        assert clean.size == (80, 120)  # upright: orientation 6 applied
        assert not clean.getexif() and not {"exif", "comment", "icc_profile", "xmp"} & set(clean.info)
    assert image.size == (80, 120) and bbox == (10, 20, 40, 60)


def test_it_scales_the_box_to_a_photo_decoded_at_a_fraction_of_its_size():
    query = _stored_query(
        jpeg_bytes(size=(4000, 3000)),
        width=4000,
        height=3000,
        bbox_left=1000,
        bbox_top=600,
        bbox_width=2000,
        bbox_height=1800,
    )
    image, bbox = search_service._clean_copy(query)
    scale = image.width / 4000
    assert image.width < 4000  # draft decoding
    assert bbox == (int(1000 * scale), int(600 * scale), round(2000 * scale), round(1800 * scale))


def test_it_shows_a_search_photo_only_to_the_browser_that_searched(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        client.post(reverse("search"), {"image": _upload(_exif_jpeg())})
    query = SearchQuery.objects.get()
    url = reverse("search-photo", args=[query.pk])
    assert client.get(url).status_code == 404  # the original is never served
    search_service._clean_copy(query)

    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert "private" in response["Cache-Control"]
    assert b"GPS" not in b"".join(response.streaming_content)
    stranger = Client()
    assert stranger.get(url).status_code == 404
    assert url not in stranger.get(reverse("search-results", args=[query.pk])).content.decode()
    assert url in client.get(reverse("search-results", args=[query.pk])).content.decode()


def test_it_purges_old_searches_and_their_files_and_keeps_new_ones():
    old = _stored_query(jpeg_bytes(), photo_ready=True)
    new = _stored_query(jpeg_bytes())
    SearchQuery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    orphan = Path(settings.SEARCH_UPLOAD_ROOT) / "2020" / "01" / "01" / "left-behind.jpg"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(jpeg_bytes())
    stale = time.time() - 26 * 3600
    os.utime(orphan, (stale, stale))
    old_file = Path(old.image.path)

    assert search_service.purge_searches() == 1

    assert list(SearchQuery.objects.values_list("pk", flat=True)) == [new.pk]
    assert not old_file.exists() and not orphan.exists() and Path(new.image.path).exists()


# --- searches that always end -----------------------------------------------------------------------


def test_it_ends_a_search_pending_past_the_deadline(client, settings):
    settings.SEARCH_TIMEOUT_SECONDS = 60
    query = SearchQuery.objects.create(image="lost.jpg")
    SearchQuery.objects.filter(pk=query.pk).update(created_at=timezone.now() - timedelta(seconds=61))

    response = client.get(reverse("search-wait", args=[query.pk]), {"include": "page"})

    assert response.json()["status"] == "failed"
    page = client.get(reverse("search-results", args=[query.pk])).content.decode()
    assert search_service.OVERDUE in page and "Try again" in page
    assert "results.js" not in page and 'http-equiv="refresh"' not in page  # nothing refreshes any more


def test_it_waits_no_longer_than_the_deadline(client, settings):
    settings.SEARCH_WAIT_SECONDS = 30
    settings.SEARCH_TIMEOUT_SECONDS = 60
    query = SearchQuery.objects.create(image="slow.jpg")
    SearchQuery.objects.filter(pk=query.pk).update(created_at=timezone.now() - timedelta(seconds=59))
    started = time.monotonic()
    assert client.get(reverse("search-wait", args=[query.pk])).json()["status"] == "failed"
    assert time.monotonic() - started < 10  # ended at the deadline, not after the 30 s wait


def test_it_fails_a_search_delivered_again_after_its_worker_died():
    query = _stored_query(jpeg_bytes(), started_at=timezone.now())
    search_service.run_search_query(query_id=query.pk)
    query.refresh_from_db()
    assert query.status == "failed" and query.error == search_service.WORKER_DIED
    assert not Path(query.image.path).exists()


def test_it_never_overwrites_an_ended_search_with_late_results():
    query = SearchQuery.objects.create(image="late.jpg", status="failed", error=search_service.OVERDUE)
    search_service._finish(query, status="done", results=[{"product_id": 1, "distance": 0.1}])
    query.refresh_from_db()
    assert query.status == "failed" and query.results == []


def test_it_shows_shoppers_no_server_paths(settings):
    query = _stored_query(jpeg_bytes())
    Path(query.image.path).unlink()  # the file vanished: an OSError naming the path
    search_service.run_search_query(query_id=query.pk)
    query.refresh_from_db()
    assert query.status == "failed" and query.error == search_service.UNREADABLE
    assert str(settings.SEARCH_UPLOAD_ROOT) not in query.error


@pytest.mark.parametrize(
    "raised, shown",
    [
        (KeyError("/srv/shop/var/models/v3/tower.keras"), "Search failed unexpectedly."),
        (FileNotFoundError("/srv/shop/var/models/v3/tower.keras"), search_service.UNAVAILABLE),
    ],
)
def test_it_shows_shoppers_no_exception_text(monkeypatch, raised, shown):
    query = _stored_query(jpeg_bytes())

    def broken(**kwargs):
        raise raised

    monkeypatch.setattr("shop.selectors.active_version", broken)
    with contextlib.suppress(KeyError):  # unexpected errors still reach the worker's log and Celery
        search_service.run_search_query(query_id=query.pk)
    query.refresh_from_db()
    assert query.status == "failed" and query.error == shown and "/srv" not in query.error


# --- production settings ---------------------------------------------------------------------------------


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "shop.settings",
            "DATA_DIR": str(settings.TEST_RUN_DIR / "prod"),
            **env,
        },
    )


def test_it_passes_the_deploy_check_with_only_debug_key_and_hosts_set():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="Vw3v-u0xk1rK6uTZ8kq3p9Qh2mWcYt5LrJb7NdEa4sFg0HiXo_Pz",
        ALLOWED_HOSTS="shop.example",
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_stops_with_one_line_when_production_lacks_a_secret_key():
    result = _manage("check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SECRET_KEY is not set")


def test_it_runs_with_debug_off_and_secure_defaults_when_nothing_says_otherwise():
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SERVE_MEDIA, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "shop.settings",
            "SECRET_KEY": "x" * 60,
            "DATA_DIR": str(settings.TEST_RUN_DIR / "prod"),
        },
        timeout=120,
    )
    assert result.stdout.split() == ["False", "False", "True", "True", "True"], result.stderr


def test_it_sends_a_content_security_policy_without_inline_code(client):
    response = client.get(reverse("search"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    content = response.content.decode()
    assert "<script>" not in content and "<style>" not in content and " style=" not in content


def test_it_serves_its_scripts_and_styles_as_static_files(client):
    for name in ("shop/shop.css", "shop/search.js", "shop/results.js", "shop/admin.js", "shop/admin.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name


@pytest.mark.parametrize("kind", ["html", "gif"])
def test_it_names_what_is_wrong_with_a_file_that_is_no_photo(client, kind):
    data = b"<!doctype html><title>x</title>" if kind == "html" else image_bytes("GIF")
    response = client.post(reverse("search"), {"image": _upload(data, f"photo.{kind}")})
    assert response.status_code == 400  # never a 500 from a second, unrestricted open


# --- the admin ----------------------------------------------------------------------------------------


def test_it_needs_its_own_permission_to_override_the_gate(client):
    from django.contrib.auth.models import Permission, User

    from tests.factories import make_version

    refused = make_version(metrics={"gate": {"passed": False, "reason": "below the baseline"}})
    staff = User.objects.create_user("activator", password="x", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["activate_version", "view_modelversion"]))
    client.force_login(staff)
    page = client.get(reverse("admin:shop_modelversion_change", args=[refused.pk])).content.decode()
    assert 'id="activate-override"' not in page

    response = client.post(reverse("admin:shop_modelversion_activate", args=[refused.pk]), {"override": "1"})
    assert response.status_code == 403
    refused.refresh_from_db()
    assert refused.status == "ready" and not refused.gate_overridden

    staff.user_permissions.add(Permission.objects.get(codename="override_gate"))
    client.force_login(User.objects.get(pk=staff.pk))
    page = client.get(reverse("admin:shop_modelversion_change", args=[refused.pk])).content.decode()
    assert 'id="activate-override"' in page and "data-confirm=" in page and "onclick" not in page


@pytest.mark.parametrize("kind", ["gif", "too-many-pixels"])
def test_it_checks_admin_photo_uploads_like_shoppers_uploads(admin_client, settings, kind):
    from shop.models import ProductImage
    from tests.factories import make_product

    product = make_product()
    settings.IMAGE_MAX_PIXELS = 100 * 100
    data = image_bytes("GIF") if kind == "gif" else image_bytes("PNG", size=(200, 200))
    before = ProductImage.objects.count()
    response = admin_client.post(
        reverse("admin:shop_productimage_add"),
        {
            "product": product.pk,
            "position": 1,
            "image": _upload(data, f"photo.{'gif' if kind == 'gif' else 'png'}"),
        },
    )
    assert response.status_code == 200  # the form again, with the error
    message = "not supported" if kind == "gif" else "too large"
    assert message in response.content.decode()
    assert ProductImage.objects.count() == before


# --- per-process caches ----------------------------------------------------------------------------


def test_it_keeps_only_the_most_recently_used_towers(monkeypatch):
    from shop import runtime

    monkeypatch.setattr("similarity.siamese.load_tower", lambda path, expected_sha256=None: object())
    monkeypatch.setattr("similarity.artifacts.fetch", lambda store, name, sha256, cache_dir: Path(name))
    monkeypatch.setattr(runtime, "_towers", {})
    towers = [runtime.get_tower(version_id=v, artifact_name=f"m/{v}", checksum="c") for v in (1, 2, 3)]
    assert runtime.get_tower(version_id=1, artifact_name="m/1", checksum="c") is towers[0]  # 1 used again
    runtime.get_tower(version_id=4, artifact_name="m/4", checksum="c")
    assert sorted(v for v, _ in runtime._towers) == [1, 3, 4]  # 2 was the least recently used


def test_it_keeps_only_the_most_recently_used_indexes(monkeypatch):
    from shop.services import embedding_index
    from tests.factories import make_embedding, make_product, make_version

    product = make_product()
    versions = [make_version() for _ in range(4)]
    for version in versions:
        make_embedding(product, version)
    monkeypatch.setattr(embedding_index, "_indexes", {})
    for version in versions:
        assert embedding_index.version_index(version.pk) is not None
    assert sorted(embedding_index._indexes) == [v.pk for v in versions[1:]]


def test_it_deletes_a_deleted_versions_model_file_once_committed(
    admin_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    from tests.factories import make_version

    store = tmp_path / "store"
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": store}},
    }
    kept_file = tmp_path / "elsewhere.keras"
    kept_file.write_bytes(b"not ours")
    files = []
    for name in ("v1.keras", "v2.keras"):
        path = store / "siamese" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"tower")
        files.append(path)
    doomed = make_version(artifact_name="siamese/v1.keras")
    outside = make_version(artifact_name=str(kept_file))  # a path from before the store: never deleted
    make_version(artifact_name="siamese/v2.keras")
    shared = make_version(artifact_name="siamese/v2.keras")  # two rows, one file: the file stays

    with django_capture_on_commit_callbacks(execute=True):
        for version in (doomed, outside, shared):
            response = admin_client.post(reverse("admin:shop_modelversion_delete", args=[version.pk]), {"post": "yes"})
            assert response.status_code == 302

    assert not files[0].exists() and files[1].exists() and kept_file.exists()


def test_it_deletes_an_upload_that_could_not_be_read_at_once():
    query = _stored_query(b"<!doctype html><title>not a photo</title>")
    search_service.run_search_query(query_id=query.pk)
    query.refresh_from_db()
    assert query.status == "failed" and "web page" in query.error
    assert not Path(query.image.path).exists()


def test_it_counts_an_ipv6_clients_whole_network(settings, django_capture_on_commit_callbacks):
    settings.SEARCH_RATE_LIMIT = "1/m"
    one, same_64, other_64 = ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1")
    with django_capture_on_commit_callbacks():
        codes = [
            Client(REMOTE_ADDR=address).post(reverse("search"), {"image": _upload()}).status_code
            for address in (one, same_64, other_64)
        ]
    assert codes == [302, 429, 302]  # one client usually holds a whole /64


def test_it_runs_the_periodic_jobs_on_the_search_queue():
    from workers.celery import app
    from workers.tasks import end_overdue_searches, purge_searches

    for task in (end_overdue_searches, purge_searches):
        assert app.amqp.router.route({}, task.name)["queue"].name == "search"
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {end_overdue_searches.name, purge_searches.name}


def test_it_refuses_a_search_upload_root_that_holds_the_shops_other_files():
    for root in (str(settings.TEST_RUN_DIR / "prod"), str(settings.TEST_RUN_DIR / "prod" / "media" / "s")):
        result = _manage("check", DEBUG="true", SEARCH_UPLOAD_ROOT=root)
        assert result.returncode == 1 and "SEARCH_UPLOAD_ROOT" in result.stderr and "Traceback" not in result.stderr


def test_it_reads_settings_named_on_the_command_line():
    result = _manage("check", "--settings=tests.settings")
    assert result.returncode == 0, result.stderr  # tests.settings sets DEBUG and a key for itself


@pytest.mark.django_db(transaction=True)
def test_it_deletes_the_public_search_photos_of_earlier_versions_when_migrating():
    from django.core.files.storage import default_storage
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        ("shop", "0004_scale_storage_and_search_timing"),
        ("shop", "0005_search_privacy_and_gate_permission"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps.get_model("shop", "SearchQuery")
    name = default_storage.save("searches/2025/01/01/old.jpg", ContentFile(_exif_jpeg()))
    old.objects.create(image=name, status="done")
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([after])
    finally:
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
    assert not default_storage.exists(name) and SearchQuery.objects.count() == 0
