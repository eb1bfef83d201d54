"""How a download run orders, retries, paces and gives up on photos, against servers on loopback."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from shop.street2shop.download import download_photos
from shop.street2shop.jobs import DownloadConfig, DownloadJob, DownloadResult
from tests import httpserver
from tests.httpserver import PhotoServer, Route


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (30, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = jpeg()
# Tiny backoffs (random() × 0.01 s) unless a test wants a wait it can see.
CONFIG = DownloadConfig(
    connect_timeout=1.0,
    read_timeout=0.5,
    retries=2,
    backoff_base=0.01,
    backoff_max=5.0,
    workers=4,
    per_host=1,
    random=lambda: 0.5,
    allowed_hosts=frozenset({"127.0.0.1", "127.0.0.2"}),
)  # the test servers


@pytest.fixture
def server() -> Iterator[PhotoServer]:
    with PhotoServer() as server:
        yield server


@pytest.fixture
def other_host() -> Iterator[PhotoServer]:
    try:
        server = PhotoServer("127.0.0.2")  # another loopback address: another host to the downloader
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")  # Linux routes all of 127/8; macOS does not
    with server:
        yield server


def logged(route: Route, order: list[str], name: str) -> Route:
    """``route``, noting ``name`` in ``order`` as each request arrives (one list for several servers)."""

    def wrapped(handler: BaseHTTPRequestHandler, seen: int) -> None:
        order.append(name)
        route(handler, seen)

    return wrapped


def timed(route: Route, times: list[float]) -> Route:
    """``route``, noting when each request arrived (monotonic)."""

    def wrapped(handler: BaseHTTPRequestHandler, seen: int) -> None:
        times.append(time.monotonic())
        route(handler, seen)

    return wrapped


def silent_after(times: int, code: int, seconds: float) -> Route:
    """``code`` for the first ``times`` requests, then no answer for ``seconds``."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        if seen <= times:
            httpserver.send(handler, code, b"try later", "text/plain")
        else:
            time.sleep(seconds)
            httpserver.send(handler, 200, JPEG)

    return route


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def outcomes(results: list[DownloadResult]) -> list[tuple[int, str, int]]:
    return [(r.photo_id, r.outcome, r.attempts) for r in results]


# --- priority -------------------------------------------------------------------------------------


def test_it_serves_a_hosts_photos_by_priority_then_in_the_order_given(server: PhotoServer, tmp_path: Path) -> None:
    priorities = {1: 2, 2: 0, 3: 1, 4: 0, 5: 2}
    jobs = [DownloadJob(i, server.add(f"/{i}.jpg", httpserver.image(JPEG)), priority=p) for i, p in priorities.items()]

    results = download_photos(jobs, tmp_path, config=replace(CONFIG, workers=1))

    assert server.log == ["/2.jpg", "/4.jpg", "/3.jpg", "/1.jpg", "/5.jpg"]
    assert [(r.photo_id, r.outcome) for r in results] == [(i, "ok") for i in priorities]  # results keep job order


def test_it_still_takes_turns_between_hosts_whatever_the_priorities(
    server: PhotoServer, other_host: PhotoServer, tmp_path: Path
) -> None:
    order: list[str] = []
    jobs = [
        DownloadJob(i, server.add(f"/{i}.jpg", logged(httpserver.image(JPEG), order, f"a{i}")), priority=0)
        for i in range(3)
    ]
    jobs += [
        DownloadJob(i, other_host.add(f"/{i}.jpg", logged(httpserver.image(JPEG), order, f"b{i}")), priority=9)
        for i in range(3, 6)
    ]

    download_photos(jobs, tmp_path, config=replace(CONFIG, workers=1))

    # One worker: the hosts alternate, so priority 9 on one host waits no more than a turn.
    assert order == ["a0", "b3", "a1", "b4", "a2", "b5"]


# --- retries wait in the queue, not on a worker ------------------------------------------------------


def test_it_serves_another_photo_of_the_host_while_a_retry_waits(server: PhotoServer, tmp_path: Path) -> None:
    retried: list[float] = []
    flaky = server.add("/flaky.jpg", timed(httpserver.fails_first(1, 500, JPEG), retried))
    good = server.add("/good.jpg", httpserver.image(JPEG))
    delays: list[float] = []
    config = replace(CONFIG, per_host=1, workers=2, backoff_base=0.8, random=lambda: 1.0, on_backoff=delays.append)

    results = download_photos([DownloadJob(1, flaky), DownloadJob(2, good)], tmp_path, config=config)

    assert outcomes(results) == [(1, "ok", 2), (2, "ok", 1)]
    # The host's one slot went to the good photo during the backoff, and the backoff was honoured.
    assert server.log == ["/flaky.jpg", "/good.jpg", "/flaky.jpg"]
    assert delays == [0.8]
    assert retried[1] - retried[0] >= 0.8


def test_it_retries_a_silent_photo_once_but_a_failing_one_as_often_as_configured(
    server: PhotoServer, tmp_path: Path
) -> None:
    silent = server.add("/silent.jpg", httpserver.slow(2.0, JPEG))
    failing = server.add("/failing.jpg", httpserver.status(500))
    config = replace(CONFIG, retries=3, read_timeout=0.2, per_host=2)

    results = download_photos([DownloadJob(1, silent), DownloadJob(2, failing)], tmp_path, config=config)

    assert [(r.outcome, r.http_status, r.attempts) for r in results] == [("timeout", None, 2), ("http_error", 500, 4)]
    assert (server.count("/silent.jpg"), server.count("/failing.jpg")) == (2, 4)


# --- one budget per photo -------------------------------------------------------------------------------


