from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from similarity.neighbours import all_top_k, prepare_matrix, top_k

LINE = np.array([[0.0], [10.0], [3.0], [-1.0], [7.0]])


def brute_force(queries, matrix, k, *, exclude_self=False, metric="euclidean"):
    """Reference: full stable sort on (distance, row index)."""
    distances = cdist(queries, matrix, metric=metric)
    indices, values = [], []
    for row, line in enumerate(distances):
        order = [j for j in np.lexsort((np.arange(len(line)), line)) if not (exclude_self and j == row)]
        indices.append(order[:k])
        values.append(line[order[:k]])
    return np.array(indices), np.array(values)


def test_it_prepares_a_float64_c_contiguous_copy():
    vectors = np.asfortranarray(np.ones((4, 3), dtype=np.float32))

    matrix = prepare_matrix(vectors)
    vectors[0, 0] = 5

    assert matrix.dtype == np.float64
    assert matrix.flags.c_contiguous
    assert matrix[0, 0] == 1


def test_it_rejects_a_matrix_that_is_not_2d():
    with pytest.raises(ValueError):
        prepare_matrix(np.ones(3))


def test_it_orders_rows_nearest_first():
    indices, distances = top_k(np.array([2.0]), prepare_matrix(LINE), k=3)

    assert indices.tolist() == [2, 0, 3]
    assert distances.tolist() == [1.0, 2.0, 3.0]


def test_it_gives_the_same_answer_for_float32_and_unprepared_input():
    prepared = top_k(np.array([2.0]), prepare_matrix(LINE), k=5)
    raw = top_k(np.array([2.0], dtype=np.float32), LINE.astype(np.float32), k=5)

    assert np.array_equal(prepared[0], raw[0])
    assert np.allclose(prepared[1], raw[1])


def test_it_returns_fewer_rows_when_k_exceeds_the_matrix():
    indices, distances = top_k(np.array([0.0]), LINE, k=50)

    assert indices.tolist() == [0, 3, 2, 4, 1]
    assert distances.shape == (5,)


def test_it_excludes_one_row_or_several():
    assert top_k(np.array([0.0]), LINE, k=2, exclude=0)[0].tolist() == [3, 2]
    assert top_k(np.array([0.0]), LINE, k=2, exclude=[0, 3])[0].tolist() == [2, 4]
    assert top_k(np.array([0.0]), LINE, k=9, exclude=[0, 3])[0].tolist() == [2, 4, 1]


def test_it_excludes_each_query_row_itself():
    indices, distances = top_k(LINE, LINE, k=2, exclude=list(range(len(LINE))))

    assert indices.shape == (5, 2)
    # Row 2 (at 3) has rows 3 and 4 tied at distance 4: the lower index wins.
    assert indices.tolist() == [[3, 2], [4, 2], [0, 3], [0, 2], [1, 2]]
    assert distances[0].tolist() == [1.0, 3.0]


def test_it_pads_rows_that_have_fewer_neighbours_left():
    indices, distances = top_k(LINE[:2], LINE, k=5, exclude=[[0, 1], None])

    assert indices[0].tolist() == [3, 2, 4, -1, -1]
    assert np.isinf(distances[0, 3:]).all()
    assert indices[1].tolist() == [1, 4, 2, 0, 3]


def test_it_breaks_ties_by_row_index_even_across_the_partition_boundary():
    matrix = np.zeros((1000, 2))
    matrix[500] = [0.5, 0.0]

    indices, distances = top_k(np.array([0.5, 0.0]), matrix, k=4)

    assert indices.tolist() == [500, 0, 1, 2]
    assert distances.tolist() == [0.0, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("seed", range(8))
def test_it_matches_a_brute_force_stable_sort_on_tie_heavy_data(seed):
    rng = np.random.default_rng(seed)
    # Small integer coordinates give many exactly equal distances.
    matrix = rng.integers(0, 3, size=(200, 3)).astype(np.float64)
    queries = rng.integers(0, 3, size=(20, 3)).astype(np.float64)

    indices, distances = top_k(queries, matrix, k=7)
    expected_indices, expected_distances = brute_force(queries, matrix, 7)

    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(distances, expected_distances)


def test_it_supports_cosine_distance_and_ranks_zero_vectors_last():
    matrix = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    indices, distances = top_k(np.array([2.0, 0.1]), matrix, k=4, metric="cosine")

    assert indices.tolist() == [1, 3, 2, 0]
    assert np.isnan(distances[-1])


def test_it_refuses_bad_excluded_rows_and_shapes():
    with pytest.raises(IndexError):
        top_k(np.array([0.0]), LINE, exclude=5)
    with pytest.raises(IndexError):
        top_k(np.array([0.0]), LINE, exclude=[-1])
    with pytest.raises(ValueError):
        top_k(LINE[:2], LINE, exclude=[0, 1, 2])
    with pytest.raises(ValueError):
        top_k(np.array([0.0, 1.0]), LINE)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_it_finds_every_rows_neighbours_like_brute_force(metric):
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 3, size=(53, 4)).astype(np.float32)
    matrix[matrix.sum(axis=1) == 0] = 1  # no zero rows: their cosine distances are NaN

    indices, distances = all_top_k(prepare_matrix(matrix), k=10, metric=metric, chunk=7)
    expected_indices, expected_distances = brute_force(matrix, matrix, 10, exclude_self=True, metric=metric)

    assert np.array_equal(indices, expected_indices)
    assert np.allclose(distances, expected_distances)
    assert not (indices == np.arange(len(matrix))[:, None]).any()


