"""The photo downloader against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from shop.street2shop.download import LOCK_NAME, DownloadDirBusy, download_photos
from shop.street2shop.fetch import backoff_delay, check_destination, parse_retry_after
from shop.street2shop.jobs import DownloadConfig, DownloadJob, DownloadResult
from shop.street2shop.metadata import photo_filename
from shop.street2shop.photos_txt import read_photos_txt
from shop.street2shop.reports import FAILURE_COLUMNS, failure_row, write_csv
from tests import httpserver
from tests.httpserver import PhotoServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "street2shop"
MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000


def make_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def make_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


JPEG = make_jpeg()
# A solid 2000×2000 PNG is a few KB on the wire but 4 megapixels once decoded.
BOMB = make_png((2000, 2000))


# Requests held in flight by the /hold/ routes, per (folder, host).
IN_FLIGHT = httpserver.InFlight()


@pytest.fixture(scope="module")
def server() -> Iterator[PhotoServer]:
    """One server for the module: the first part of a path picks its behaviour, a token keeps counts apart."""
    routes = {
        "/img/": httpserver.image(JPEG),
        "/status/403/": httpserver.status(403),
        "/status/404/": httpserver.status(404),
        "/status/410/": httpserver.status(410),
        "/flaky/": httpserver.fails_first(1, 500, JPEG),
        "/unavailable/": httpserver.status(503),
        "/busy/": httpserver.fails_first(1, 429, JPEG, {"Retry-After": "1"}),
        "/slow/": httpserver.slow(2, JPEG),
        "/stall/": httpserver.stall(JPEG, sent=100, seconds=2),
        "/drip/": httpserver.drip(JPEG, chunk=100, chunks=20, delay=0.1),
        "/redirect/": httpserver.countdown(JPEG),
        "/html/": httpserver.html(),
        "/truncated/": httpserver.image(JPEG[: len(JPEG) * 6 // 10]),
        "/empty/": httpserver.image(b""),
        "/bomb/": httpserver.image(BOMB, "image/png"),
        "/big/": httpserver.image(JPEG + bytes(MAX_BYTES)),
        "/big-unsized/": httpserver.unsized(JPEG + bytes(MAX_BYTES)),
        "/short/": httpserver.cut_short(JPEG),
        "/hold/": IN_FLIGHT.hold(0.25, JPEG),
    }
    with PhotoServer() as server:
        for prefix, route in routes.items():
            server.add_prefix(prefix, route)
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def config(sleeps: list[float]) -> DownloadConfig:
    # Tiny backoffs and a fixed "random": retries are quick and their delays can be asserted.
    return DownloadConfig(
        connect_timeout=2.0,
        read_timeout=0.5,
        retries=2,
        backoff_base=0.01,
        backoff_max=5.0,
        max_redirects=5,
        max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS,
        workers=4,
        per_host=4,
        on_backoff=sleeps.append,
        random=lambda: 0.5,
        allowed_hosts=frozenset({"127.0.0.1"}),  # the test servers; the SSRF tests narrow it
    )


def token() -> str:
    return uuid.uuid4().hex


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_one(url: str, dest: Path, config: DownloadConfig, photo_id: int = 7) -> DownloadResult:
    [result] = download_photos([DownloadJob(photo_id, url)], dest, config=config)
    return result


def assert_only_photos(dest: Path, photo_ids: set[int]) -> None:
    """Nothing half-written: the given photos' final files, the lock file, nothing else."""
    names = {path.name for path in dest.iterdir()}
    assert names == {photo_filename(i) for i in photo_ids} | {LOCK_NAME}


# --- successful downloads and resuming ----------------------------------------------------------