def test_it_makes_no_retry_that_would_end_past_the_photos_budget(server: PhotoServer, tmp_path: Path) -> None:
    url = server.add("/down.jpg", httpserver.status(503))
    delays: list[float] = []
    # Waits of 0.4 s then 0.8 s: the second retry would start at 1.2 s, past the 1 s budget.
    config = replace(
        CONFIG, retries=5, total_timeout=1.0, backoff_base=0.4, random=lambda: 1.0, on_backoff=delays.append
    )

    started = time.monotonic()
    [result] = download_photos([DownloadJob(1, url)], tmp_path, config=config)

    assert (result.outcome, result.http_status, result.attempts) == ("http_error", 503, 2)
    assert "HTTP 503" in result.error and "1 s budget was spent" in result.error
    assert delays == [0.4]
    assert server.count("/down.jpg") == 2
    assert time.monotonic() - started < 1.0


def test_it_gives_the_attempt_after_a_wait_only_what_is_left_of_the_budget(server: PhotoServer, tmp_path: Path) -> None:
    url = server.add("/stalls.jpg", silent_after(1, 500, 3.0))
    # A 500, a 0.5 s wait, then a silent server: the second attempt has 0.5 s left, not read_timeout's 1.5 s.
    config = replace(CONFIG, retries=3, total_timeout=1.0, read_timeout=1.5, backoff_base=0.5, random=lambda: 1.0)

    started = time.monotonic()
    [result] = download_photos([DownloadJob(1, url)], tmp_path, config=config)
    seconds = time.monotonic() - started

    assert (result.outcome, result.attempts) == ("timeout", 2)
    assert "budget was spent" in result.error
    assert 0.9 <= seconds < 1.4, seconds
    assert server.count("/stalls.jpg") == 2


# --- Retry-After pauses the host ------------------------------------------------------------------------------


def test_it_pauses_the_host_that_sent_retry_after_and_only_that_host(
    server: PhotoServer, other_host: PhotoServer, tmp_path: Path
) -> None:
    busy_times: list[float] = []
    same_host: list[float] = []
    other: list[float] = []
    busy = server.add("/busy.jpg", timed(httpserver.fails_first(1, 429, JPEG, {"Retry-After": "1"}), busy_times))
    jobs = [DownloadJob(1, busy)]
    jobs += [
        DownloadJob(i, server.add(f"/{i}.jpg", timed(httpserver.image(JPEG), same_host)), priority=1) for i in (2, 3)
    ]
    jobs += [DownloadJob(i, other_host.add(f"/{i}.jpg", timed(httpserver.slow(0.1, JPEG), other))) for i in (4, 5, 6)]

    results = download_photos(jobs, tmp_path, config=replace(CONFIG, per_host=1, workers=4))

    assert outcomes(results) == [(1, "ok", 2), (2, "ok", 1), (3, "ok", 1), (4, "ok", 1), (5, "ok", 1), (6, "ok", 1)]
    too_many = busy_times[0]
    assert min(same_host) - too_many >= 1.0  # nothing started on the paused host for a second
    assert busy_times[1] - too_many >= 1.0
    assert max(other) - too_many < 0.8  # the other host went on meanwhile


# --- host health -----------------------------------------------------------------------------------------------


def test_it_skips_a_refusing_host_after_a_full_window_of_failed_requests(tmp_path: Path) -> None:
    port = closed_port()
    jobs = [DownloadJob(i, f"http://127.0.0.1:{port}/{i}.jpg") for i in range(30)]
    config = replace(CONFIG, workers=1, per_host=1, retries=2)  # the default window: 20 requests, 80 % failed

    results = download_photos(jobs, tmp_path, config=config)

    assert {r.outcome for r in results} == {"connection_error"}
    assert sum(r.attempts for r in results) == 20  # requests, retries included, not photos
    never_requested = [r for r in results if r.attempts == 0]
    assert len(never_requested) >= 10
    assert {r.error for r in never_requested} == {
        "skipped: 20 of the last 20 requests to 127.0.0.1 failed to connect or timed out"
    }


def test_it_does_not_skip_a_host_before_a_full_window(tmp_path: Path) -> None:
    port = closed_port()
    jobs = [DownloadJob(i, f"http://127.0.0.1:{port}/{i}.jpg") for i in range(4)]

    results = download_photos(jobs, tmp_path, config=replace(CONFIG, retries=0, host_health_window=5))

    assert [r.attempts for r in results] == [1, 1, 1, 1]
    assert not [r for r in results if r.error.startswith("skipped:")]


def test_it_keeps_serving_a_host_with_one_silent_photo_in_five(server: PhotoServer, tmp_path: Path) -> None:
    silent = {0, 5, 10, 15}
    jobs = [
        DownloadJob(i, server.add(f"/{i}.jpg", httpserver.slow(1.0, JPEG) if i in silent else httpserver.image(JPEG)))
        for i in range(20)
    ]
    config = replace(CONFIG, workers=1, per_host=1, read_timeout=0.15, retries=3)  # the default window and share

    results = download_photos(jobs, tmp_path, config=config)

    assert [r.photo_id for r in results if r.outcome == "ok"] == [i for i in range(20) if i not in silent]
    assert [(r.outcome, r.attempts) for r in results if r.photo_id in silent] == [("timeout", 2)] * 4
    assert server.total() == 16 + 2 * 4


def test_it_refuses_health_settings_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="host_failure_share"):
        DownloadConfig(host_failure_share=0)
    with pytest.raises(ValueError, match="host_health_window"):
        DownloadConfig(host_health_window=-1)
    assert DownloadConfig(host_health_window=None).host_health_window is None
