"""Jobs handed to a running download (shop.street2shop.download.JobFeed), against a server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from shop.street2shop.download import JobFeed, download_photos
from shop.street2shop.jobs import DownloadConfig, DownloadJob, DownloadResult
from shop.street2shop.metadata import photo_filename
from tests import httpserver
from tests.httpserver import PhotoServer


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = jpeg()
CONFIG = DownloadConfig(
    connect_timeout=2.0, read_timeout=2.0, retries=0, workers=2, per_host=2, allowed_hosts=frozenset({"127.0.0.1"})
)  # the test server


@pytest.fixture
def server():
    with PhotoServer() as server:
        for photo_id in range(20):
            server.add(f"/{photo_id}.jpg", httpserver.image(JPEG))
            server.add(f"/slow/{photo_id}.jpg", httpserver.slow(0.2, JPEG))
        yield server


def job(server: PhotoServer, photo_id: int, route: str = "") -> DownloadJob:
    return DownloadJob(photo_id, server.url(f"{route}/{photo_id}.jpg"))


class Run:
    """download_photos in a thread, as the seeding pipeline runs it."""

    def __init__(self, jobs: list[DownloadJob], folder: Path, feed: JobFeed, config: DownloadConfig = CONFIG) -> None:
        self.seen: list[DownloadResult] = []
        self.results: list[DownloadResult] | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.results = download_photos(jobs, folder, config=config, progress=self.seen.append, feed=feed)
            except BaseException as error:
                self.error = error

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.seen) >= count

    def join(self) -> None:
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_it_downloads_jobs_put_while_it_runs(server: PhotoServer, tmp_path: Path) -> None:
    feed = JobFeed()
    run = Run([job(server, 0)], tmp_path, feed)
    run.wait_for(1)

    feed.put([job(server, 1), job(server, 2)])
    run.wait_for(3)
    feed.put([job(server, 3)])
    feed.close()
    run.join()

    assert run.error is None
    assert [(r.photo_id, r.outcome) for r in run.results] == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "ok")]
    assert all((tmp_path / photo_filename(i)).read_bytes() == JPEG for i in range(4))


def test_it_waits_for_jobs_until_the_feed_closes(server: PhotoServer, tmp_path: Path) -> None:
    feed = JobFeed()
    run = Run([], tmp_path, feed)
    time.sleep(0.2)
    assert run.thread.is_alive()

    feed.put([job(server, 5)])
    feed.close()
    run.join()

    assert [r.photo_id for r in run.results] == [5]


def test_it_stops_requesting_when_cancelled(server: PhotoServer, tmp_path: Path) -> None:
    feed = JobFeed()
    run = Run(
        [job(server, i, "/slow") for i in range(10)],
        tmp_path,
        feed,
        DownloadConfig(workers=1, retries=0, allowed_hosts=frozenset({"127.0.0.1"})),
    )
    run.wait_for(1)

    feed.cancel()
    run.join()

    assert run.error is None
    assert 1 <= len(run.results) < 10
    assert server.total() < 10
    assert not [p.name for p in tmp_path.iterdir() if ".part-" in p.name]


def test_it_refuses_a_photo_id_already_in_the_run(server: PhotoServer, tmp_path: Path) -> None:
    feed = JobFeed()
    run = Run([job(server, 1)], tmp_path, feed)
    run.wait_for(1)

    feed.put([job(server, 1)])
    run.join()

    assert isinstance(run.error, ValueError)
    with pytest.raises(RuntimeError, match="closed"):
        feed.close()
        feed.put([job(server, 2)])


def test_it_serves_jobs_put_while_it_runs_by_priority_then_in_the_order_put(
    server: PhotoServer, tmp_path: Path
) -> None:
    feed = JobFeed()
    config = DownloadConfig(workers=1, per_host=1, retries=0, allowed_hosts=frozenset({"127.0.0.1"}))
    run = Run([job(server, 0, "/slow")], tmp_path, feed, config)
    deadline = time.monotonic() + 5
    while server.count("/slow/0.jpg") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    # All queued while the slow photo holds the host's only slot.
    feed.put([DownloadJob(1, server.url("/1.jpg"), priority=3), DownloadJob(2, server.url("/2.jpg"), priority=1)])
    feed.put([DownloadJob(3, server.url("/3.jpg"), priority=1), DownloadJob(4, server.url("/4.jpg"), priority=0)])
    feed.close()
    run.join()

    assert run.error is None
    assert server.log == ["/slow/0.jpg", "/4.jpg", "/2.jpg", "/3.jpg", "/1.jpg"]
    assert [r.photo_id for r in run.results] == [0, 1, 2, 3, 4]


def test_it_ends_a_waiting_retry_with_its_last_failure_when_cancelled(server: PhotoServer, tmp_path: Path) -> None:
    server.add("/down.jpg", httpserver.status(503))
    queued = threading.Event()
    feed = JobFeed()
    # A 5 s backoff: the run must not sit it out once cancelled.
    config = DownloadConfig(
        retries=3,
        backoff_base=5.0,
        random=lambda: 1.0,
        on_backoff=lambda delay: queued.set(),
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    run = Run([DownloadJob(1, server.url("/down.jpg"))], tmp_path, feed, config)
    assert queued.wait(5)

    started = time.monotonic()
    feed.cancel()
    run.join()

    assert run.error is None
    assert time.monotonic() - started < 1.0
    [result] = run.results
    assert (result.outcome, result.http_status, result.attempts) == ("http_error", 503, 1)
    assert result.error.startswith("HTTP 503") and "cancelled" in result.error
    assert run.seen == []  # not finished: a caller recording failures must let the next run retry it
    time.sleep(0.2)
    assert server.count("/down.jpg") == 1
