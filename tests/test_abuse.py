"""A hostile client against the real web server (gunicorn, DEBUG off), worker and Redis on 127.0.0.1."""

from __future__ import annotations

import select
import socket
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings

from tests.conftest import LIVE_STACK, LiveShop, production_env, wait_for
from tests.factories import jpeg_bytes

ACCEPTED = 10  # the live server's SEARCH_RATE_LIMIT: 10 an hour here, so no window resets mid-flood
FLOOD = 200

pytestmark = LIVE_STACK  # the database through the live server and the worker only (see conftest)


@pytest.fixture(scope="module")
def guarded_shop(indexed_catalogue, worker_env, redis_url, celery_worker_process, tmp_path_factory):
    shop = LiveShop(
        env=production_env(worker_env, redis_url),
        log=tmp_path_factory.mktemp("abuse") / "web.log",
        extra_env={"SEARCH_RATE_LIMIT": f"{ACCEPTED}/h", "SEARCH_MAX_PENDING": "50"},
    ).wait_ready()
    yield shop
    shop.stop()


def _search_files() -> set[Path]:
    root = Path(settings.SEARCH_UPLOAD_ROOT)
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _wait_clear_of_window_edge(address: str, period: int) -> None:
    """django-ratelimit's windows end at a per-address offset; don't start a flood in a window's last 15 s."""
    now = int(time.time())
    end = now - (now % period) + (zlib.crc32(address.encode()) % period)
    if end <= now:
        end += period
    if end - now < 15:
        time.sleep(end - now + 1)


def _session(shop: LiveShop) -> tuple[requests.Session, str]:
    session = requests.Session()
    assert session.get(f"{shop.url}/search/", timeout=10).status_code == 200
    return session, session.cookies["csrftoken"]


def test_it_refuses_a_1_gb_body_having_read_no_more_than_the_cap(guarded_shop):
    _, token = _session(guarded_shop)
    sent = 0
    head = (
        "POST /search/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=XYZ\r\n"
        f"Content-Length: {1 << 30}\r\nCookie: csrftoken={token}\r\nX-CSRFToken: {token}\r\n\r\n"
    ).encode()
    chunk = b"\0" * 65536
    # From an address of its own on the loopback network: the flood test spends 127.0.0.1's uploads.
    with socket.create_connection(
        ("127.0.0.1", guarded_shop.port), timeout=30, source_address=("127.0.0.2", 0)
    ) as connection:
        connection.sendall(head)
        answer = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sent < (1 << 30):
            readable, writable, _ = select.select([connection], [connection], [], 1.0)
            if readable:
                answer = connection.recv(65536)
                break
            if writable:
                try:
                    sent += connection.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
    print(f"the server answered after the client had sent {sent / 1e6:.1f} MB of a 1 GB body")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # What the client got into the socket: the kernel's buffers, never the 1 GB.
    assert sent <= settings.UPLOAD_MAX_BYTES + 16 * 1024 * 1024


def test_it_holds_200_uploads_from_one_client_in_10_seconds(guarded_shop, redis_url):
    photo = jpeg_bytes(size=(240, 320), colour=(150, 40, 80))
    session, token = _session(guarded_shop)
    files_before = _search_files()
    broker = redis.Redis.from_url(redis_url)
    _wait_clear_of_window_edge("127.0.0.1", 3600)

    def upload(_: int) -> requests.Response:
        return session.post(
            f"{guarded_shop.url}/search/",
            data={"csrfmiddlewaretoken": token},
            files={"image": ("street.jpg", photo, "image/jpeg")},
            allow_redirects=False,
            timeout=30,
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(upload, range(FLOOD)))
    seconds = time.monotonic() - started
    queued = broker.llen("search")
    print(f"{FLOOD} uploads in {seconds:.2f} s; {queued} message(s) in the search queue right after")

    codes = [r.status_code for r in responses]
    assert seconds < 10, "the flood must be as fast as the scenario says"
    assert not [c for c in codes if c >= 500]
    assert set(codes) <= {302, 429}
    accepted = [r for r in responses if r.status_code == 302]
    assert len(accepted) == ACCEPTED
    assert all(1 <= int(r.headers["Retry-After"]) <= 3600 for r in responses if r.status_code == 429)
    assert queued <= ACCEPTED
    assert len(_search_files() - files_before) <= ACCEPTED

    # Every accepted search finishes, through the results page's own wait endpoint.
    for response in accepted:
        wait_url = f"{guarded_shop.url}{response.headers['Location']}wait/"
        outcome = wait_for(
            lambda url=wait_url: (lambda s: s if s != "pending" else None)(
                session.get(url, timeout=30).json()["status"]
            ),
            timeout=120,
            interval=0.2,
            message="a search",
        )
        assert outcome == "done"
    # Each kept only its clean copy: the uploads as sent are gone.
    assert not [p for p in _search_files() - files_before if "-upload." in p.name]
