"""Ranked similar-items rows, computed from a version's embeddings with cdist."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import transaction

from shop import selectors
from shop.models import ModelVersion, SimilarProduct

logger = logging.getLogger("shop")


def _locked_version(version_id: int) -> ModelVersion | None:
    """The version row, locked: writers of one version's rows take turns (PostgreSQL row lock;
    SQLite's IMMEDIATE transactions serialise writers anyway)."""
    version = ModelVersion.objects.select_for_update().filter(pk=version_id).first()
    if version is None or version.status == ModelVersion.Status.FAILED:
        return None
    return version


def _rows(version: ModelVersion, product_ids: np.ndarray, positions, indices, distances) -> list[SimilarProduct]:
    return [
        SimilarProduct(
            version=version,
            product_id=int(product_ids[position]),
            recommendation_id=int(product_ids[index]),
            ranking=ranking,
            distance=float(distance),
        )
        for position, row_indices, row_distances in zip(positions, indices, distances)
        for ranking, (index, distance) in enumerate(zip(row_indices, row_distances), start=1)
        if index >= 0
    ]


def rebuild_recommendations(*, version_id: int) -> int:
    """Replace every ranked row of a version in one transaction; returns the rows written."""
    from similarity.neighbours import all_top_k

    with transaction.atomic():
        version = _locked_version(version_id)
        if version is None:
            return 0
        product_ids, matrix = selectors.embedding_matrix(version=version)
        rows: list[SimilarProduct] = []
        if len(product_ids) > 1:
            indices, distances = all_top_k(matrix, k=settings.SIMILAR_ITEMS)
            rows = _rows(version, product_ids, range(len(product_ids)), indices, distances)
        # Pages read one version's rows; replacing them in one transaction means a page
        # sees either the old list or the new one, never a mix.
        SimilarProduct.objects.filter(version=version).delete()
        SimilarProduct.objects.bulk_create(rows, batch_size=2000)
    logger.info("rebuilt %d similar-item rows for %s", len(rows), version)
    return len(rows)


def update_recommendations(*, version_id: int, product_ids: Sequence[int]) -> int:
    """Rank newly embedded products, and re-rank the products they now come close to.

    Costs one (new × catalogue) cdist instead of the catalogue squared, so indexing a
    catalogue batch by batch stays linear in the number of batches.
    """
    from scipy.spatial.distance import cdist

    from similarity.neighbours import prepare_matrix, top_k

    k = settings.SIMILAR_ITEMS
    with transaction.atomic():
        version = _locked_version(version_id)
        if version is None:
            return 0
        ids, matrix = selectors.embedding_matrix(version=version)
        if len(ids) < 2:
            return 0
        position = {product_id: i for i, product_id in enumerate(ids.tolist())}
        new = sorted({position[p] for p in product_ids if p in position})
        if not new:
            return 0
        prepared = prepare_matrix(matrix)
        # Each product's current k-th distance: a new product nearer than that enters its list.
        kth = dict(
            SimilarProduct.objects.filter(version=version, ranking=k).values_list("product_id", "distance")
        )
        limit = np.array([kth.get(product_id, np.inf) for product_id in ids.tolist()])
        nearest_new = cdist(prepared[new], prepared).min(axis=0)
        affected = sorted(set(new) | set(np.flatnonzero(nearest_new <= limit).tolist()))
        indices, distances = top_k(prepared[affected], prepared, k=k, exclude=affected)
        rows = _rows(version, ids, affected, np.atleast_2d(indices), np.atleast_2d(distances))
        SimilarProduct.objects.filter(version=version, product_id__in=[int(ids[i]) for i in affected]).delete()
        SimilarProduct.objects.bulk_create(rows, batch_size=2000)
    logger.info("ranked %d new products of %s; %d lists changed", len(new), version, len(affected))
    return len(rows)
