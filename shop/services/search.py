"""Upload search: a shopper's photo goes through the same features → embedding → cdist path."""

from __future__ import annotations

import logging
import threading
from uuid import UUID

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from shop import runtime, selectors
from shop.models import Category, ModelVersion, ProductEmbedding, SearchQuery

logger = logging.getLogger("shop")

_matrix_lock = threading.Lock()
# version id -> (embedding count, product ids, float64 matrix); rebuilt when the count changes.
_matrices: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}


def create_search_query(*, image: UploadedFile, bbox: tuple[int, int, int, int] | None) -> SearchQuery:
    """Store a validated upload and queue the search once the row is committed."""
    from workers.tasks import run_search

    left, top, width, height = bbox if bbox else (None, None, None, None)
    with transaction.atomic():
        query = SearchQuery.objects.create(
            image=image, bbox_left=left, bbox_top=top, bbox_width=width, bbox_height=height
        )
        transaction.on_commit(lambda: run_search.delay(str(query.pk)))
    return query


def _version_matrix(version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    """The version's product ids and a float64 matrix, cached per process until embeddings change."""
    from similarity.neighbours import prepare_matrix

    count = ProductEmbedding.objects.filter(version=version).count()
    with _matrix_lock:
        cached = _matrices.get(version.pk)
        if cached is None or cached[0] != count:
            ids, matrix = selectors.embedding_matrix(version=version)
            cached = (count, ids, prepare_matrix(matrix) if len(ids) else matrix)
            _matrices[version.pk] = cached
        return cached[1], cached[2]


def run_search_query(*, query_id: UUID) -> None:
    """Worker entry: fill in a query's results, or its error."""
    from similarity.images import BadBox, ImageError, crop_box, open_image
    from similarity.neighbours import top_k
    from similarity.siamese import embed

    query = SearchQuery.objects.filter(pk=query_id).first()
    if query is None or query.status != SearchQuery.Status.PENDING:
        return
    try:
        version = selectors.active_version(category=Category.DRESSES)
        if version is None:
            raise LookupError("The catalogue is not indexed yet: no similarity model is active.")
        backbone = runtime.get_backbone()
        if backbone.weights_id != version.weights_id:
            raise LookupError("The search index is being rebuilt for a new backbone; try again shortly.")
        with query.image.open("rb") as handle:
            image = open_image(handle, max_pixels=settings.IMAGE_MAX_PIXELS)
        if query.bbox:
            image = crop_box(image, query.bbox)
        features = backbone.extract_images([image])
        tower = runtime.get_tower(version_id=version.pk, artifact_path=version.artifact_path, checksum=version.checksum)
        vector = embed(tower, features)[0]
        ids, matrix = _version_matrix(version)
        if len(ids) == 0:
            raise LookupError("The catalogue is not indexed yet.")
        indices, distances = top_k(vector, matrix, k=settings.SIMILAR_ITEMS)
        results = [
            {"product_id": int(ids[i]), "distance": round(float(d), 6)} for i, d in zip(indices, distances)
        ]
        SearchQuery.objects.filter(pk=query.pk).update(
            status=SearchQuery.Status.DONE, results=results, version=version, finished_at=timezone.now()
        )
    except (ImageError, BadBox, LookupError, OSError) as error:
        logger.warning("search %s failed: %s", query_id, error)
        SearchQuery.objects.filter(pk=query.pk).update(
            status=SearchQuery.Status.FAILED, error=str(error), finished_at=timezone.now()
        )
    except Exception:
        logger.exception("search %s failed", query_id)
        SearchQuery.objects.filter(pk=query.pk).update(
            status=SearchQuery.Status.FAILED, error="Search failed unexpectedly.", finished_at=timezone.now()
        )
        raise
