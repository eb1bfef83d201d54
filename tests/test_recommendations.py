"""Ranked similar-items rows: the incremental update agrees with a full rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from shop.models import ModelVersion, Product, ProductEmbedding, SimilarProduct, vector_to_bytes
from shop.services.recommendations import rebuild_recommendations, update_recommendations


def _embed(version: ModelVersion, products: list[Product], rng: np.random.Generator) -> None:
    vectors = rng.normal(size=(len(products), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ProductEmbedding.objects.bulk_create(
        [ProductEmbedding(product=p, version=version, vector=vector_to_bytes(v)) for p, v in zip(products, vectors)]
    )


def _lists(version: ModelVersion) -> dict[int, list[tuple[int, float]]]:
    lists: dict[int, list[tuple[int, float]]] = {}
    for row in SimilarProduct.objects.filter(version=version).order_by("product_id", "ranking"):
        lists.setdefault(row.product_id, []).append((row.recommendation_id, round(row.distance, 6)))
    return lists


@pytest.mark.django_db
def test_it_updates_only_what_new_products_change_and_matches_a_full_rebuild():
    rng = np.random.default_rng(4)
    version = ModelVersion.objects.create(status="active")
    products = [Product.objects.create(title=f"dress {i}") for i in range(45)]
    _embed(version, products[:40], rng)
    rebuild_recommendations(version_id=version.pk)

    _embed(version, products[40:], rng)
    update_recommendations(version_id=version.pk, product_ids=[p.pk for p in products[40:]])
    incremental = _lists(version)
    rebuild_recommendations(version_id=version.pk)

    assert incremental == _lists(version)
    assert len(incremental) == 45 and all(len(rows) == 10 for rows in incremental.values())


@pytest.mark.django_db
def test_it_ranks_with_fewer_products_than_the_strip_holds():
    version = ModelVersion.objects.create(status="active")
    products = [Product.objects.create(title=f"dress {i}") for i in range(4)]
    _embed(version, products[:3], np.random.default_rng(0))
    rebuild_recommendations(version_id=version.pk)
    _embed(version, products[3:], np.random.default_rng(1))

    update_recommendations(version_id=version.pk, product_ids=[products[3].pk])

    assert {pid: len(rows) for pid, rows in _lists(version).items()} == {p.pk: 3 for p in products}


@pytest.mark.django_db
def test_it_writes_nothing_for_a_failed_version():
    version = ModelVersion.objects.create(status="failed")
    product = Product.objects.create(title="dress")
    _embed(version, [product, Product.objects.create(title="other")], np.random.default_rng(0))

    assert rebuild_recommendations(version_id=version.pk) == 0
    assert update_recommendations(version_id=version.pk, product_ids=[product.pk]) == 0
