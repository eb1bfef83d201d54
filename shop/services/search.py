"""Upload search: a shopper's photo goes through the same features → embedding → cdist path.

A search always ends: done, failed with a message, or failed by `end_overdue_searches` once it
has been pending SEARCH_TIMEOUT_SECONDS (a lost message or a dead worker). It is tried once:
a worker that dies on a photo fails that search rather than taking the photo again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypedDict
from uuid import UUID

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from shop import runtime, selectors
from shop.models import Category, ModelVersion, SearchQuery
from shop.services import colours, enqueue
from similarity.artifacts import ArtifactError
from similarity.images import ImageError, ImageHeader

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger("shop")

# Shown to shoppers; never an exception's text, which may name server paths.
UNAVAILABLE = "Search is unavailable right now; please try again."
OVERDUE = "This search took too long and was stopped. Please try again."
WORKER_DIED = "Your photo could not be processed. Please try another photo."
UNREADABLE = "Your photo could not be read. Please try another photo."
# The clean copy kept and shown: large enough for the results page, small enough to be cheap.
SHOWN_PHOTO_SIDE = 1024


class Match(TypedDict):
    """One product of a search's results, as stored in SearchQuery.results."""

    product_id: int
    distance: float


class SearchBusy(Exception):
    """SEARCH_MAX_PENDING searches are already waiting for a worker."""


class PhotoUnreadable(ImageError):
    """The stored upload could not be opened."""


class SearchUnavailable(Exception):
    """The shop cannot search now (no model yet, a backbone being changed); the message is for shoppers."""


def pending_searches() -> int:
    """Searches waiting for a worker, not counting overdue ones (they are about to be failed)."""
    since = timezone.now() - timedelta(seconds=settings.SEARCH_TIMEOUT_SECONDS)
    return SearchQuery.objects.filter(status=SearchQuery.Status.PENDING, created_at__gte=since).count()


def check_capacity() -> None:
    """Raise SearchBusy when SEARCH_MAX_PENDING searches already wait (checked before reading an upload)."""
    if pending_searches() >= settings.SEARCH_MAX_PENDING:
        raise SearchBusy


def create_search_query(
    *,
    image: UploadedFile[bytes],
    header: ImageHeader,
    bbox: tuple[int, int, int, int] | None,
    category: str = Category.DRESSES,
) -> SearchQuery:
    """Store a validated upload and queue the search (within ``category``) once the row is committed."""
    check_capacity()
    left, top, width, height = bbox if bbox else (None, None, None, None)
    upright_width, upright_height = header.upright_size
    query = SearchQuery(
        category=category,
        bbox_left=left,
        bbox_top=top,
        bbox_width=width,
        bbox_height=height,
        width=upright_width,
        height=upright_height,
    )
    # Stored under our own name and the detected format's extension, never the shopper's file
    # name, in storage no URL maps to; the worker replaces it with a clean copy.
    query.image.save(f"{query.pk}-upload.{header.extension}", image, save=False)

    def fail(error: Exception) -> None:
        SearchQuery.objects.filter(pk=query.pk).update(
            status=SearchQuery.Status.FAILED, error=UNAVAILABLE, finished_at=timezone.now()
        )
        _delete_file(query.image.name)

    with transaction.atomic():
        query.save()
        enqueue.on_commit_or_fail(
            lambda: enqueue.run_search(str(query.pk), expires=settings.SEARCH_TIMEOUT_SECONDS), fail=fail
        )
    return query


def end_overdue_searches(*, query_id: UUID | None = None) -> int:
    """Fail searches pending longer than SEARCH_TIMEOUT_SECONDS (one, or all); how many ended."""
    cutoff = timezone.now() - timedelta(seconds=settings.SEARCH_TIMEOUT_SECONDS)
    overdue = SearchQuery.objects.filter(status=SearchQuery.Status.PENDING, created_at__lt=cutoff)
    if query_id is not None:
        overdue = overdue.filter(pk=query_id)
    uploads = list(overdue.filter(photo_ready=False).values_list("image", flat=True))
    ended = overdue.update(status=SearchQuery.Status.FAILED, error=OVERDUE, finished_at=timezone.now())
    if ended:
        logger.warning("ended %d overdue search(es)", ended)
        # Uploads no worker cleaned: their metadata goes now, not at the purge. A worker that took the
        # search at this moment fails on the missing file, and its outcome is not recorded anyway.
        for name in uploads:
            _delete_file(name)
    return ended


def seconds_left(*, created_at: datetime) -> float:
    """Time until a search created then is overdue (0 when it already is)."""
    deadline = created_at + timedelta(seconds=settings.SEARCH_TIMEOUT_SECONDS)
    return max(0.0, (deadline - timezone.now()).total_seconds())


def purge_searches(*, older_than: timedelta | None = None) -> int:
    """Delete searches older than SEARCH_RETENTION_HOURS with their photos, and orphaned photo files."""
    age = older_than if older_than is not None else timedelta(hours=settings.SEARCH_RETENTION_HOURS)
    cutoff = timezone.now() - age
    old = SearchQuery.objects.filter(created_at__lt=cutoff)
    deleted = 0
    for pk, name in old.values_list("pk", "image").iterator():
        _delete_file(name)
        deleted += SearchQuery.objects.filter(pk=pk).delete()[0]
    _delete_orphans(cutoff)
    # The sessions remember whose photo is whose; expired ones go with the searches.
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    return deleted


def _delete_file(name: str | None) -> None:
    if name:
        try:
            SearchQuery._meta.get_field("image").storage.delete(name)
        except OSError:
            logger.warning("could not delete search photo %s", name, exc_info=True)


