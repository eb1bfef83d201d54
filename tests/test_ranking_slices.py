"""A training run's similar-item lists, built by slice tasks: the last slice ends the run, a failed one fails it."""

from __future__ import annotations

import numpy as np
import pytest

from shop.models import ModelVersion, Product, ProductEmbedding, SimilarProduct, vector_to_bytes
from shop.services import embedding_index, recommendations, training
from tests.factories import make_similar, store_model_file

Status = ModelVersion.Status


@pytest.fixture(autouse=True)
def _fresh_indexes(settings):
    settings.RANKING_SLICE_SIZE = 7
    embedding_index.forget()
    yield
    embedding_index.forget()


# Every run here ends with a model file, which activation checks: in the test's own folder.
pytestmark = pytest.mark.usefixtures("model_storage")


def _embedding_run(products: list[Product], *, gate_passed: bool = True) -> ModelVersion:
    """A version at the end of training: embedded, evaluated, waiting for its lists."""
    version = ModelVersion.objects.create(
        status=Status.EMBEDDING, metrics={"gate": {"passed": gate_passed, "reason": "test"}}, weights_id="w"
    )
    store_model_file(version)
    vectors = np.random.default_rng(version.pk).normal(size=(len(products), 8)).astype(np.float32)
    ProductEmbedding.objects.bulk_create(
        [ProductEmbedding(product=p, version=version, vector=vector_to_bytes(v)) for p, v in zip(products, vectors)]
    )
    return version


def _run_slices(version: ModelVersion, order=None) -> list[tuple[int, int]]:
    bounds = recommendations.slice_bounds(version_id=version.pk)
    if "total" not in ModelVersion.objects.get(pk=version.pk).progress:
        ModelVersion.objects.filter(pk=version.pk).update(progress={"stage": "ranking", "total": len(bounds)})
    for number in order if order is not None else range(len(bounds)):
        low, high = bounds[number]
        training.rank_training_slice(version_id=version.pk, low=low, high=high, number=number)
    return bounds


@pytest.mark.django_db
def test_it_finishes_the_run_and_activates_it_when_the_last_slice_is_done():
    products = [Product.objects.create(title=f"dress {i}") for i in range(30)]
    version = _embedding_run(products)
    bounds = recommendations.slice_bounds(version_id=version.pk)
    ModelVersion.objects.filter(pk=version.pk).update(progress={"stage": "ranking", "total": len(bounds)})

    for number in (3, 0, 1):  # in any order, and a redelivered slice counts once
        training.rank_training_slice(
            version_id=version.pk, low=bounds[number][0], high=bounds[number][1], number=number
        )
    training.rank_training_slice(version_id=version.pk, low=bounds[0][0], high=bounds[0][1], number=0)
    version.refresh_from_db()
    assert len(bounds) == 5
    assert version.status == Status.EMBEDDING and version.progress["done"] == 3

    _run_slices(version, order=[2, 4])
    version.refresh_from_db()
    assert version.status == Status.ACTIVE
    assert SimilarProduct.objects.filter(version=version).count() == 300


@pytest.mark.django_db
def test_it_leaves_a_refused_run_ready_not_active():
    products = [Product.objects.create(title=f"dress {i}") for i in range(12)]
    version = _embedding_run(products, gate_passed=False)

    _run_slices(version)

    version.refresh_from_db()
    assert version.status == Status.READY


@pytest.mark.django_db
def test_it_fails_the_run_when_one_slice_fails_and_pages_keep_the_active_lists(monkeypatch):
    products = [Product.objects.create(title=f"dress {i}") for i in range(30)]
    active = ModelVersion.objects.create(status=Status.ACTIVE, weights_id="w")
    make_similar(products[0], products[1:11], active)
    version = _embedding_run(products)
    bounds = recommendations.slice_bounds(version_id=version.pk)
    real_rank_slice = recommendations.rank_slice

    def rank_slice(*, version_id: int, low: int, high: int) -> int:
        if low == bounds[2][0]:
            raise MemoryError("out of memory in slice")
        return real_rank_slice(version_id=version_id, low=low, high=high)

    monkeypatch.setattr(training, "rank_slice", rank_slice)
    _run_slices(version)

    version.refresh_from_db()
    active.refresh_from_db()
    assert version.status == Status.FAILED
    assert "ranking slice 2" in version.error and "out of memory" in version.error
    assert active.status == Status.ACTIVE
    assert list(
        SimilarProduct.objects.filter(version=active, product=products[0]).values_list("recommendation_id", flat=True)
    ) == [p.pk for p in products[1:11]]
    # Slices after the failure wrote nothing more for the failed run.
    written = set(SimilarProduct.objects.filter(version=version).values_list("product_id", flat=True))
    assert all(not (bounds[3][0] <= product_id < bounds[4][1]) for product_id in written)
