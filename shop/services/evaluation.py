"""The Street2Shop protocol over stored features: street crops rank every product of a category."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shop import selectors
from shop.models import ModelVersion, ProductImage, Split, StreetPhoto


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


def _stack(vectors: list[np.ndarray], dim_hint: int = 0) -> np.ndarray:
    return np.stack(vectors) if vectors else np.zeros((0, dim_hint), dtype=np.float32)


def street_features(
    *, category: str, split: str | None, weights_id: str, product_ids: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, product labels) of the street crops of a category and split that have features."""
    photos = StreetPhoto.objects.filter(product__category=category)
    if split:
        photos = photos.filter(split=split)
    if product_ids is not None:
        photos = photos.filter(product_id__in=product_ids)
    owners = dict(photos.order_by("id").values_list("id", "product_id"))
    features = selectors.image_features(weights_id=weights_id, street_photo_ids=list(owners))
    ids = [i for i in owners if i in features]
    return _stack([features[i] for i in ids]), np.array([owners[i] for i in ids], dtype=np.int64)


def shop_features(
    *, category: str, weights_id: str, product_ids: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, product labels) of the shop images of a category that have features."""
    images = ProductImage.objects.filter(product__category=category)
    if product_ids is not None:
        images = images.filter(product_id__in=product_ids)
    owners = dict(images.order_by("id").values_list("id", "product_id"))
    features = selectors.image_features(weights_id=weights_id, product_image_ids=list(owners))
    ids = [i for i in owners if i in features]
    return _stack([features[i] for i in ids]), np.array([owners[i] for i in ids], dtype=np.int64)


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
