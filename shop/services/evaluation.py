"""The Street2Shop protocol over stored features: street crops rank every product of a category."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db.models import QuerySet

from shop import selectors
from shop.models import Feature, ModelVersion, Split, vector_from_bytes


@dataclass
class EvaluationData:
    """Street-crop queries and the shop-image gallery of one category, as raw backbone features."""

    queries: np.ndarray
    query_labels: np.ndarray
    gallery: np.ndarray
    gallery_labels: np.ndarray

    @property
    def gallery_products(self) -> int:
        return len(np.unique(self.gallery_labels)) if len(self.gallery_labels) else 0


def _labelled(features: QuerySet[Feature], *, image: str) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, product labels) of stored features, in image order, read in one joined query."""
    labels: list[int] = []
    vectors: list[np.ndarray] = []
    rows = features.order_by(f"{image}_id").values_list(f"{image}__product_id", "vector")
    for product_id, blob in rows.iterator(chunk_size=2000):
        labels.append(product_id)
        vectors.append(vector_from_bytes(blob))
    matrix = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return matrix, np.array(labels, dtype=np.int64)


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
    """(features, product labels) of the shop images of a category that have features."""
    features = Feature.objects.filter(weights_id=weights_id, product_image__product__category=category)
    if product_ids is not None:
        features = features.filter(product_image__product_id__in=product_ids)
    return _labelled(features, image="product_image")


def evaluation_data(*, category: str, split: str, weights_id: str) -> EvaluationData:
    queries, query_labels = street_features(category=category, split=split, weights_id=weights_id)
    gallery, gallery_labels = shop_features(category=category, weights_id=weights_id)
    return EvaluationData(queries, query_labels, gallery, gallery_labels)


def evaluate_features(data: EvaluationData, *, tower=None) -> dict:
    """top-1/5/10/20 of raw features (cosine) or, with a tower, of its embeddings (euclidean)."""
    from similarity.evaluation import top_k_accuracy

    if tower is None:
        return top_k_accuracy(data.queries, data.query_labels, data.gallery, data.gallery_labels, metric="cosine")
    from similarity.siamese import embed

    return top_k_accuracy(
        embed(tower, data.queries), data.query_labels, embed(tower, data.gallery), data.gallery_labels,
        metric="euclidean",
    )


def evaluate_category(*, category: str, split: str = Split.TEST, version: ModelVersion | None = None) -> dict:
    """Baseline and (where a version is given) siamese figures, with counts and the weights id."""
    from shop import runtime

    weights_id = version.weights_id if version else selectors.current_weights_id()
    if not weights_id:
        raise ValueError("no features are stored yet: index the catalogue first")
    data = evaluation_data(category=category, split=split, weights_id=weights_id)
    result: dict = {
        "category": category,
        "split": split,
        "weights_id": weights_id,
        "queries": int(len(data.queries)),
        "gallery": int(data.gallery_products),
        "baseline": evaluate_features(data),
    }
    if version is not None:
        tower = runtime.get_tower(
            version_id=version.pk, artifact_path=version.artifact_path, checksum=version.checksum
        )
        result["version"] = version.pk
        result["siamese"] = evaluate_features(data, tower=tower)
        for key in ("backbone", "validation", "gate"):
            if key in (version.metrics or {}):
                result[key] = version.metrics[key]
    return result
