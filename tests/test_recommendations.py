"""Ranked similar-items rows: slices, incremental updates and the scaled path agree with plain cdist."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from shop.models import ModelVersion, Product, ProductEmbedding, SimilarProduct, vector_to_bytes
from shop.services import embedding_index
from shop.services.recommendations import rebuild_recommendations, slice_bounds, update_recommendations


@pytest.fixture(autouse=True)
def _fresh_indexes():
    # Each test's database is new; a cached index of an earlier test's version id would be wrong.
    embedding_index.forget()
    yield
    embedding_index.forget()


def _embed(version: ModelVersion, products: list[Product], rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    vectors = rng.normal(size=(len(products), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ProductEmbedding.objects.bulk_create(
        [ProductEmbedding(product=p, version=version, vector=vector_to_bytes(v)) for p, v in zip(products, vectors)]
    )
    return vectors


def _active_catalogue(size: int, seed: int) -> tuple[ModelVersion, list[Product], np.random.Generator]:
    return (
        ModelVersion.objects.create(status="active"),
        [Product.objects.create(title=f"dress {i}") for i in range(size)],
        np.random.default_rng(seed),
    )


def _lists(version: ModelVersion) -> dict[int, list[tuple[int, float]]]:
    lists: dict[int, list[tuple[int, float]]] = {}
    for row in SimilarProduct.objects.filter(version=version).order_by("product_id", "ranking"):
        lists.setdefault(row.product_id, []).append((row.recommendation_id, round(row.distance, 6)))
    return lists


def _plain_cdist_lists(products: list[Product], vectors: np.ndarray, k: int = 10) -> dict:
    """The reference: plain cdist over every product, ties to the earlier product."""
    distances = cdist(vectors.astype(np.float64), vectors.astype(np.float64))
    lists = {}
    for row, product in enumerate(products):
        order = [j for j in np.lexsort((np.arange(len(products)), distances[row])) if j != row][:k]
        lists[product.pk] = [(products[j].pk, round(float(distances[row, j]), 6)) for j in order]
    return lists


@pytest.mark.django_db
@pytest.mark.parametrize("cdist_rows", [5000, 0], ids=["plain-cdist", "blas-candidates"])
def test_it_updates_only_what_new_products_change_and_matches_a_full_rebuild(settings, cdist_rows):
    settings.CDIST_MAX_ROWS = cdist_rows
    rng = np.random.default_rng(4)
    version = ModelVersion.objects.create(status="active")
    products = [Product.objects.create(title=f"dress {i}") for i in range(45)]
    vectors = _embed(version, products[:40], rng)
    rebuild_recommendations(version_id=version.pk)

    vectors = np.concatenate([vectors, _embed(version, products[40:], rng)])
    update_recommendations(version_id=version.pk, product_ids=[p.pk for p in products[40:]])
    incremental = _lists(version)
    embedding_index.forget()
    rebuild_recommendations(version_id=version.pk)

    assert incremental == _lists(version) == _plain_cdist_lists(products, vectors)
    assert len(incremental) == 45 and all(len(rows) == 10 for rows in incremental.values())


@pytest.mark.django_db
def test_it_rebuilds_slice_by_slice_to_the_same_lists_as_plain_cdist(settings):
    settings.CDIST_MAX_ROWS = 0
    version = ModelVersion.objects.create(status="ready")
    products = [Product.objects.create(title=f"dress {i}") for i in range(70)]
    vectors = _embed(version, products, np.random.default_rng(7), dim=16)

    bounds = slice_bounds(version_id=version.pk, slice_size=9)
    written = rebuild_recommendations(version_id=version.pk, slice_size=9)

    assert len(bounds) == 8
    assert bounds[0][0] == products[0].pk and bounds[-1][1] == products[-1].pk + 1
    assert all(high == next_low for (_, high), (next_low, _) in itertools.pairwise(bounds))
    assert written == 700
    assert _lists(version) == _plain_cdist_lists(products, vectors)


@pytest.mark.django_db
def test_it_sees_products_embedded_by_another_process_and_reloads_after_a_deletion(settings):
    settings.CDIST_MAX_ROWS = 0
    version, products, rng = _active_catalogue(30, seed=2)
    vectors = _embed(version, products[:25], rng)
    rebuild_recommendations(version_id=version.pk)
    cached = embedding_index.version_index(version)

    # Another worker embeds five products; this process's cached index must pick them up.
    vectors = np.concatenate([vectors, _embed(version, products[25:], rng)])
    assert len(embedding_index.version_index(version).index) == 30
    assert embedding_index.version_index(version) is cached

    deleted = products[3].pk
    products[3].delete()
    # Without a count the deletion goes unseen for a while; the writer below still never uses it.
    assert deleted in embedding_index.version_index(version).index.ids.tolist()
    update_recommendations(version_id=version.pk, product_ids=[p.pk for p in products[25:]])
    refreshed = embedding_index.version_index(version)
    assert refreshed is not cached and deleted not in refreshed.index.ids.tolist()
    rebuild_recommendations(version_id=version.pk)
    kept = [p for i, p in enumerate(products) if i != 3]
    assert _lists(version) == _plain_cdist_lists(kept, np.delete(vectors, 3, axis=0))


@pytest.mark.django_db
def test_it_finds_a_batch_committed_late_under_lower_ids(settings):
    settings.CDIST_MAX_ROWS = 0
    version, products, rng = _active_catalogue(24, seed=6)
    vectors = _embed(version, products[:12], rng)
    late = _embed(version, products[12:18], rng)  # worker A's batch: lower ids, committed last
    vectors = np.concatenate([vectors, late, _embed(version, products[18:], rng)])
    rebuild_recommendations(version_id=version.pk)
    ProductEmbedding.objects.filter(product__in=products[12:18]).delete()
    SimilarProduct.objects.filter(version=version).delete()
    rebuild_recommendations(version_id=version.pk)  # this process now holds 18 rows, the last id past A's
    lower_ids = range(13, 19)
    assert max(lower_ids) < embedding_index.version_index(version).last_id
    ProductEmbedding.objects.bulk_create(
        [
            ProductEmbedding(id=row_id, product=p, version=version, vector=vector_to_bytes(v))
            for row_id, p, v in zip(lower_ids, products[12:18], late)
        ]
    )
    assert len(embedding_index.version_index(version).index) == 18  # not seen by "rows after the last id"

    update_recommendations(version_id=version.pk, product_ids=[p.pk for p in products[12:18]])

    assert len(embedding_index.version_index(version).index) == 24
    assert _lists(version) == _plain_cdist_lists(products, vectors)


@pytest.mark.django_db
def test_it_never_returns_a_deleted_product_from_a_search(settings):
    from shop.services.search import nearest_products

    settings.CDIST_MAX_ROWS = 0
    version = ModelVersion.objects.create(status="active")
    products = [Product.objects.create(title=f"dress {i}") for i in range(30)]
    vectors = _embed(version, products, np.random.default_rng(9))
    first = nearest_products(version, vectors[0])
    nearest = products[0].pk
    products[0].delete()

    second = nearest_products(version, vectors[0])

    assert first[0]["product_id"] == nearest
    assert nearest not in {r["product_id"] for r in second} and len(second) == 10
    assert [r["product_id"] for r in second[:9]] == [r["product_id"] for r in first[1:10]]


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


@pytest.mark.django_db
def test_it_reloads_when_a_product_is_embedded_again_from_new_photos(settings):
    settings.CDIST_MAX_ROWS = 0
    version, products, rng = _active_catalogue(30, seed=12)
    vectors = _embed(version, products, rng)
    rebuild_recommendations(version_id=version.pk)
    embedding_index.version_index(version)

    # New photos: the product's embedding is deleted and made again, under a new id.
    ProductEmbedding.objects.filter(product=products[5]).delete()
    vectors[5] = _embed(version, [products[5]], rng)[0]
    update_recommendations(version_id=version.pk, product_ids=[products[5].pk])

    ids = embedding_index.version_index(version).index.ids.tolist()
    assert len(ids) == len(set(ids)) == 30
    assert _lists(version)[products[5].pk] == _plain_cdist_lists(products, vectors)[products[5].pk]
    assert not SimilarProduct.objects.filter(product_id=products[5].pk, recommendation_id=products[5].pk).exists()
