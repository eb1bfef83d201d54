from __future__ import annotations

import numpy as np
import pytest

from similarity.evaluation import top_k_accuracy

# Products on a line. Product "a" has two shop photos: one far (at 10) and one near the
# first query (at 0.9); "b" sits at 2, "c" at 4.
GALLERY = np.array([[10.0], [2.0], [0.9], [4.0]])
GALLERY_LABELS = ["a", "b", "a", "c"]


def test_it_ranks_products_by_their_best_shop_photo():
    queries = np.array([[1.0], [2.9], [5.0]])
    labels = ["a", "c", "b"]
    # Query at 1.0: a (0.1), b (1.0), c (3.0)    -> "a" rank 1
    # Query at 2.9: b (0.9), c (1.1), a (2.0)    -> "c" rank 2
    # Query at 5.0: c (1.0), b (3.0), a (4.1)    -> "b" rank 2

    result = top_k_accuracy(queries, labels, GALLERY, GALLERY_LABELS, ks=(1, 2, 3), metric="euclidean")

    assert result == {"top1": pytest.approx(1 / 3), "top2": 1.0, "top3": 1.0, "queries": 3, "gallery": 3}


def test_it_counts_distinct_products_not_rows():
    # Both photos of "a" are nearer than "b"; "b" is still second, not third.
    gallery = np.array([[0.0], [0.1], [1.0]])

    result = top_k_accuracy(np.array([[0.05]]), ["b"], gallery, ["a", "a", "b"], ks=(1, 2), metric="euclidean")

    assert result["top1"] == 0.0
    assert result["top2"] == 1.0
    assert result["gallery"] == 2


def test_it_counts_queries_without_their_product_in_the_gallery_as_misses():
    queries = np.array([[1.0], [1.0]])

    result = top_k_accuracy(queries, ["a", "zzz"], GALLERY, GALLERY_LABELS, ks=(1, 3), metric="euclidean")

    assert result["top1"] == 0.5
    assert result["top3"] == 0.5


def test_it_counts_ties_against_the_query():
    # Degenerate features: every product is equally close.
    gallery = np.ones((3, 4))

    result = top_k_accuracy(np.ones((2, 4)), [0, 1], gallery, [0, 1, 2], ks=(1, 2, 3))

    assert result["top1"] == 0.0
    assert result["top2"] == 0.0
    assert result["top3"] == 1.0


def test_it_defaults_to_cosine_and_the_street2shop_ks():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Far in euclidean terms, but pointing the same way as product 0.
    queries = np.array([[100.0, 1.0]])

    result = top_k_accuracy(queries, np.array([0]), gallery, np.array([0, 1, 2]))

    assert set(result) == {"top1", "top5", "top10", "top20", "queries", "gallery"}
    assert result["top1"] == 1.0


def test_it_refuses_empty_or_mislabelled_input():
    with pytest.raises(ValueError):
        top_k_accuracy(np.zeros((0, 1)), [], GALLERY, GALLERY_LABELS)
    with pytest.raises(ValueError):
        top_k_accuracy(np.zeros((1, 1)), ["a"], np.zeros((0, 1)), [])
    with pytest.raises(ValueError):
        top_k_accuracy(np.zeros((2, 1)), ["a"], GALLERY, GALLERY_LABELS)
