"""The Street2Shop protocol over stored features: street crops rank every product of a category.

The gallery (every shop photo of the category) is read from the database in chunks and scored as
it streams: memory holds the queries and one chunk, never the whole category's features.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from django.db.models import QuerySet

from shop import selectors
from shop.models import Feature, ModelVersion, Product, Split, vector_from_bytes

# Gallery rows per chunk: 2048 x 4096-d is 32 MB as float32 (64 MB once in float64 for cdist).
DEFAULT_CHUNK_ROWS = 2048
# Product ids per gallery query (an IN list): short plans on SQLite and PostgreSQL alike, no sort of the blobs.
PRODUCTS_PER_QUERY = 500

Chunk = tuple[np.ndarray, np.ndarray]


@dataclass
class EvaluationData:
    """Street-crop queries and an in-memory shop-image gallery, as raw backbone features.

    Only for small galleries (training's validation set); a category's whole gallery streams
    through `gallery_chunks` instead.
    """

    queries: np.ndarray
    query_labels: np.ndarray
    gallery: np.ndarray
    gallery_labels: np.ndarray

    @property
    def gallery_products(self) -> int:
        return len(np.unique(self.gallery_labels)) if len(self.gallery_labels) else 0

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        from similarity.evaluation import iter_chunks

        return iter_chunks(self.gallery, self.gallery_labels, rows)


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


def score(
    queries: np.ndarray,
    query_labels: np.ndarray,
    chunks: Iterable[Chunk],
    towers: Mapping[str, Any],
) -> dict:
    """Top-1/5/10/20 of each named scorer in ONE pass over the gallery chunks.

    A tower of None scores the raw features (cosine); a siamese tower scores its embeddings
    (euclidean), embedding each chunk as it arrives. Returns {"queries", "gallery", name: top-k}.
    Raises ValueError when there are no queries or the gallery is empty.
    """
    from similarity.evaluation import View, streaming_top_k_accuracies

    views: dict[str, View] = {}
    for name, tower in towers.items():
        if tower is None:
            views[name] = View(queries, metric="cosine")
        else:
            from similarity.siamese import embed

            views[name] = View(embed(tower, queries), metric="euclidean", transform=partial(embed, tower))
    results = streaming_top_k_accuracies(views, query_labels, chunks)
    first = next(iter(results.values()))
    return {"queries": first["queries"], "gallery": first["gallery"], **results}


def evaluate_split(
    *,
    category: str,
    split: str,
    weights_id: str,
    towers: Mapping[str, Any],
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> dict:
    """`score` of the split's street crops against every product of the category, read in chunks."""
    queries, query_labels = street_features(category=category, split=split, weights_id=weights_id)
    chunks = gallery_chunks(category=category, weights_id=weights_id, chunk_size=chunk_size)
    return score(queries, query_labels, chunks, towers)


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
        towers["siamese"] = runtime.get_tower(
            version_id=version.pk, artifact_path=version.artifact_path, checksum=version.checksum
        )
    scores = evaluate_split(category=category, split=split, weights_id=weights_id, towers=towers, chunk_size=chunk_size)
    result: dict = {"category": category, "split": split, "weights_id": weights_id, **scores}
    if version is not None:
        result["version"] = version.pk
        for key in ("backbone", "validation", "gate"):
            if key in (version.metrics or {}):
                result[key] = version.metrics[key]
    return result
