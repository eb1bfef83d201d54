"""Reads: what pages, the admin and commands query, in one place (services keep only the reads of their own writes: row locks, batches)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import numpy as np
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, prefetch_related_objects

from shop.models import (
    Category,
    Feature,
    ModelVersion,
    PhotoDownload,
    Product,
    ProductEmbedding,
    ProductImage,
    SearchQuery,
    SimilarProduct,
    StreetPhoto,
    vector_from_bytes,
)


def active_version(*, category: str = Category.DRESSES) -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE, category=category).first()


def running_version() -> ModelVersion | None:
    from shop.models import RUNNING_STATUSES

    return ModelVersion.objects.filter(status__in=RUNNING_STATUSES).order_by("id").first()


def current_weights_id() -> str | None:
    """The backbone weights id of the newest stored feature (what the workers are using)."""
    return Feature.objects.order_by("-id").values_list("weights_id", flat=True).first()


def _images() -> Prefetch:
    return Prefetch("images", queryset=ProductImage.objects.order_by("position", "id"))


def _with_images(queryset: QuerySet[Product]) -> QuerySet[Product]:
    return queryset.prefetch_related(_images())


def product_list(*, category: str | None = None) -> QuerySet[Product]:
    queryset = Product.objects.all()
    if category:
        queryset = queryset.filter(category=category)
    return _with_images(queryset.order_by("id"))


def _ranked_rows(*, product: Product, version: ModelVersion | None, k: int) -> list[SimilarProduct]:
    if version is None:
        return []
    rows = SimilarProduct.objects.filter(version=version, product=product).select_related("recommendation")
    return list(rows.order_by("ranking")[:k])


def similar_products(*, product: Product, version: ModelVersion | None, k: int = 10) -> list[SimilarProduct]:
    """The ranked similar-items rows of a product under a version, nearest first (2 queries)."""
    rows = _ranked_rows(product=product, version=version, k=k)
    prefetch_related_objects([row.recommendation for row in rows], _images())
    return rows


def product_with_version(*, product_id: int) -> tuple[Product, ModelVersion | None]:
    """A product with its photos, and its category's active version (3 queries)."""
    product = _with_images(Product.objects.filter(pk=product_id)).get()
    return product, active_version(category=product.category)


def products_by_ids(*, ids: Sequence[int]) -> list[Product]:
    """Products in the order of `ids`, skipping ones deleted since."""
    found = {p.pk: p for p in _with_images(Product.objects.filter(pk__in=ids))}
    return [found[i] for i in ids if i in found]


