"""Thin task entry points: take ids, call a service. Every task is safe to run twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from celery import shared_task

from shop.services import enqueue, indexing, model_versions, recommendations, search, training

P = ParamSpec("P")
R = TypeVar("R")


def task(name: str, **options: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """celery's shared_task, typed: celery ships no type information, so its decorator would hide
    the signatures below from type checkers. The task it makes is called like the function."""
    return cast("Callable[[Callable[P, R]], Callable[P, R]]", shared_task(name=name, **options))


@task(enqueue.INDEX_PRODUCTS)
def index_products(product_ids: Sequence[int]) -> int:
    """Compute backbone features and active-version embeddings for these products."""
    return indexing.index_products(product_ids=list(product_ids))


@task(enqueue.INDEX_STREET_PHOTOS)
def index_street_photos(street_photo_ids: Sequence[int]) -> int:
    """Compute backbone features of these street crops (used by training and evaluation)."""
    return indexing.index_street_photos(street_photo_ids=list(street_photo_ids))


# Acked on receipt, not late: a run can outlast the broker's visibility timeout, and a
# redelivered copy must not start a second training. A lost run is marked failed by
# training.fail_stalled_runs once its heartbeat stops.
@task(enqueue.TRAIN_MODEL_VERSION, acks_late=False)
def train_model_version(version_id: int) -> None:
    """Train, evaluate and embed the catalogue for a queued ModelVersion."""
    training.run_training(version_id=version_id)


@task(enqueue.EMBED_FOR_VERSION)
def embed_for_version(version_id: int, product_ids: Sequence[int]) -> int:
    """Embed products a ready or active version lacks (added since it was built)."""
    return model_versions.embed_for_version(version_id=version_id, product_ids=list(product_ids))


@task(enqueue.RUN_SEARCH)
def run_search(query_id: str) -> None:
    """Find the products nearest to an uploaded photo."""
    search.run_search_query(query_id=UUID(query_id))


@task(enqueue.RANK_SIMILAR_SLICE)
def rank_similar_slice(version_id: int, low: int, high: int, number: int) -> None:
    """Rank one slice (products with ids in [low, high)) of a training run's similar-item lists."""
    training.rank_training_slice(version_id=version_id, low=low, high=high, number=number)


@task(enqueue.END_OVERDUE_SEARCHES)
def end_overdue_searches() -> int:
    """Fail searches pending past SEARCH_TIMEOUT_SECONDS (periodic)."""
    return search.end_overdue_searches()


@task(enqueue.PURGE_SEARCHES)
def purge_searches() -> int:
    """Delete searches and photos older than SEARCH_RETENTION_HOURS (periodic)."""
    return search.purge_searches()


@task(enqueue.RERANK_SIMILAR_LISTS)
def rerank_similar_lists(version_id: int, product_ids: Sequence[int], removed_ids: Sequence[int]) -> int:
    """Refill lists that products left (deleted or re-embedded), when too many for the request to do."""
    return recommendations.rerank_lists(
        version_id=version_id, product_ids=list(product_ids), removed_ids=list(removed_ids)
    )
