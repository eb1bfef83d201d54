"""Ranked similar-items rows, rebuilt from a version's embeddings with cdist."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from shop import selectors
from shop.models import ModelVersion, SimilarProduct

logger = logging.getLogger("shop")


def rebuild_recommendations(*, version_id: int) -> int:
    """Replace every ranked row of a version in one transaction; returns the rows written."""
    from similarity.neighbours import all_top_k

    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None or version.status == ModelVersion.Status.FAILED:
        return 0
    product_ids, matrix = selectors.embedding_matrix(version=version)
    rows: list[SimilarProduct] = []
    if len(product_ids) > 1:
        indices, distances = all_top_k(matrix, k=settings.SIMILAR_ITEMS)
        for row, product_id in enumerate(product_ids.tolist()):
            for ranking, (index, distance) in enumerate(zip(indices[row], distances[row]), start=1):
                rows.append(
                    SimilarProduct(
                        version=version,
                        product_id=product_id,
                        recommendation_id=int(product_ids[index]),
                        ranking=ranking,
                        distance=float(distance),
                    )
                )
    with transaction.atomic():
        # Pages read one version's rows; replacing them in one transaction means a page
        # sees either the old list or the new one, never a mix.
        SimilarProduct.objects.filter(version=version).delete()
        SimilarProduct.objects.bulk_create(rows, batch_size=2000)
    logger.info("rebuilt %d similar-item rows for %s", len(rows), version)
    return len(rows)
