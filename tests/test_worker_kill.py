"""A worker killed mid-task: its task is redelivered to another worker and nothing stored is lost."""

from __future__ import annotations

import time

import pytest

from shop.models import Feature
from tests.conftest import WorkerProcess, wait_for
from tests.factories import make_product
from workers.tasks import index_products

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
        wait_for(lambda: Feature.objects.filter(product_image__product_id__in=first).count() == 6,
                 timeout=120, message="the first task")
        stored = dict(Feature.objects.values_list("id", "vector"))

        index_products.apply_async(args=[[p.pk for p in products]], queue=QUEUE)
        wait_for(lambda: "succeeded" in doomed.log.read_text(errors="replace")
                 and doomed.log.read_text(errors="replace").count("received") >= 2,
                 timeout=60, message="the second task to start")
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
