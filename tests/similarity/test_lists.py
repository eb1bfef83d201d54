"""Blending colour into product vectors, filtered search, one listing per garment, list agreement."""

from __future__ import annotations

import numpy as np
import pytest

from similarity.duplicates import DuplicateRule, components, group_labels, matches, one_per_group
from similarity.embedding import COLOUR_DIM, with_colour
from similarity.garment import SIGNATURE_DIM
from similarity.list_quality import agreement, balance_ceiling, choose_colour_weight, refined_precision
from similarity.neighbours import VectorIndex, search_among, top_k


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_it_blends_distances_by_the_weight():
    rng = np.random.default_rng(0)
    shape, colour = _unit(rng.normal(size=(5, 8))), _unit(rng.random((5, COLOUR_DIM)))
    blended = with_colour(shape, colour, 0.3)
    d_shape = np.linalg.norm(shape[0] - shape[1])
    d_colour = np.linalg.norm(colour[0] - colour[1])
    assert np.linalg.norm(blended[0] - blended[1]) == pytest.approx(
        np.sqrt(0.7 * d_shape**2 + 0.3 * d_colour**2), rel=1e-5
    )


def test_it_keeps_vectors_unchanged_at_weight_zero():
    shape = _unit(np.random.default_rng(1).normal(size=(3, 8)))
    assert with_colour(shape, None, 0.0) is not None
    np.testing.assert_array_equal(with_colour(shape, None, 0.0), shape)


def test_it_ranks_a_query_without_colour_by_shape_alone():
    rng = np.random.default_rng(2)
    shape, colour = _unit(rng.normal(size=(200, 8))), _unit(rng.random((200, COLOUR_DIM)))
    query = _unit(rng.normal(size=(1, 8)))
    by_shape, _ = top_k(query[0], shape, 20)
    by_blend, _ = top_k(with_colour(query, None, 0.5)[0], with_colour(shape, colour, 0.5), 20)
    np.testing.assert_array_equal(by_shape, by_blend)


def test_it_refuses_descriptors_that_do_not_match():
    with pytest.raises(ValueError):
        with_colour(np.ones((2, 4)), np.ones((3, COLOUR_DIM)), 0.2)


@pytest.mark.parametrize("size", [50, 5000])
def test_it_searches_among_chosen_rows_exactly(size):
    rng = np.random.default_rng(size)
    vectors = rng.normal(size=(size, 12)).astype(np.float32)
    index = VectorIndex(12, cdist_rows=100)
    index.add(np.arange(size), vectors)
    rows = np.flatnonzero(rng.random(size) < 0.3)
    query = rng.normal(size=12).astype(np.float32)
    found, distances = search_among(index, query, rows, 10)
    expected, expected_distances = top_k(query, vectors[rows], 10)
    np.testing.assert_array_equal(found, rows[expected])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)


def test_it_returns_fewer_when_fewer_rows_are_chosen():
    index = VectorIndex(3)
    index.add(np.arange(4), np.eye(4, 3, dtype=np.float32))
    found, _ = search_among(index, np.zeros(3, dtype=np.float32), np.array([1, 2]), 10)
    assert sorted(found.tolist()) == [1, 2]


def test_it_shows_one_listing_per_group_in_rank_order():
    groups = {1: None, 2: 7, 3: 7, 4: None, 5: 9, 6: 9, 8: 7}
    assert one_per_group([2, 1, 3, 5, 8, 4, 6], groups, k=10) == [2, 1, 5, 4]
    assert one_per_group([2, 1, 3, 5, 8, 4, 6], groups, k=2) == [2, 1]
    # The page's own garment is left out entirely.
    assert one_per_group([2, 1, 3, 5, 8, 4, 6], groups, k=10, skip_groups=[9]) == [2, 1, 4]


def test_it_groups_listings_connected_by_the_rule():
    rule = DuplicateRule(max_distance=1.0)
    base = np.zeros(SIGNATURE_DIM, dtype=np.float32)
    step = np.full(SIGNATURE_DIM, 0.8 / np.sqrt(SIGNATURE_DIM), dtype=np.float32)  # 0.8 apart
    # Photos (owner row): 0 (10), 0.8 (11), 1.6 (12): a chain, though 10 and 12 are 1.6 apart, is one
    # garment; 13 has two photos, its second one 0.8 from 10's; 14 is far from all.
    signatures = np.stack([base, base + step, base + 2 * step, base + 9 * step, base - step, base + 20 * step])
    owners = np.array([0, 1, 2, 3, 3, 4])
    assert group_labels([10, 11, 12, 13, 14], owners, signatures, rule) == [10, 10, 10, 10, None]
    assert matches(base, signatures, rule).tolist() == [0, 1, 4]


def test_it_labels_components_by_their_smallest_index():
    labels = components(8, [(5, 3), (3, 6), (1, 2), (7, 6), (2, 2)])
    assert labels.tolist() == [0, 1, 1, 3, 4, 3, 3, 3]
    assert components(3, []).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        components(3, [(0, 3)])


def test_it_measures_how_many_neighbours_share_a_label():
    vectors = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]], dtype=np.float32)
    labels = {"colour": ["red", "red", "blue", "blue", "blue"]}
    # Nearest other row: 0→1 (red, shares), 1→0 (shares), 2→1 (red: not), 3→4 (shares), 4→3 (shares).
    assert agreement(vectors, labels, rows=range(5), k=1)["colour"] == pytest.approx(0.8)


def test_it_chooses_the_weight_that_balances_colour_and_cut():
    rng = np.random.default_rng(3)
    cut = rng.integers(0, 4, 120)
    colour = rng.integers(0, 5, 120)
    shape = _unit(np.eye(4)[cut] * 3 + rng.normal(scale=0.3, size=(120, 4)))
    descriptors = np.zeros((120, COLOUR_DIM), dtype=np.float32)
    descriptors[np.arange(120), colour] = 1.0
    labels = {"colour": colour.tolist(), "cut": cut.tolist(), "pattern": [0] * 120}
    choice = choose_colour_weight(shape, descriptors, labels, rows=range(120), weights=[0.0, 0.3, 0.6, 0.9])
    assert choice.tried[0.0]["colour"] < 0.5 < choice.tried[choice.weight]["colour"]
    assert choice.weight > 0 and choice.tried[choice.weight]["cut"] > 0.5


def test_it_measures_what_a_colour_choice_shows():
    vectors = np.arange(6, dtype=np.float32)[:, None]
    detected = np.array([1, 1, 1, 1, 0, 1])
    truth = np.array([1, 1, 0, 1, 0, 1])  # row 2 was detected as carrying bit 1 wrongly
    shares = refined_precision(vectors, detected, truth, rows=[0], colours=[1], k=2)
    assert shares[1] == pytest.approx(0.5)  # rows 1 and 2 are shown, only 1 carries it


def test_it_bounds_what_any_list_can_share():
    # Row 0 is red a-line. Others: one red a-line, two red sheath, three blue a-line, four blue sheath.
    colours = ["red", "red", "red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue"]
    cuts = ["a", "a", "s", "s", "a", "a", "a", "s", "s", "s", "s"]
    # k=4: both (1) + 1 red sheath + 2 blue a-line gives colour 2/4 and cut 3/4; no list has min above 2/4.
    assert balance_ceiling(colours, cuts, rows=[0], k=4) == pytest.approx(0.5)
    # k=2: both + one of either: min(2, 1)/2.
    assert balance_ceiling(colours, cuts, rows=[0], k=2) == pytest.approx(0.5)
    assert balance_ceiling(["x", "x"], ["y", "y"], rows=[0], k=1) == pytest.approx(1.0)