def _delete_orphans(cutoff: datetime) -> None:
    """Files older than the cutoff that no row names (a crash between the file and the row)."""
    storage = SearchQuery._meta.get_field("image").storage
    known = set(SearchQuery.objects.values_list("image", flat=True))

    def walk(folder: str) -> Iterator[str]:
        try:
            folders, files = storage.listdir(folder)
        except FileNotFoundError:
            return
        for name in files:
            yield f"{folder}/{name}" if folder else name
        for sub in folders:
            yield from walk(f"{folder}/{sub}" if folder else sub)

    for name in walk(""):
        if name not in known and storage.get_modified_time(name) < cutoff:
            _delete_file(name)


def nearest_products(version: ModelVersion, vector: np.ndarray) -> list[Match]:
    """The catalogue's nearest products to a vector, one listing per garment, nearest first."""
    from shop.services import similar_lists

    found = similar_lists.ranked_products(version, vector)
    if found is None:
        raise SearchUnavailable("The catalogue is not indexed yet, or is changing; please try again.")
    return [{"product_id": product_id, "distance": distance} for product_id, distance in found[0]]


def run_search_query(*, query_id: UUID) -> None:
    """Worker entry: fill in a query's results, or its error."""
    from similarity.embedding import embed, with_colour
    from similarity.images import BadBox, backbone_input

    query = SearchQuery.objects.filter(pk=query_id).first()
    if query is None or query.status != SearchQuery.Status.PENDING or end_overdue_searches(query_id=query.pk):
        return
    # Tried once: a second delivery of a started search means a worker died on this photo.
    claimed = SearchQuery.objects.filter(
        pk=query.pk, status=SearchQuery.Status.PENDING, started_at__isnull=True
    ).update(started_at=timezone.now())
    if not claimed:
        logger.warning("search %s was redelivered after its worker died: failing it", query_id)
        _fail(query, WORKER_DIED)
        return
    try:
        image, bbox = _clean_copy(query)
        version = selectors.active_version(category=query.category)
        if version is None:
            raise SearchUnavailable("The catalogue is not indexed yet: no similarity model is active.")
        backbone = runtime.get_backbone()
        if backbone.weights_id != version.weights_id:
            raise SearchUnavailable("The search index is being rebuilt for a new backbone; try again shortly.")
        features = backbone.extract_images([backbone_input(image, bbox=bbox, size=backbone.input_size)])
        tower = runtime.tower_for(version)
        # In the version's index space with no colour part: a photo search ranks by shape (the
        # chips then refine it by colour), see similarity.embedding.with_colour.
        vector = with_colour(embed(tower, features), None, colours.colour_weight(version))[0]
        results = nearest_products(version, vector)
        _finish(query, status=SearchQuery.Status.DONE, results=results, version=version, vector=vector.tobytes())
    except (ImageError, BadBox, SearchUnavailable) as error:  # messages written for shoppers
        logger.warning("search %s failed: %s", query_id, error)
        _fail(query, str(error))
    except (OSError, ArtifactError):  # a model file (missing, corrupted), the disk: the shop's trouble, not the photo's
        logger.exception("search %s failed", query_id)
        _fail(query, UNAVAILABLE)
    except SoftTimeLimitExceeded:  # the task's time limit (CELERY_SEARCH_TIME_LIMIT): end it now, not at the sweep
        logger.warning("search %s stopped at its time limit", query_id)
        _fail(query, OVERDUE)
    except Exception:
        logger.exception("search %s failed", query_id)
        _fail(query, "Search failed unexpectedly.")
        raise


def _fail(query: SearchQuery, error: str) -> None:
    """Record a failure; an upload that never became a clean copy is deleted now, not at the purge."""
    _finish(query, status=SearchQuery.Status.FAILED, error=error)
    if not query.photo_ready:
        _delete_file(query.image.name)


def _finish(query: SearchQuery, *, status: str, **fields: Any) -> None:
    """Record the outcome unless the search already ended (overdue) meanwhile."""
    SearchQuery.objects.filter(pk=query.pk, status=SearchQuery.Status.PENDING).update(
        status=status, finished_at=timezone.now(), **fields
    )


def _clean_copy(query: SearchQuery) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """Decode the upload once, keep a re-encoded copy without metadata and delete the original.

    Returns the decoded, upright image and the shopper's box scaled to it (JPEG draft decoding
    may have decoded a phone photo at a fraction of its size).
    """
    from similarity.images import clean_jpeg, open_image

    original = query.image.name
    try:
        with query.image.open("rb") as handle:
            image = open_image(
                handle,
                max_pixels=settings.UPLOAD_MAX_PIXELS,
                max_bytes=settings.UPLOAD_MAX_BYTES,
                upright=True,
                max_side=SHOWN_PHOTO_SIDE,
            )
    except OSError as error:  # the stored upload is gone or unreadable
        raise PhotoUnreadable(UNREADABLE) from error
    if not query.photo_ready:
        # upload_to adds today's folder to the name.
        query.image.save(f"{query.pk}.jpg", ContentFile(clean_jpeg(image, longest=SHOWN_PHOTO_SIDE)), save=False)
        SearchQuery.objects.filter(pk=query.pk).update(image=query.image.name, photo_ready=True)
        query.photo_ready = True
        _delete_file(original)
    bbox = query.bbox
    if bbox is not None and query.width and query.height:
        scale_x, scale_y = image.width / query.width, image.height / query.height
        left, top, width, height = bbox
        bbox = (
            int(left * scale_x),
            int(top * scale_y),
            max(1, round(width * scale_x)),
            max(1, round(height * scale_y)),
        )
    return image, bbox
