"""The one place the shop sends work to the Celery workers: ids in, a message out.

Tasks are sent by name, so this module never imports ``workers.tasks`` (which imports the services
back); the names below are the ones ``workers/tasks.py`` registers its tasks under. Tests replace
these functions to record what would be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from workers.celery import app

logger = logging.getLogger(__name__)

INDEX_PRODUCTS = "workers.index_products"
INDEX_STREET_PHOTOS = "workers.index_street_photos"
TRAIN_MODEL_VERSION = "workers.train_model_version"
EMBED_FOR_VERSION = "workers.embed_for_version"
RUN_SEARCH = "workers.run_search"
RANK_SIMILAR_SLICE = "workers.rank_similar_slice"
END_OVERDUE_SEARCHES = "workers.end_overdue_searches"
PURGE_SEARCHES = "workers.purge_searches"
RERANK_SIMILAR_LISTS = "workers.rerank_similar_lists"


def _send(name: str, *args: Any, **options: Any) -> None:
    app.send_task(name, args=args, **options)


def index_products(product_ids: Sequence[int]) -> None:
    _send(INDEX_PRODUCTS, list(product_ids))


def index_street_photos(street_photo_ids: Sequence[int]) -> None:
    _send(INDEX_STREET_PHOTOS, list(street_photo_ids))


def train_model_version(version_id: int) -> None:
    _send(TRAIN_MODEL_VERSION, version_id)


def embed_for_version(version_id: int, product_ids: Sequence[int]) -> None:
    _send(EMBED_FOR_VERSION, version_id, list(product_ids))


def run_search(query_id: str, *, expires: float) -> None:
    # A message still queued past the deadline is dropped by the worker: the search has ended.
    _send(RUN_SEARCH, query_id, expires=expires)


def rank_similar_slice(version_id: int, low: int, high: int, number: int) -> None:
    _send(RANK_SIMILAR_SLICE, version_id, low, high, number)


def rerank_similar_lists(version_id: int, product_ids: Sequence[int], removed_ids: Sequence[int]) -> None:
    _send(RERANK_SIMILAR_LISTS, version_id, list(product_ids), list(removed_ids))


def on_commit_or_fail(send: Callable[[], None], *, fail: Callable[[Exception], None]) -> None:
    """Send once the current transaction commits; if the broker refuses, ``fail`` marks the row.

    A queued row nobody will run would wait forever (a search) or block every later run (training).
    """

    def enqueue() -> None:
        try:
            send()
        except Exception as error:
            logger.exception("could not queue a task")
            fail(error)
            raise

    transaction.on_commit(enqueue, robust=True)