def embedding_matrix(*, version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    """(product ids, float32 matrix) of every embedding stored for a version."""
    rows = list(
        ProductEmbedding.objects.filter(version=version, product__category=version.category)
        .order_by("product_id")
        .values_list("product_id", "vector")
    )
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.stack([vector_from_bytes(r[1]) for r in rows])
    return ids, matrix


def image_features(
    *, weights_id: str, product_image_ids: Sequence[int] | None = None, street_photo_ids: Sequence[int] | None = None
) -> dict[int, np.ndarray]:
    """Stored vectors of the given product images or street photos, keyed by their id."""
    queryset = Feature.objects.filter(weights_id=weights_id)
    if product_image_ids is not None:
        queryset = queryset.filter(product_image_id__in=product_image_ids)
        key = "product_image_id"
    elif street_photo_ids is not None:
        queryset = queryset.filter(street_photo_id__in=street_photo_ids)
        key = "street_photo_id"
    else:
        raise ValueError("name product_image_ids or street_photo_ids")
    return {row[0]: vector_from_bytes(row[1], row[2]) for row in queryset.values_list(key, "vector", "dtype")}


def indexing_progress(*, category: str = Category.DRESSES) -> dict[str, int]:
    """How many images of a category have features under the current weights, and embeddings."""
    weights_id = current_weights_id()
    images = ProductImage.objects.filter(product__category=category)
    street = StreetPhoto.objects.filter(product__category=category)
    done_images = done_street = 0
    if weights_id:
        done_images = images.filter(
            Exists(Feature.objects.filter(product_image=OuterRef("pk"), weights_id=weights_id))
        ).count()
        done_street = street.filter(
            Exists(Feature.objects.filter(street_photo=OuterRef("pk"), weights_id=weights_id))
        ).count()
    version = active_version(category=category)
    products = Product.objects.filter(category=category).count()
    embedded = ProductEmbedding.objects.filter(version=version).count() if version else 0
    return {
        "shop_images": images.count(),
        "shop_images_done": done_images,
        "street_photos": street.count(),
        "street_photos_done": done_street,
        "products": products,
        "products_embedded": embedded,
    }


# Enough ids per query to stay under SQLite's limit on bound parameters.
_IN_BATCH = 500


def failed_photo_ids() -> set[int]:
    """Photos whose last download failed; a photo photos.txt has no URL for is not counted."""
    failed = PhotoDownload.objects.exclude(outcome__in=[PhotoDownload.Outcome.OK, PhotoDownload.Outcome.NOT_LISTED])
    return set(failed.values_list("photo_id", flat=True))


def photo_downloads(*, photo_ids: Sequence[int]) -> dict[int, PhotoDownload]:
    """The recorded download of each of these photos that has one, keyed by photo id."""
    ids = list(photo_ids)
    found: dict[int, PhotoDownload] = {}
    for start in range(0, len(ids), _IN_BATCH):
        for row in PhotoDownload.objects.filter(photo_id__in=ids[start : start + _IN_BATCH]):
            found[row.photo_id] = row
    return found


def search_query(*, query_id: UUID) -> SearchQuery | None:
    return SearchQuery.objects.filter(pk=query_id).first()


def catalogue_answers() -> bool:
    """One cheap query: whether the database answers (and holds any product), for health checks."""
    return Product.objects.exists()


def products_with_index_state(queryset: QuerySet[Product]) -> QuerySet[Product]:
    """Products annotated with whether they have features and an embedding under their category's live version."""
    return queryset.annotate(
        has_features=Exists(Feature.objects.filter(product_image__product=OuterRef("pk"))),
        # Each product is served by the active version of its own category.
        has_embedding=Exists(
            ProductEmbedding.objects.filter(
                product=OuterRef("pk"),
                version__status=ModelVersion.Status.ACTIVE,
                version__category=OuterRef("category"),
            )
        ),
    )


def search_status(*, query_id: UUID) -> str | None:
    """A search query's status alone (one indexed read by primary key), or None for an unknown id."""
    return SearchQuery.objects.filter(pk=query_id).values_list("status", flat=True).first()


def search_state(*, query_id: UUID) -> tuple[str, datetime] | None:
    """A search's status and creation time (one read by primary key), or None for an unknown id."""
    return SearchQuery.objects.filter(pk=query_id).values_list("status", "created_at").first()


def wait_for_search_status(*, query_id: UUID, timeout: float, interval: float = 0.05) -> str | None:
    """A query's status once it is no longer pending, or "pending" after `timeout` seconds.

    Re-reads the one row every `interval` seconds (each read its own autocommit statement, so a
    worker's commit is seen at the next read); None as soon as the id is unknown.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        status = search_status(query_id=query_id)
        if status != SearchQuery.Status.PENDING:
            return status
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return status
        time.sleep(min(interval, remaining))


# --- training and evaluation


def model_version(*, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(pk=version_id).first()


def running_version_of(*, category: str) -> ModelVersion | None:
    """The category's queued or running version (at most one: a database constraint)."""
    from shop.models import RUNNING_STATUSES

    return ModelVersion.objects.filter(category=category, status__in=RUNNING_STATUSES).first()


def category_product_ids(*, category: str) -> list[int]:
    return list(Product.objects.filter(category=category).order_by("id").values_list("id", flat=True))


def category_image_ids(*, category: str) -> tuple[list[int], list[int]]:
    """(shop image ids, street photo ids) of a category, in id order."""
    images = ProductImage.objects.filter(product__category=category).order_by("id").values_list("id", flat=True)
    street = StreetPhoto.objects.filter(product__category=category).order_by("id").values_list("id", flat=True)
    return list(images), list(street)


def product_image_ids(*, product_ids: Sequence[int]) -> list[int]:
    return list(ProductImage.objects.filter(product_id__in=product_ids).values_list("id", flat=True))


def sample_product_images(*, category: str, count: int) -> list[ProductImage]:
    """The category's first `count` shop images (a fixed sample, e.g. to time the backbone)."""
    return list(ProductImage.objects.filter(product__category=category).order_by("id")[:count])


def test_product_count(*, category: str) -> int:
    """Products of the category with a test-split street photo (never seen in training)."""
    from shop.models import Split

    return Product.objects.filter(category=category, street_photos__split=Split.TEST).distinct().count()


def products_missing_embedding(*, version: ModelVersion) -> QuerySet[Product]:
    """Products of the version's category that have features under its weights but no embedding."""
    return (
        Product.objects.filter(category=version.category, images__features__weights_id=version.weights_id)
        .exclude(embeddings__version=version)
        .distinct()
    )


def products_without_embedding(*, version: ModelVersion, product_ids: Sequence[int]) -> list[int]:
    """Those of `product_ids` that still exist and have no embedding for the version."""
    missing = Product.objects.filter(pk__in=product_ids).exclude(embeddings__version=version)
    return list(missing.values_list("id", flat=True))


def similar_rows(*, product_id: int, version: ModelVersion) -> list[tuple[int, float]]:
    """A product's stored similar-items list under a version as (product id, distance), nearest first."""
    rows = SimilarProduct.objects.filter(version=version, product_id=product_id).order_by("ranking")
    return list(rows.values_list("recommendation_id", "distance"))


def duplicate_groups(*, product_ids: Sequence[int]) -> dict[int, int | None]:
    """Each product's duplicate group (None: listed once)."""
    return dict(Product.objects.filter(pk__in=product_ids).values_list("id", "duplicate_group"))


def group_members(*, groups: Sequence[int]) -> dict[int, list[Product]]:
    """The listings of each duplicate group, by id (1 query; no photos: they are shown as links)."""
    members: dict[int, list[Product]] = {}
    if groups:
        for product in (
            Product.objects.filter(duplicate_group__in=groups).order_by("id").only("id", "title", "duplicate_group")
        ):
            members.setdefault(product.duplicate_group or 0, []).append(product)
    return members
