"""Celery's limits per kind of task: searches short, batches medium, training long, and a search stopped cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.files.base import ContentFile

from shop import runtime
from shop.models import SearchQuery
from shop.services import search
from tests.conftest import REPO
from tests.factories import jpeg_bytes, make_version
from workers.celery import app


def registered(name: str):
    """The task as the worker runs it: a class with the settings' annotations applied."""
    import workers.tasks  # noqa: F401  (registers the tasks)

    app.finalize()
    return app.tasks[name]


def test_it_stops_a_search_well_within_the_search_timeout(settings):
    task = registered("workers.run_search")

    assert task.soft_time_limit == settings.SEARCH_TIMEOUT_SECONDS // 2
    assert task.soft_time_limit < task.time_limit <= settings.SEARCH_TIMEOUT_SECONDS
    assert registered("workers.end_overdue_searches").time_limit == task.time_limit


def test_it_gives_batches_the_default_limits_and_training_hours():
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (15 * 60, 16 * 60)
    # Batches have no annotation: every task not named there takes those defaults.
    for name in ("workers.index_products", "workers.index_street_photos", "workers.rank_similar_slice"):
        assert (registered(name).soft_time_limit, registered(name).time_limit) == (15 * 60, 16 * 60)
    training = registered("workers.train_model_version")
    assert (training.soft_time_limit, training.time_limit) == (6 * 3600, 6 * 3600 + 600)
    assert training.acks_late is False


def test_it_keeps_one_message_per_process_and_replaces_a_grown_process():
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_disable_prefetch is True
    assert app.conf.worker_max_memory_per_child == 4 * 1024 * 1024  # KiB
    assert app.conf.worker_max_tasks_per_child is None


def _settings_with(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import shop.settings as s; print(s.CELERY_TASK_ANNOTATIONS['workers.run_search'])"],
        cwd=REPO,
        env={**os.environ, "DEBUG": "true", "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_takes_a_search_limit_from_the_environment(tmp_path):
    result = _settings_with(tmp_path, CELERY_SEARCH_TIME_LIMIT="20", SEARCH_TIMEOUT_SECONDS="40")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'soft_time_limit': 20, 'time_limit': 30}"


def test_it_refuses_a_search_limit_that_outlives_the_search_timeout(tmp_path):
    result = _settings_with(tmp_path, CELERY_SEARCH_TIME_LIMIT="50")

    assert result.returncode != 0
    assert "CELERY_SEARCH_TIME_LIMIT=50: with its grace of 15 s a search would outlive SEARCH_TIMEOUT_SECONDS=60" in (
        result.stderr
    )


@pytest.mark.django_db
def test_it_fails_a_search_stopped_by_its_soft_time_limit_with_the_too_long_message(monkeypatch):
    make_version(status="active")
    query = SearchQuery(width=120, height=160)
    query.image.save(f"{query.pk}-upload.jpg", ContentFile(jpeg_bytes(size=(120, 160))), save=True)

    def load_past_the_limit():
        # Where a cold worker spends its seconds: Celery raises the soft limit in whatever runs.
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(runtime, "get_backbone", load_past_the_limit)

    search.run_search_query(query_id=query.pk)

    query.refresh_from_db()
    assert (query.status, query.error) == ("failed", search.OVERDUE)
    assert query.finished_at is not None
