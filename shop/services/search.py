"""Upload search: a shopper's photo goes through the same features → embedding → cdist path."""

from __future__ import annotations

import logging
from uuid import UUID

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from shop import runtime, selectors
from shop.models import Category, ModelVersion, SearchQuery
from shop.services import embedding_index

logger = logging.getLogger("shop")


def create_search_query(
    *, image: UploadedFile, image_format: str, bbox: tuple[int, int, int, int] | None
) -> SearchQuery:
    """Store a validated upload and queue the search once the row is committed."""
    from workers.tasks import run_search

    left, top, width, height = bbox if bbox else (None, None, None, None)
    query = SearchQuery(bbox_left=left, bbox_top=top, bbox_width=width, bbox_height=height)
    # Stored under our own name and the detected format's extension, never the shopper's file
    # name: an "evil.html" holding a valid JPEG must not be served back as a web page.
    extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[image_format]
    query.image.save(f"{query.pk}.{extension}", image, save=False)

    def enqueue() -> None:
        try:
            run_search.delay(str(query.pk))
        except Exception:
            SearchQuery.objects.filter(pk=query.pk).update(
                status=SearchQuery.Status.FAILED, error="Search is unavailable right now; please try again."
            )
            raise

    with transaction.atomic():
        query.save()
        transaction.on_commit(enqueue, robust=True)
    return query


def nearest_products(version: ModelVersion, vector: np.ndarray) -> list[dict]:
    """The catalogue's nearest products to an embedding, nearest first, from the process's index."""

    def search(cached: embedding_index.CachedIndex) -> list[dict]:
        indices, distances = cached.index.search(vector[None, :], settings.SIMILAR_ITEMS)
        return [
            {"product_id": int(cached.index.ids[i]), "distance": round(float(d), 6)}
            for i, d in zip(indices[0].tolist(), distances[0].tolist())
            if i >= 0
        ]

    try:
        checked = embedding_index.with_existing_products(
            version.pk, search, lambda results: [r["product_id"] for r in results]
        )
    except embedding_index.ProductsVanished:
        raise LookupError("The catalogue changed during the search; please try again.") from None
    if checked is None:
        raise LookupError("The catalogue is not indexed yet.")
    return checked[1]


def run_search_query(*, query_id: UUID) -> None:
    """Worker entry: fill in a query's results, or its error."""
    from shop.services.indexing import open_stored_image
    from similarity.images import BadBox, ImageError, backbone_input
    from similarity.siamese import embed

    query = SearchQuery.objects.filter(pk=query_id).first()
    if query is None or query.status != SearchQuery.Status.PENDING:
        return
    SearchQuery.objects.filter(pk=query.pk).update(started_at=timezone.now())
    try:
        version = selectors.active_version(category=Category.DRESSES)
        if version is None:
            raise LookupError("The catalogue is not indexed yet: no similarity model is active.")
        backbone = runtime.get_backbone()
        if backbone.weights_id != version.weights_id:
            raise LookupError("The search index is being rebuilt for a new backbone; try again shortly.")
        # Upright: the shopper drew the box on the preview the browser showed, EXIF applied.
        image = backbone_input(open_stored_image(query.image), bbox=query.bbox, size=backbone.input_size)
        features = backbone.extract_images([image])
        tower = runtime.get_tower(version_id=version.pk, artifact_path=version.artifact_path, checksum=version.checksum)
        vector = embed(tower, features)[0]
        results = nearest_products(version, vector)
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
