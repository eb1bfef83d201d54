"""Thin task entry points: take ids, call a service. Every task is safe to run twice."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from celery import shared_task

from shop.services import indexing, recommendations, search, training


@shared_task(name="workers.index_products")
def index_products(product_ids: Sequence[int]) -> int:
    """Compute backbone features and active-version embeddings for these products."""
    return indexing.index_products(product_ids=list(product_ids))


@shared_task(name="workers.index_street_photos")
def index_street_photos(street_photo_ids: Sequence[int]) -> int:
    """Compute backbone features of these street crops (used by training and evaluation)."""
    return indexing.index_street_photos(street_photo_ids=list(street_photo_ids))


@shared_task(name="workers.refresh_recommendations")
def refresh_recommendations(version_id: int) -> int:
    """Rebuild the ranked similar-items rows of one model version."""
    return recommendations.rebuild_recommendations(version_id=version_id)


@shared_task(name="workers.train_model_version")
def train_model_version(version_id: int) -> None:
    """Train, evaluate and embed the catalogue for a queued ModelVersion."""
    training.run_training(version_id=version_id)


@shared_task(name="workers.run_search")
def run_search(query_id: str) -> None:
    """Find the products nearest to an uploaded photo."""
    search.run_search_query(query_id=UUID(query_id))
