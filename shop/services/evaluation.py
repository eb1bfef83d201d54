"""The Street2Shop protocol over stored features: street crops rank every product of a category.

The gallery (every shop photo of the category) is read from the database in chunks and scored as
it streams: memory holds the queries and one chunk, never the whole category's features.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from django.db.models import QuerySet

from shop import selectors
from shop.models import Feature, ModelVersion, Product, Split, vector_from_bytes
from similarity.evaluation import DEFAULT_CHUNK_ROWS, score_towers

# Product ids per gallery query (an IN list): short plans on SQLite and PostgreSQL alike, no sort of the blobs.
PRODUCTS_PER_QUERY = 500

Chunk = tuple[np.ndarray, np.ndarray]


def _labelled(features: QuerySet[Feature], *, image: str) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, product labels) of stored features, in image order, read in one joined query.

    The rows fill one preallocated float32 matrix (no per-row list, no second full-size copy).
    """
    expected = features.count()
    labels = np.empty(expected, dtype=np.int64)
    matrix: np.ndarray | None = None
    count = 0
    rows = features.order_by(f"{image}_id").values_list(f"{image}__product_id", "vector", "dtype")
    for product_id, blob, dtype in rows.iterator(chunk_size=2000):
        vector = vector_from_bytes(blob, dtype)
        if matrix is None:
            matrix = np.empty((max(expected, 1), len(vector)), dtype=np.float32)
        if count == len(matrix):  # rows stored since the count: grow
            matrix = np.concatenate([matrix, np.empty_like(matrix[: max(len(matrix) // 4, 256)])])
            labels = np.concatenate([labels, np.empty(len(matrix) - len(labels), dtype=np.int64)])
        matrix[count] = vector
        labels[count] = product_id
        count += 1
    if matrix is None:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return matrix[:count], labels[:count]


def street_features(
    *, category: str, split: str | None, weights_id: str, product_ids: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, product labels) of the street crops of a category (and split) that have features."""
    features = Feature.objects.filter(weights_id=weights_id, street_photo__product__category=category)
    if split:
        features = features.filter(street_photo__split=split)
    if product_ids is not None:
        features = features.filter(street_photo__product_id__in=product_ids)
    return _labelled(features, image="street_photo")


def shop_features(
    *, category: str, weights_id: str, product_ids: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, product labels) of the shop images of a category that have features (all in memory)."""
    features = Feature.objects.filter(weights_id=weights_id, product_image__product__category=category)
    if product_ids is not None:
        features = features.filter(product_image__product_id__in=product_ids)
    return _labelled(features, image="product_image")


def gallery_chunks(*, category: str, weights_id: str, chunk_size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """(float32 vectors, product ids) of the category's shop-image features, `chunk_size` rows at a time.

    Products come in id order, a few hundred per query; a product's photos may straddle two
    chunks (the streaming evaluation merges them). Each chunk is a fresh array.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    product_ids = list(Product.objects.filter(category=category).order_by("id").values_list("id", flat=True))
    vectors: np.ndarray | None = None
    labels = np.empty(chunk_size, dtype=np.int64)
    count = 0
    for first in range(0, len(product_ids), PRODUCTS_PER_QUERY):
        batch = product_ids[first : first + PRODUCTS_PER_QUERY]
        rows = Feature.objects.filter(weights_id=weights_id, product_image__product_id__in=batch).values_list(
            "product_image__product_id", "vector", "dtype"
        )
        for product_id, blob, dtype in rows.iterator(chunk_size=min(chunk_size, 2000)):
            vector = vector_from_bytes(blob, dtype)
            if vectors is None:
                vectors = np.empty((chunk_size, len(vector)), dtype=np.float32)
            elif len(vector) != vectors.shape[1]:
                raise ValueError(f"features of {weights_id} have {len(vector)} and {vectors.shape[1]} dimensions")
            vectors[count] = vector
            labels[count] = product_id
            count += 1
            if count == chunk_size:
                yield vectors, labels
                vectors, labels, count = np.empty_like(vectors), np.empty_like(labels), 0
    if count and vectors is not None:
        yield vectors[:count], labels[:count]


def evaluate_split(
    *,
    category: str,
    split: str,
    weights_id: str,
    towers: Mapping[str, Any],
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> dict:
    """`score_towers` of the split's street crops against every product of the category, read in chunks."""
    queries, query_labels = street_features(category=category, split=split, weights_id=weights_id)
    chunks = gallery_chunks(category=category, weights_id=weights_id, chunk_size=chunk_size)
    return score_towers(queries, query_labels, chunks, towers)


def evaluate_category(
    *,
    category: str,
    split: str = Split.TEST,
    version: ModelVersion | None = None,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> dict:
    """Baseline and (where a version is given) siamese figures, with counts and the weights id.

    Memory: the split's street-crop features plus one gallery chunk of `chunk_size` rows.
    """
    from shop import runtime

    weights_id = version.weights_id if version else selectors.current_weights_id()
    if not weights_id:
        raise ValueError("no features are stored yet: index the catalogue first")
    towers: dict[str, Any] = {"baseline": None}
    if version is not None:
        towers["siamese"] = runtime.tower_for(version)
    scores = evaluate_split(category=category, split=split, weights_id=weights_id, towers=towers, chunk_size=chunk_size)
    result: dict[str, Any] = {"category": category, "split": split, "weights_id": weights_id, **scores}
    if version is not None:
        result["version"] = version.pk
        # What was recorded when the version was trained, as stored.
        recorded = version.run_metrics.to_json()
        result.update({key: recorded[key] for key in ("backbone", "validation", "gate") if key in recorded})
    return result
