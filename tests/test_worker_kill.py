"""A worker killed mid-task: its task is redelivered to another worker and nothing stored is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from django.core.files.base import ContentFile
from django.urls import reverse

from shop.models import Feature, ModelVersion, SearchQuery
from shop.services import search as search_service
from tests.conftest import WorkerProcess, wait_for
from tests.factories import jpeg_bytes, make_product, make_version
from workers.tasks import index_products, run_search

QUEUE = "kill-test"  # a queue of its own, so the session's worker stays out of it


@pytest.fixture
def products(transactional_db):
    """Committed rows, so the worker processes see them; flushed after the test."""
    return [make_product(title=f"dress {i}", colour=((37 * i) % 256, 90, 200 - 6 * i)) for i in range(24)]


def test_it_redelivers_the_indexing_of_a_killed_worker_and_loses_nothing(products, worker_env, tmp_path):
    # A short visibility timeout so the test need not wait the production hour for redelivery.
    env = {**worker_env, "CELERY_VISIBILITY_TIMEOUT": "4", "CELERY_RESTORE_INTERVAL": "1"}
    doomed = WorkerProcess(env=env, queues=QUEUE, name="doomed", log=tmp_path / "doomed.log").wait_ready()
    rescuer = None
    try:
        first = [p.pk for p in products[:6]]
        index_products.apply_async(args=[first], queue=QUEUE)
        wait_for(
            lambda: Feature.objects.filter(product_image__product_id__in=first).count() == 6,
            timeout=120,
            message="the first task",
        )
        stored = dict(Feature.objects.values_list("id", "vector"))

        index_products.apply_async(args=[[p.pk for p in products]], queue=QUEUE)
        wait_for(
            lambda: (
                "succeeded" in doomed.log.read_text(errors="replace")
                and doomed.log.read_text(errors="replace").count("received") >= 2
            ),
            timeout=60,
            message="the second task to start",
        )
        time.sleep(0.3)
        doomed.kill()
        # Killed before the batch was written: nothing new, nothing lost.
        assert dict(Feature.objects.values_list("id", "vector")) == stored

        rescuer = WorkerProcess(env=env, queues=QUEUE, name="rescuer", log=tmp_path / "rescuer.log").wait_ready()
        wait_for(lambda: Feature.objects.count() == 24, timeout=240, message="the redelivered task")
        time.sleep(2)  # a second redelivery, if any, must not add rows either
        assert Feature.objects.count() == 24
        assert {k: bytes(v) for k, v in Feature.objects.filter(id__in=stored).values_list("id", "vector")} == {
            k: bytes(v) for k, v in stored.items()
        }
    finally:
        if doomed.process.poll() is None:
            doomed.kill()
        if rescuer is not None:
            rescuer.stop()


# --- searches: they always end, and a photo that kills its worker is not tried again -------------

SEARCH_QUEUE = "kill-search-test"


def _pool_children(pid: int) -> list[int]:
    """The prefork pool processes of a worker (children of its main process), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _pending_search() -> SearchQuery:
    if not ModelVersion.objects.filter(status="active").exists():
        # Past the "not indexed yet" check, so the worker goes on to load VGG19 (seconds): time to kill it.
        make_version(status="active")
    query = SearchQuery(width=120, height=160)
    query.image.save(f"{query.pk}-upload.jpg", ContentFile(jpeg_bytes(size=(120, 160))), save=True)
    return query


def _status(query: SearchQuery) -> tuple[str, str]:
    query.refresh_from_db()
    return query.status, query.error


def test_it_fails_a_search_whose_worker_process_died_instead_of_trying_the_photo_again(
    transactional_db, worker_env, tmp_path
):
    worker = WorkerProcess(env=worker_env, queues=SEARCH_QUEUE, name="crashy", log=tmp_path / "crashy.log").wait_ready()
    try:
        query = _pending_search()
        run_search.apply_async((str(query.pk),), queue=SEARCH_QUEUE)
        # Started: the worker claimed it and is loading the backbone (seconds): kill its pool process.
        wait_for(
            lambda: SearchQuery.objects.filter(pk=query.pk, started_at__isnull=False).exists(),
            timeout=60,
            interval=0.05,
            message="the search to start",
        )
        for child in _pool_children(worker.process.pid):
            os.kill(child, signal.SIGKILL)

        # The main process hands the message back (reject_on_worker_lost); its second delivery fails it.
        wait_for(lambda: _status(query)[0] != "pending", timeout=60, message="the search to end")
        assert _status(query) == ("failed", search_service.WORKER_DIED)
        time.sleep(3)  # and it is not delivered a third time
        log = worker.log.read_text(errors="replace")
        received = [line for line in log.splitlines() if f"{run_search.name}[" in line and "received" in line]
        assert len(received) == 2, log[-3000:]  # the first delivery and the one that failed it
        assert worker.process.poll() is None
    finally:
        worker.kill()


def test_it_ends_a_search_as_failed_when_the_whole_worker_is_killed_or_the_broker_loses_it(
    transactional_db, worker_env, redis_url, tmp_path, client, settings
):
    settings.SEARCH_TIMEOUT_SECONDS = 8
    doomed = WorkerProcess(
        env=worker_env, queues=SEARCH_QUEUE, name="doomed-search", log=tmp_path / "doomed.log"
    ).wait_ready()
    killed, flushed = _pending_search(), _pending_search()
    try:
        run_search.apply_async((str(killed.pk),), queue=SEARCH_QUEUE)
        wait_for(
            lambda: SearchQuery.objects.filter(pk=killed.pk, started_at__isnull=False).exists(),
            timeout=60,
            interval=0.05,
            message="the search to start",
        )
    finally:
        # The whole worker: its message stays unacknowledged for the visibility timeout. Killed on a
        # failure too: a worker left behind would take the next run's messages on this queue.
        doomed.kill()

    # A message the broker lost (a restart of a Redis that keeps nothing on disk).
    run_search.apply_async((str(flushed.pk),), queue="nobody-listens")
    redis.Redis.from_url(redis_url).delete("nobody-listens")

    for query in (killed, flushed):
        started = time.monotonic()
        statuses = []
        # The results page's own loop: ask the wait endpoint until the search is over.
        while time.monotonic() - started < 3 * settings.SEARCH_TIMEOUT_SECONDS:
            status = client.get(reverse("search-wait", args=[query.pk]), {"timeout": 2}).json()["status"]
            statuses.append(status)
            if status != "pending":
                break
        assert statuses[-1] == "failed"
        assert _status(query) == ("failed", search_service.OVERDUE)
        page = client.get(reverse("search-results", args=[query.pk])).content.decode()
        assert "Try again" in page and "results.js" not in page