def test_it_stores_the_original_bytes_under_the_padded_id(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    path = f"/img/{token()}.jpg"

    result = fetch_one(server.url(path), tmp_path, config, photo_id=42)

    assert (result.outcome, result.http_status, result.attempts, result.bytes) == (
        "ok",
        200,
        1,
        len(JPEG),
    )
    assert (tmp_path / "000000042.jpg").read_bytes() == JPEG
    assert_only_photos(tmp_path, {42})
    assert server.count(path) == 1


def test_it_does_not_fetch_photos_already_on_disk(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    paths = [f"/img/{token()}.jpg" for _ in range(5)]
    jobs = [DownloadJob(i, server.url(path)) for i, path in enumerate(paths, start=1)]

    first = download_photos(jobs, tmp_path, config=config)
    second = download_photos(jobs, tmp_path, config=config)

    assert [r.outcome for r in first] == ["ok"] * 5
    assert [r.outcome for r in second] == ["exists"] * 5
    assert [r.attempts for r in second] == [0] * 5
    assert [server.count(path) for path in paths] == [1] * 5


def test_it_refetches_an_empty_file_under_the_final_name(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    (tmp_path / photo_filename(7)).write_bytes(b"")

    result = fetch_one(server.url(f"/img/{token()}.jpg"), tmp_path, config)

    assert result.outcome == "ok"
    assert (tmp_path / photo_filename(7)).read_bytes() == JPEG


def test_it_trusts_a_non_empty_file_under_the_final_name(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    # Only validated photos are renamed into place, so the check is the cheap one: no decoding.
    (tmp_path / photo_filename(7)).write_bytes(b"<html>not a photo</html>")
    path = f"/img/{token()}.jpg"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.attempts) == ("exists", 0)
    assert server.count(path) == 0


def test_it_sends_a_clear_user_agent(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    path = f"/img/{token()}.jpg"

    fetch_one(server.url(path), tmp_path, config)

    [request] = [request for request in server.received if request.path == path]
    assert request.user_agent.startswith("fashion-similarity/")


def test_it_reuses_one_connection_per_worker(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    group = token()
    jobs = [DownloadJob(i, server.url(f"/img/{group}/{i}.jpg")) for i in range(6)]

    download_photos(jobs, tmp_path, config=replace(config, workers=1))

    assert len({request.client_port for request in server.received if request.path.startswith(f"/img/{group}/")}) == 1


# --- HTTP errors and retries ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410, 403])
def test_it_does_not_retry_client_errors(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float], status: int
) -> None:
    path = f"/status/{status}/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.http_status, result.attempts) == ("http_error", status, 1)
    assert server.count(path) == 1
    assert sleeps == []
    assert_only_photos(tmp_path, set())


def test_it_retries_a_server_error_then_succeeds(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    path = f"/flaky/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.attempts) == ("ok", 2)
    assert server.count(path) == 2
    assert sleeps == [pytest.approx(0.5 * 0.01)]  # full jitter: random() × backoff_base


def test_it_gives_up_on_a_server_that_stays_unavailable(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    path = f"/unavailable/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.http_status, result.attempts) == (
        "http_error",
        503,
        config.retries + 1,
    )
    assert server.count(path) == config.retries + 1
    assert sleeps == [pytest.approx(0.005), pytest.approx(0.01)]  # the ceiling doubles per attempt
    assert_only_photos(tmp_path, set())


def test_it_waits_as_long_as_retry_after_says(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    path = f"/busy/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.attempts) == ("ok", 2)
    assert sleeps == [1.0]
    assert server.count(path) == 2
    [gap] = server.gaps(path)
    assert gap >= 1.0  # the retry really waited, on the server's clock


def test_it_waits_its_backoff_before_retrying(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    path = f"/flaky/{token()}"

    result = fetch_one(server.url(path), tmp_path, replace(config, backoff_base=0.6))

    assert (result.outcome, result.attempts) == ("ok", 2)
    assert sleeps == [pytest.approx(0.3)]  # full jitter: random() × backoff_base
    [gap] = server.gaps(path)
    assert gap >= 0.3


def test_it_caps_retry_after_at_backoff_max(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    path = f"/busy/{token()}"

    result = fetch_one(server.url(path), tmp_path, replace(config, backoff_max=0.25))

    assert result.outcome == "ok"
    assert sleeps == [0.25]
    [gap] = server.gaps(path)
    assert 0.25 <= gap < 0.9  # waited the cap, not the second Retry-After asked for


def test_it_parses_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)

    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_it_backs_off_with_full_jitter_under_a_ceiling() -> None:
    config = DownloadConfig(backoff_base=0.5, backoff_max=30.0, random=lambda: 1.0)

    assert [backoff_delay(n, None, config) for n in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert backoff_delay(1, 3.0, config) == 3.0
    assert backoff_delay(1, 600.0, config) == 30.0


# --- timeouts and connection failures -------------------------------------------------------------


def test_it_times_out_a_server_that_does_not_answer(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    path = f"/slow/{token()}"

    started = time.monotonic()
    result = fetch_one(server.url(path), tmp_path, replace(config, retries=1))

    assert (result.outcome, result.attempts) == ("timeout", 2)
    assert server.count(path) == 2
    assert time.monotonic() - started < 1.9  # two 0.5 s read timeouts, not the server's 2 s
    assert_only_photos(tmp_path, set())


def test_it_times_out_a_body_that_stalls(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    result = fetch_one(server.url(f"/stall/{token()}"), tmp_path, replace(config, retries=0))

    assert (result.outcome, result.http_status) == ("timeout", 200)
    assert_only_photos(tmp_path, set())


def test_it_caps_the_whole_attempt_for_a_dripping_body(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    # Each 100-byte chunk arrives well within read_timeout; only the total cap stops it.
    capped = replace(config, retries=0, total_timeout=0.3)

    started = time.monotonic()
    result = fetch_one(server.url(f"/drip/{token()}"), tmp_path, capped)

    assert result.outcome == "timeout"
    assert time.monotonic() - started < 1.5
    assert_only_photos(tmp_path, set())


def test_it_retries_a_connection_dropped_mid_body(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    path = f"/short/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.attempts) == ("connection_error", config.retries + 1)
    assert server.count(path) == config.retries + 1
    assert_only_photos(tmp_path, set())


def test_it_retries_a_refused_connection(tmp_path: Path, config: DownloadConfig, sleeps: list[float]) -> None:
    result = fetch_one(f"http://127.0.0.1:{closed_port()}/x.jpg", tmp_path, config)

    assert (result.outcome, result.http_status, result.attempts) == (
        "connection_error",
        None,
        config.retries + 1,
    )
    assert len(sleeps) == config.retries
    assert_only_photos(tmp_path, set())


def test_it_skips_the_rest_of_a_host_that_keeps_refusing(tmp_path: Path, config: DownloadConfig) -> None:
    port = closed_port()
    jobs = [DownloadJob(i, f"http://127.0.0.1:{port}/{i}.jpg") for i in range(8)]
    breaker = replace(config, retries=0, workers=1, host_health_window=3)

    results = download_photos(jobs, tmp_path, config=breaker)

    assert [r.outcome for r in results] == ["connection_error"] * 8
    assert [r.attempts for r in results] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert results[3].error == "skipped: 3 of the last 3 requests to 127.0.0.1 failed to connect or timed out"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "not a url",
        "http://",
        "/relative.jpg",
        "http://éxample..com/a.jpg",
    ],
)
def test_it_reports_invalid_urls(tmp_path: Path, config: DownloadConfig, url: str) -> None:
    result = fetch_one(url, tmp_path, config)

    assert result.outcome == "invalid_url"
    assert result.attempts <= 1
    assert_only_photos(tmp_path, set())


# --- redirects ------------------------------------------------------------------------------------


def test_it_follows_a_short_redirect_chain(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    name = token()

    result = fetch_one(server.url(f"/redirect/3/{name}"), tmp_path, config)

    assert (result.outcome, result.attempts) == ("ok", 1)
    assert server.count(f"/redirect/0/{name}") == 1


def test_it_stops_after_too_many_redirects(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, sleeps: list[float]
) -> None:
    name = token()

    result = fetch_one(server.url(f"/redirect/10/{name}"), tmp_path, config)

    assert (result.outcome, result.attempts) == ("too_many_redirects", 1)
    hops_followed = sum(server.count(f"/redirect/{n}/{name}") for n in range(11))
    assert hops_followed == config.max_redirects + 1  # the first request and 5 redirects, no retry
    assert sleeps == []
    assert_only_photos(tmp_path, set())


# --- bodies that are not usable images ----------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "outcome"),
    [
        ("html", "not_an_image"),
        ("empty", "not_an_image"),
        ("truncated", "truncated"),
        ("bomb", "too_large"),
        ("big", "too_large"),
        ("big-unsized", "too_large"),
    ],
)
def test_it_rejects_bodies_that_are_not_usable_images(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig, route: str, outcome: str
) -> None:
    path = f"/{route}/{token()}"

    result = fetch_one(server.url(path), tmp_path, config)

    assert (result.outcome, result.http_status, result.attempts) == (outcome, 200, 1)
    assert server.count(path) == 1
    assert_only_photos(tmp_path, set())


def test_it_rejects_a_pixel_bomb_that_is_small_on_the_wire(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    result = fetch_one(server.url(f"/bomb/{token()}"), tmp_path, config)

    assert result.outcome == "too_large"
    assert result.bytes == len(BOMB) < MAX_BYTES
    assert "pixels" in result.error


def test_it_rejects_an_oversized_body_from_its_content_length(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    result = fetch_one(server.url(f"/big/{token()}"), tmp_path, config)

    assert result.outcome == "too_large"
    assert "Content-Length" in result.error


# --- concurrency, progress, and the folder ------------------------------------------------------


def test_it_keeps_at_most_per_host_requests_in_flight(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    group = token()
    jobs = [DownloadJob(i, server.url(f"/hold/{group}/{i}")) for i in range(10)]

    results = download_photos(jobs, tmp_path, config=replace(config, workers=8, per_host=2))

    assert Counter(r.outcome for r in results) == {"ok": 10}
    assert IN_FLIGHT.peak[(f"/hold/{group}", "127.0.0.1")] == 2


def test_it_limits_each_host_separately(server: PhotoServer, tmp_path: Path, config: DownloadConfig) -> None:
    group = token()
    # Both names reach the same server; the downloader must treat them as two hosts.
    jobs = [
        DownloadJob(i, server.url(f"/hold/{group}/{i}", host="127.0.0.1" if i < 6 else "localhost")) for i in range(12)
    ]

    results = download_photos(
        jobs,
        tmp_path,
        config=replace(config, workers=8, per_host=2, allowed_hosts=frozenset({"127.0.0.1", "localhost"})),
    )

    assert Counter(r.outcome for r in results) == {"ok": 12}
    assert IN_FLIGHT.peak[(f"/hold/{group}", "127.0.0.1")] == 2
    assert IN_FLIGHT.peak[(f"/hold/{group}", "localhost")] == 2
    assert IN_FLIGHT.peak[(f"/hold/{group}", "*")] == 4


def test_it_reports_progress_once_per_job_from_the_calling_thread(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    jobs = [DownloadJob(i, server.url(f"/img/{token()}.jpg")) for i in range(6)]
    jobs.append(DownloadJob(99, server.url(f"/status/404/{token()}")))
    seen: list[tuple[int, int]] = []

    results = download_photos(
        jobs,
        tmp_path,
        config=config,
        progress=lambda r: seen.append((r.photo_id, threading.get_ident())),
    )

    assert sorted(photo_id for photo_id, _ in seen) == [0, 1, 2, 3, 4, 5, 99]
    assert {thread for _, thread in seen} == {threading.get_ident()}
    assert [r.photo_id for r in results] == [job.photo_id for job in jobs]  # results keep job order


def test_it_removes_stale_part_files_from_a_killed_run(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    (tmp_path / ".000000007.jpg.part-k1ll3d").write_bytes(JPEG[:500])
    (tmp_path / ".000000008.jpg.part-abc").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("keep me")

    download_photos([DownloadJob(9, server.url(f"/img/{token()}.jpg"))], tmp_path, config=config)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        LOCK_NAME,
        "000000009.jpg",
        "notes.txt",
    ]


def test_it_refuses_a_second_run_into_the_same_folder(
    server: PhotoServer, tmp_path: Path, config: DownloadConfig
) -> None:
    group = token()
    slow_jobs = [DownloadJob(i, server.url(f"/hold/{group}/{i}")) for i in range(4)]
    first = threading.Thread(
        target=download_photos,
        args=(slow_jobs, tmp_path),
        kwargs={"config": replace(config, workers=1)},
    )
    first.start()
    time.sleep(0.1)
    try:
        with pytest.raises(DownloadDirBusy):
            download_photos([DownloadJob(99, server.url(f"/img/{token()}.jpg"))], tmp_path, config=config)
    finally:
        first.join()
    assert_only_photos(tmp_path, {0, 1, 2, 3})


def test_it_rejects_duplicate_photo_ids(tmp_path: Path, config: DownloadConfig) -> None:
    with pytest.raises(ValueError, match="more than once"):
        download_photos(
            [DownloadJob(1, "http://a/1.jpg"), DownloadJob(1, "http://b/1.jpg")],
            tmp_path,
            config=config,
        )


# --- reports --------------------------------------------------------------------------------------


def result(photo_id: int, outcome: str, status: int | None = None, error: str = "") -> DownloadResult:
    return DownloadResult(photo_id, f"http://shop.example/{photo_id}.jpg,v=2", outcome, status, 1, 0, error)


def write_failures(results: list[DownloadResult], path: Path) -> int:
    return write_csv(path, FAILURE_COLUMNS, (failure_row(r) for r in results if not r.succeeded))


def test_it_writes_failure_rows_with_a_blank_status_when_there_was_none(tmp_path: Path) -> None:
    results = [
        result(1, "ok", 200),
        result(2, "http_error", 404, "HTTP 404"),
        result(3, "exists"),
        result(4, "timeout"),
    ]
    path = tmp_path / "failures.csv"

    written = write_failures(results, path)

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert written == 2
    assert rows == [
        {
            "photo_id": "2",
            "url": "http://shop.example/2.jpg,v=2",
            "outcome": "http_error",
            "http_status": "404",
            "attempts": "1",
            "error": "HTTP 404",
        },
        {
            "photo_id": "4",
            "url": "http://shop.example/4.jpg,v=2",
            "outcome": "timeout",
            "http_status": "",
            "attempts": "1",
            "error": "",
        },
    ]


# --- photos.txt -----------------------------------------------------------------------------------


def test_it_reads_photos_txt_splitting_at_the_first_comma(tmp_path: Path) -> None:
    path = tmp_path / "photos.txt"
    path.write_bytes(
        b"000000001,http://s3.amazonaws.com/media.modcloth/a.jpg?1418208912\r\n"
        b"000000002,http://img.example.com/w_300,h_400/dress.jpg\n"
        b"\n"
        b"no comma here\n"
        b"abc,http://example.com/x.jpg\n"
        b"000000005,\n"
        b"000000001,http://example.com/duplicate.jpg\n"
        b"  000000010 , http://example.com/spaced.jpg  \n"
    )

    photos = read_photos_txt(path)

    assert photos.urls == {
        1: "http://s3.amazonaws.com/media.modcloth/a.jpg?1418208912",
        2: "http://img.example.com/w_300,h_400/dress.jpg",
        10: "http://example.com/spaced.jpg",
    }
    assert photos.bad_lines == [4, 5, 6, 7]
    assert photos.jobs([10, 2]) == [
        DownloadJob(2, photos.urls[2]),
        DownloadJob(10, photos.urls[10]),
    ]
    with pytest.raises(KeyError):
        photos.jobs([3])


@pytest.mark.skipif(not (SHARED / "photos.txt").exists(), reason="shared Street2Shop metadata not present")
def test_it_reads_the_real_photos_txt() -> None:
    photos = read_photos_txt(SHARED / "photos.txt")

    assert photos.bad_lines == []
    assert sorted(photos.urls) == list(range(1, 12))
    assert photos.urls[1].startswith("http://s3.amazonaws.com/media.modcloth/")
    assert photos.urls[1].endswith("?1418208912")
    assert all(url.startswith("http://") for url in photos.urls.values())


def test_it_reports_ids_too_long_to_be_one_as_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "photos.txt"
    path.write_text(
        "000000001,http://127.0.0.1/a.jpg\n"
        + "9" * 4_400
        + ",http://127.0.0.1/b.jpg\n"
        + "9" * 19
        + ",http://127.0.0.1/c.jpg\n"
        + "9" * 18
        + ",http://127.0.0.1/d.jpg\n"
    )
    photos = read_photos_txt(path)
    assert photos.bad_lines == [2, 3]
    assert sorted(photos.urls) == [1, 10**18 - 1]


def test_it_writes_failures_a_spreadsheet_will_not_run(tmp_path: Path) -> None:
    hostile = [
        DownloadResult(
            photo_id=1,
            url='=HYPERLINK("http://127.0.0.1/x","click")',
            outcome="http_error",
            http_status=500,
            attempts=1,
            bytes=0,
            error="+cmd|' /C calc'!A0",
        ),
        DownloadResult(
            photo_id=2,
            url="http://127.0.0.1/ok.jpg",
            outcome="not_an_image",
            http_status=200,
            attempts=1,
            bytes=0,
            error="@SUM(1+1)",
        ),
        DownloadResult(
            photo_id=3,
            url="http://127.0.0.1/y.jpg",
            outcome="timeout",
            http_status=None,
            attempts=2,
            bytes=0,
            error="-2+3",
        ),
    ]
    path = tmp_path / "failures.csv"
    assert write_failures(hostile, path) == 3
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    assert rows[0][1] == '\'=HYPERLINK("http://127.0.0.1/x","click")' and rows[1][1] == "http://127.0.0.1/ok.jpg"
    assert rows[0][3] == "500" and rows[2][5] == "'-2+3"  # numbers stay numbers; text keeps its content


# --- redirects followed by hand: their bodies are never read ------------------------------------


def _redirect_with_body(location: str, body_chunks, headers: dict[str, str] | None = None, delay: float = 0.0):
    """A 302 whose body is large, slow or compressed; the client must not read it."""

    def route(handler, seen: int) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            for chunk in body_chunks():
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the connection without reading: what we want

    return route


def _gzip_bomb(inflated: int) -> bytes:
    import gzip

    return gzip.compress(b"\0" * inflated, compresslevel=9)


@pytest.fixture
def photo_server() -> Iterator[httpserver.PhotoServer]:
    server = httpserver.PhotoServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize("kind", ["40 MB body", "dripping body", "gzip bomb"])
def test_it_follows_a_redirect_without_reading_its_body(
    photo_server, tmp_path: Path, config: DownloadConfig, kind: str
) -> None:
    import tracemalloc

    target = photo_server.add("/photo.jpg", httpserver.image(JPEG))
    bomb = _gzip_bomb(200_000_000)  # 200 MB of zeros in about 200 KB
    bodies = {
        "40 MB body": (lambda: (b"x" * 1_048_576 for _ in range(40)), {"Content-Length": str(40 * 1_048_576)}, 0.0),
        "dripping body": (lambda: (b"." for _ in range(60)), {"Content-Length": "60"}, 0.1),
        "gzip bomb": (lambda: [bomb], {"Content-Length": str(len(bomb)), "Content-Encoding": "gzip"}, 0.0),
    }
    chunks, headers, delay = bodies[kind]
    url = photo_server.add("/moved", _redirect_with_body(target, chunks, headers, delay))
    config = replace(config, total_timeout=2.0, max_bytes=1_000_000)

    tracemalloc.start()
    started = time.monotonic()
    result = fetch_one(url, tmp_path, config)
    seconds = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert result.outcome == "ok", result
    assert photo_server.count("/photo.jpg") == 1
    # Within the photo's limits: its 2 s, and memory for the photo, not for 40 MB or 200 MB.
    assert seconds < config.total_timeout and peak < 5_000_000, (seconds, peak)


def test_it_refuses_a_compressed_photo_without_inflating_it(
    photo_server, tmp_path: Path, config: DownloadConfig
) -> None:
    bomb = _gzip_bomb(200_000_000)
    url = photo_server.add(
        "/bomb.jpg",
        lambda handler, seen: httpserver.send(handler, 200, bomb, "image/jpeg", {"Content-Encoding": "gzip"}),
    )
    result = fetch_one(url, tmp_path, config)
    assert result.outcome == "not_an_image" and "Content-Encoding gzip" in result.error
    assert_only_photos(tmp_path, set())


def test_it_gives_a_whole_redirect_chain_one_deadline(photo_server, tmp_path: Path, config: DownloadConfig) -> None:
    target = photo_server.add("/end.jpg", httpserver.image(JPEG))
    url = target
    for hop in range(5):  # each hop answers after 0.6 s: 3 s for the chain, against a 1.5 s budget
        url = photo_server.add(
            f"/hop/{hop}",
            lambda handler, seen, to=url: (
                time.sleep(0.6),
                httpserver.send(handler, 302, b"", "text/plain", {"Location": to}),
            )[-1],
        )
    config = replace(config, total_timeout=1.5, read_timeout=1.0, retries=0)

    started = time.monotonic()
    result = fetch_one(url, tmp_path, config)

    assert result.outcome == "timeout", result
    assert time.monotonic() - started < 2.5
    assert photo_server.count("/end.jpg") == 0


# --- no requests into the machine or the private network ------------------------------------------------


@pytest.fixture
def listener() -> Iterator[httpserver.PhotoServer]:
    """A loopback service that is not on the allow-list: it must never see a request."""
    server = httpserver.PhotoServer().start()
    server.add("/secret", httpserver.image(JPEG))
    yield server
    server.stop()


def _only(server: httpserver.PhotoServer, config: DownloadConfig) -> DownloadConfig:
    return replace(config, allowed_hosts=frozenset({f"127.0.0.1:{server.port}"}), retries=0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("target", ["other port", "127.0.0.2", "[::1]"])
@pytest.mark.parametrize("hops", [0, 2])
def test_it_refuses_a_loopback_listener_not_on_the_allow_list(
    photo_server, listener, tmp_path: Path, config: DownloadConfig, target: str, hops: int
) -> None:
    if target == "[::1]" and not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    host = {"other port": "127.0.0.1", "127.0.0.2": "127.0.0.2", "[::1]": "[::1]"}[target]
    url = f"http://{host}:{listener.port}/secret"
    for hop in range(hops):  # through allowed hops of the photo server first
        url = photo_server.add(f"/hop{hop}-{token()}", httpserver.redirect(url))

    result = fetch_one(url, tmp_path, _only(photo_server, config))

    assert result.outcome == "refused_address" and "not a public address" in result.error, result
    assert listener.total() == 0
    assert_only_photos(tmp_path, set())


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "169.254.169.254",
        "192.168.1.10",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fd00:ec2::254",
        "fe80::1",
    ],
)
def test_it_refuses_private_link_local_and_metadata_addresses_before_connecting(
    tmp_path: Path, config: DownloadConfig, address: str
) -> None:
    host = f"[{address}]" if ":" in address else address
    assert check_destination(f"http://{host}/latest/meta-data/")[0]
    result = fetch_one(f"http://{host}/latest/meta-data/", tmp_path, replace(config, allowed_hosts=frozenset()))
    assert result.outcome == "refused_address", result  # the loopback guard saw no connect either


@pytest.mark.parametrize(
    "name, address", [("metadata.shop.test", "169.254.169.254"), ("intranet.shop.test", "10.0.0.1")]
)
def test_it_refuses_a_redirect_to_a_name_that_resolves_to_a_private_address(
    photo_server, tmp_path: Path, config: DownloadConfig, monkeypatch, name: str, address: str
) -> None:
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == name:  # the test's DNS: this name points into the private network
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = photo_server.add(f"/moved-{token()}", httpserver.redirect(f"http://{name}/latest/meta-data/"))

    result = fetch_one(url, tmp_path, _only(photo_server, config))

    assert result.outcome == "refused_address" and address in result.error, result


def test_it_lets_the_allow_list_name_a_host_and_port(photo_server, tmp_path: Path, config: DownloadConfig) -> None:
    url = photo_server.add("/ok.jpg", httpserver.image(JPEG))
    assert fetch_one(url, tmp_path, _only(photo_server, config)).outcome == "ok"
    assert check_destination(url, frozenset())[0] and not check_destination(url, frozenset({"127.0.0.1"}))[0]


def test_it_cannot_connect_outside_the_loopback_range_in_the_tests() -> None:
    from tests.conftest import BLOCKED_CONNECTS

    with pytest.raises(ConnectionRefusedError, match="test guard"):
        socket.create_connection(("10.0.0.1", 80), timeout=1)
    assert BLOCKED_CONNECTS == ["('10.0.0.1', 80)"]
    BLOCKED_CONNECTS.clear()  # expected here; any other test that leaves one fails


def test_it_connects_to_the_address_it_checked_not_to_a_second_answer(
    photo_server, tmp_path: Path, config: DownloadConfig, monkeypatch
) -> None:
    """DNS rebinding: the name answers one address for the check and another a moment later."""
    name, answers = "rebind.shop.test", []
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == name:
            answers.append(host)
            # First the photo server; from then on an address where nothing listens (127.0.0.2).
            address = "127.0.0.1" if len(answers) == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    photo_server.add("/rebind.jpg", httpserver.image(JPEG))
    url = f"http://{name}:{photo_server.port}/rebind.jpg"

    result = fetch_one(url, tmp_path, replace(config, allowed_hosts=frozenset({name}), retries=0))

    assert result.outcome == "ok", result
    assert answers == [name]  # one lookup, the checked one: the connection used its answer
    assert photo_server.count("/rebind.jpg") == 1