def test_it_handles_tiny_catalogues():
    assert all_top_k(np.zeros((1, 3)), k=10)[0].shape == (1, 0)
    assert all_top_k(np.zeros((0, 3)), k=10)[0].shape == (0, 0)
    assert all_top_k(np.eye(3), k=10)[0].shape == (3, 2)


# --- VectorIndex: plain cdist below cdist_rows, float32 BLAS candidates re-ranked by cdist above.

from similarity.neighbours import VectorIndex  # noqa: E402


def _index(vectors: np.ndarray, *, cdist_rows: int, batch: int = 37) -> VectorIndex:
    index = VectorIndex(vectors.shape[1], cdist_rows=cdist_rows)
    for start in range(0, len(vectors), batch):
        index.add(np.arange(start, min(start + batch, len(vectors))) + 1000, vectors[start : start + batch])
    return index


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("rows", [1, 2, 31, 32, 33, 500, 2049])
def test_it_finds_the_same_neighbours_on_both_paths_as_plain_cdist(rows):
    vectors = _unit(np.random.default_rng(rows), rows, 12)
    expected = brute_force(vectors.astype(np.float64), vectors.astype(np.float64), 10, exclude_self=True)

    for cdist_rows in (10**9, 0):
        indices, distances = _index(vectors, cdist_rows=cdist_rows).search_rows(np.arange(rows), 10)
        assert indices.tolist() == expected[0].tolist()
        assert np.allclose(distances, expected[1], rtol=0, atol=1e-9)


def test_it_answers_outside_queries_and_keeps_ids_in_row_order():
    rng = np.random.default_rng(3)
    vectors, queries = _unit(rng, 300, 8), _unit(rng, 5, 8)
    index = _index(vectors, cdist_rows=0)

    indices, _distances = index.search(queries, 7)

    expected = brute_force(queries.astype(np.float64), vectors.astype(np.float64), 7)
    assert indices.tolist() == expected[0].tolist()
    assert index.ids.tolist() == list(range(1000, 1300))
    assert np.array_equal(index.vectors, vectors)


def test_it_breaks_ties_by_the_lower_row_on_the_scaled_path():
    rng = np.random.default_rng(5)
    base = _unit(rng, 40, 6)
    # Every vector three times: each row has two exact twins and many tied distances.
    vectors = np.concatenate([base, base, base])

    indices, _ = _index(vectors, cdist_rows=0).search_rows(np.arange(len(vectors)), 10)

    expected = brute_force(vectors.astype(np.float64), vectors.astype(np.float64), 10, exclude_self=True)
    assert indices.tolist() == expected[0].tolist()


def test_it_pads_short_results_when_k_exceeds_the_rows():
    vectors = _unit(np.random.default_rng(1), 3, 4)

    indices, distances = _index(vectors, cdist_rows=0).search_rows([0, 1, 2], 10)

    assert indices.shape == (3, 2) and (indices >= 0).all() and np.isfinite(distances).all()
    assert _index(vectors, cdist_rows=0).search(vectors[:1], 10)[0].shape == (1, 3)


def test_it_refuses_vectors_of_the_wrong_width():
    index = VectorIndex(4)
    with pytest.raises(ValueError):
        index.add([1], np.ones((1, 5)))
    with pytest.raises(ValueError):
        index.search(np.ones((1, 3)), 5)


def test_it_keeps_float32_and_never_grows_quadratically():
    index = VectorIndex(4)
    for i in range(100):
        index.add([i], np.ones((1, 4)))
    assert index.vectors.dtype == np.float32
    assert len(index) == 100 and index.nbytes < 100 * 4 * 5 * 2 + 2000


def test_it_breaks_a_tie_wider_than_the_candidate_pool_by_the_lower_row():
    rng = np.random.default_rng(8)
    # 60 copies of one vector (pool is 30) among 200 others: every copy's 10 nearest are tied copies.
    vectors = np.concatenate([_unit(rng, 100, 6), np.repeat(_unit(rng, 1, 6), 60, axis=0), _unit(rng, 100, 6)])

    indices, distances = _index(vectors, cdist_rows=0).search_rows(np.arange(len(vectors)), 10)

    expected = brute_force(vectors.astype(np.float64), vectors.astype(np.float64), 10, exclude_self=True)
    assert indices.tolist() == expected[0].tolist()
    assert np.allclose(distances, expected[1], rtol=0, atol=1e-9)
