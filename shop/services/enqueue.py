"""The one place the shop sends work to the Celery workers: ids in, a message out.

Tasks are sent by name, so this module never imports ``workers.tasks`` (which imports the services
back); the names below are the ones ``workers/tasks.py`` registers its tasks under. Tests replace
these functions to record what would be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django.db import transaction

from shop.models import Category, Product, StreetPhoto
from workers.celery import app

T = TypeVar("T")

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


# How many ids one queued indexing task carries: big enough to batch VGG19 work,
# small enough that a killed worker loses little.
TASK_CHUNK = 32


def chunked(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class IndexQueue:
    """Queues ids for indexing in task-sized chunks, each id once its transaction has committed.

    A seeding run commits one product at a time; one task per product would have the worker run
    VGG19 on batches of one or two images, several times slower than full batches.
    """

    def __init__(self, *, chunk: int = TASK_CHUNK) -> None:
        self.chunk = chunk
        self._products: list[int] = []
        self._street: list[int] = []
        self._added = False

    def add(self, *, product_ids: Sequence[int] = (), street_photo_ids: Sequence[int] = ()) -> None:
        # robust: a broker outage must not undo what is stored; index_catalogue catches up later.
        products, street = list(product_ids), list(street_photo_ids)
        if not products and not street:
            return
        self._added = True
        transaction.on_commit(lambda: self._committed(products, street), robust=True)

    def flush(self) -> None:
        """Send what is left, after the current transaction (if any) commits."""
        if self._added:
            transaction.on_commit(lambda: self._send(force=True), robust=True)

    def _committed(self, products: list[int], street: list[int]) -> None:
        self._products.extend(products)
        self._street.extend(street)
        self._send(force=False)

    def _send(self, *, force: bool) -> None:
        for pending, send in ((self._products, index_products), (self._street, index_street_photos)):
            while pending and (force or len(pending) >= self.chunk):
                batch, pending[:] = pending[: self.chunk], pending[self.chunk :]
                send(batch)


def queue_indexing(*, product_ids: Sequence[int] = (), street_photo_ids: Sequence[int] = ()) -> None:
    """Queue indexing of these products and street photos once the current transaction commits."""
    queue = IndexQueue()
    queue.add(product_ids=product_ids, street_photo_ids=street_photo_ids)
    queue.flush()


def queue_catalogue_indexing(*, category: str = Category.DRESSES) -> dict[str, int]:
    """Queue every product and street photo of a category; tasks skip what is already done."""
    product_ids = list(Product.objects.filter(category=category).order_by("id").values_list("id", flat=True))
    street_ids = list(
        StreetPhoto.objects.filter(product__category=category).order_by("id").values_list("id", flat=True)
    )
    queue_indexing(product_ids=product_ids, street_photo_ids=street_ids)
    return {"products": len(product_ids), "street_photos": len(street_ids)}
