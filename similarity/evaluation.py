"""Street2Shop retrieval metrics (numpy and scipy only; imported by the web process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from similarity.embedding import embed
from similarity.neighbours import MAX_BLOCK_CELLS, blocked_distances

# Product labels, one per row: a list or a numpy array.
Labels = Sequence[Any] | np.ndarray


def top_k_accuracy(
    queries: np.ndarray,
    query_labels: Labels,
    gallery: np.ndarray,
    gallery_labels: Labels,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    metric: str = "cosine",
) -> dict[str, Any]:
    """Share of queries whose product is among the first k distinct gallery products.

    Street2Shop protocol: the gallery may hold several shop photos per product, and a product
    ranks by its closest photo. A product tied with the right one counts as ranked ahead of it,
    so degenerate features (all distances equal) score 0, not 1. Queries whose product is not
    in the gallery at all count as misses. NaN distances (cosine of a zero vector) rank last.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float64)
    gallery = np.asarray(gallery)
    query_labels = list(query_labels)
    gallery_labels = list(gallery_labels)
    if len(queries) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("Each query and gallery row needs exactly one label.")
    if len(queries) == 0:
        raise ValueError("No queries to evaluate.")
    if len(gallery) == 0:
        raise ValueError("The gallery is empty.")

    products, product_of_row = np.unique(np.asarray(gallery_labels), return_inverse=True)
    product_index = {label: index for index, label in enumerate(products.tolist())}
    # Columns grouped by product so np.minimum.reduceat gives each product's best photo.
    column_order = np.argsort(product_of_row, kind="stable")
    group_starts = np.searchsorted(product_of_row[column_order], np.arange(len(products)))
    # Reordering copies the gallery anyway; make that its only float64 copy (cdist then copies none).
    sorted_gallery = np.ascontiguousarray(gallery[column_order], dtype=np.float64)

    truth = np.array([product_index.get(_plain(label), -1) for label in query_labels])
    ranks = np.full(len(queries), np.inf)
    for start, distances in blocked_distances(queries, sorted_gallery, metric=metric):
        stop = start + len(distances)
        distances[np.isnan(distances)] = np.inf
        per_product = np.minimum.reduceat(distances, group_starts, axis=1)
        known = np.flatnonzero(truth[start:stop] >= 0)
        true_distance = per_product[known, truth[start:stop][known]]
        # Rank 1 = no other product as close; ties count against the query.
        ranks[start + known] = (per_product[known] <= true_distance[:, None]).sum(axis=1)

    result: dict[str, Any] = {f"top{k}": float(np.mean(ranks <= k)) for k in ks}
    result["queries"] = len(queries)
    result["gallery"] = len(products)
    return result


def _plain(label: object) -> object:
    # np.unique(...).tolist() yields Python scalars; match numpy scalars in query labels to them.
    return label.item() if isinstance(label, np.generic) else label


# --- Streaming evaluation: the gallery arrives in chunks and is never held whole. ---

Chunk = tuple[np.ndarray, Labels]
# Gallery rows per chunk: 2048 x 4096-d is 32 MB as float32 (64 MB once in float64 for cdist).
DEFAULT_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class View:
    """One way of scoring the same queries and gallery chunks.

    ``queries`` are already in the view's space; ``transform`` maps a chunk of raw gallery rows
    into it (None: the raw rows), e.g. a siamese tower's embedding scored with ``euclidean``.
    """

    queries: np.ndarray
    metric: str = "cosine"
    transform: Callable[[np.ndarray], np.ndarray] | None = None


def iter_chunks(gallery: np.ndarray, gallery_labels: Labels, rows: int) -> Iterator[Chunk]:
    """(vectors, labels) slices of an in-memory gallery, ``rows`` rows at a time (views, no copies)."""
    if rows < 1:
        raise ValueError("rows must be at least 1.")
    labels = np.asarray(gallery_labels)
    if len(gallery) != len(labels):
        raise ValueError("Each gallery row needs exactly one label.")
    for start in range(0, len(gallery), rows):
        yield gallery[start : start + rows], labels[start : start + rows]


def streaming_top_k_accuracy(
    queries: np.ndarray,
    query_labels: Labels,
    chunks: Iterable[Chunk],
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    metric: str = "cosine",
) -> dict[str, Any]:
    """`top_k_accuracy` over a gallery given as an iterable of (vectors, labels) chunks.

    Same result, keys, tie and NaN rules; reads the chunks once and holds one at a time.
    """
    return streaming_top_k_accuracies({"": View(queries, metric=metric)}, query_labels, chunks, ks=ks)[""]


def streaming_top_k_accuracies(
    views: Mapping[str, View],
    query_labels: Labels,
    chunks: Iterable[Chunk],
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, dict[str, Any]]:
    """`top_k_accuracy` of every view, in ONE pass over a gallery given as (vectors, labels) chunks.

    Returns {view name: what `top_k_accuracy` returns for that view}. Chunks may come in any
    order and a product's photos may be spread over several chunks. Memory: one chunk (and its
    image under each view), the queries, a (queries x (max(ks) + 1)) table per view and one
    integer per distinct label; never a (queries x gallery) matrix.

    Why this is exact: only "rank <= k" for k in ks matters, and rank = the number of products
    whose best photo is at distance <= the true product's best. Each view keeps, per query, the
    true product's running best distance and the max(ks) + 1 smallest per-product best
    distances seen so far (merged by product across chunks). Fewer than max(ks) + 1 of those at
    or under the true distance means every such product is among them (rank exact); all of
    them means rank > max(ks), a miss for every k.
    """
    query_labels = [_plain(label) for label in query_labels]
    if not views:
        raise ValueError("No views to evaluate.")
    codes: dict[object, int] = {}
    truth = np.array([codes.setdefault(label, len(codes)) for label in query_labels], dtype=np.int64)
    states = {name: _ViewState(view, truth, keep=max(ks) + 1) for name, view in views.items()}
    in_gallery: set[int] = set()

    for vectors, chunk_labels in chunks:
        grouped = _grouped_by_product(vectors, chunk_labels, codes)
        if grouped is None:
            continue
        rows, columns, group_starts = grouped
        in_gallery.update(columns.codes.tolist())
        for state in states.values():
            state.add(rows, columns, group_starts)
        del rows

    if not in_gallery:
        raise ValueError("The gallery is empty.")
    return {
        name: {
            **{f"top{k}": float(np.mean(ranks <= k)) for k in ks},
            "queries": len(query_labels),
            "gallery": len(in_gallery),
        }
        for name, ranks in ((name, state.ranks()) for name, state in states.items())
    }


def _grouped_by_product(
    vectors: np.ndarray, chunk_labels: Labels, codes: dict[object, int]
) -> tuple[np.ndarray, _Columns, np.ndarray] | None:
    """A chunk's rows grouped by product, its products' codes and where each group starts (None if empty).

    Grouped so np.minimum.reduceat gives each product's best photo (column j of a chunk is its j-th
    distinct label); chunks read in product order need no reordering.
    """
    labels = np.asarray(chunk_labels)
    if len(vectors) != len(labels):
        raise ValueError("Each query and gallery row needs exactly one label.")
    if len(labels) == 0:
        return None
    distinct, row_product = np.unique(labels, return_inverse=True)
    distinct_codes = np.array([codes.setdefault(label, len(codes)) for label in distinct.tolist()], dtype=np.int64)
    row_product = row_product.reshape(-1)
    rows = np.asarray(vectors)
    if np.any(row_product[1:] < row_product[:-1]):
        order = np.argsort(row_product, kind="stable")
        rows, row_product = rows[order], row_product[order]
    return rows, _Columns(distinct_codes), np.searchsorted(row_product, np.arange(len(distinct)))


def score_towers(
    queries: np.ndarray, query_labels: Labels, chunks: Iterable[Chunk], towers: Mapping[str, Any]
) -> dict[str, Any]:
    """Top-1/5/10/20 of each named scorer in ONE pass over the gallery chunks: THE scoring function.

    A tower of None scores the raw features (cosine); a siamese tower (a Keras model) scores its
    embeddings (euclidean), embedding each chunk as it arrives. Returns {"queries", "gallery",
    name: top-k} (similarity.metrics.Scores' shape). Raises ValueError when there are no queries
    or the gallery is empty.
    """
    views: dict[str, View] = {}
    for name, tower in towers.items():
        if tower is None:
            views[name] = View(queries, metric="cosine")
        else:
            views[name] = View(embed(tower, queries), metric="euclidean", transform=partial(embed, tower))
    results = streaming_top_k_accuracies(views, query_labels, chunks)
    first = next(iter(results.values()))
    return {"queries": first["queries"], "gallery": first["gallery"], **results}


@dataclass(frozen=True)
class EvaluationData:
    """Street-crop queries and an in-memory gallery of shop rows (raw backbone features).

    For small galleries (training's validation set, a benchmark's dataset); a shop category's
    whole gallery streams from the database instead.
    """

    queries: np.ndarray
    query_labels: np.ndarray
    gallery: np.ndarray
    gallery_labels: np.ndarray

    @property
    def gallery_products(self) -> int:
        return len(np.unique(self.gallery_labels)) if len(self.gallery_labels) else 0

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        return iter_chunks(self.gallery, self.gallery_labels, rows)

    def score(self, towers: Mapping[str, Any]) -> dict[str, Any]:
        """`score_towers` of these queries against this gallery."""
        return score_towers(self.queries, self.query_labels, self.chunks(), towers)


class _ViewState:
    """Per query: the true product's best distance and the `keep` nearest products (by best photo)."""

    def __init__(self, view: View, truth: np.ndarray, *, keep: int) -> None:
        self.queries = np.ascontiguousarray(view.queries, dtype=np.float64)
        if view.metric == "cosine":
            self.queries = _unit_rows(self.queries)
        if self.queries.ndim != 2 or len(self.queries) != len(truth):
            raise ValueError("Each query and gallery row needs exactly one label.")
        if len(self.queries) == 0:
            raise ValueError("No queries to evaluate.")
        self.view = view
        self.truth = truth
        self.true_distance = np.full(len(truth), np.inf)
        self.found = np.zeros(len(truth), dtype=bool)
        # NaN marks an empty slot: np.(arg)partition orders it after +inf, a real (if NaN-born) distance.
        self.nearest = np.full((len(truth), keep), np.nan)
        self.nearest_products = np.full((len(truth), keep), -1, dtype=np.int64)

    def add(self, rows: np.ndarray, columns: _Columns, group_starts: np.ndarray) -> None:
        """Fold in a chunk: rows grouped by product, product j's rows starting at group_starts[j]."""
        if self.view.transform is not None:
            rows = self.view.transform(rows)
        # cdist would copy anything but C-contiguous float64 once per block of queries; copy once here.
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        products = columns.codes
        true_column, has_truth = columns.find(self.truth)
        if self.view.metric == "cosine":
            blocks = _cosine_blocks(self.queries, _unit_rows(rows))
        else:
            blocks = blocked_distances(self.queries, rows, metric=self.view.metric)
        for start, distances in blocks:
            block = slice(start, start + len(distances))
            distances[np.isnan(distances)] = np.inf  # NaN (cosine of a zero vector) ranks last
            per_product = np.minimum.reduceat(distances, group_starts, axis=1)
            del distances
            # The true product's best photo so far.
            known = np.flatnonzero(has_truth[block])
            if len(known):
                rows_known = start + known
                found = per_product[known, true_column[block][known]]
                self.true_distance[rows_known] = np.minimum(self.true_distance[rows_known], found)
                self.found[rows_known] = True
            # A kept product with more photos in this chunk: merge into the chunk's column.
            kept, kept_products = self.nearest[block], self.nearest_products[block]
            column, again = columns.find(kept_products)
            if again.any():
                query_rows, slots = np.nonzero(again)
                merged = column[query_rows, slots]
                per_product[query_rows, merged] = np.minimum(per_product[query_rows, merged], kept[query_rows, slots])
                # Its slot empties (id too: kept ids stay distinct, so each merges exactly once).
                kept, kept_products = kept.copy(), kept_products.copy()
                kept[query_rows, slots] = np.nan
                kept_products[query_rows, slots] = -1
            candidates = np.concatenate([kept, per_product], axis=1)
            del per_product
            width = self.nearest.shape[1]
            best = np.argpartition(candidates, width - 1, axis=1)[:, :width]
            self.nearest[block] = np.take_along_axis(candidates, best, axis=1)
            candidate_products = np.concatenate(
                [kept_products, np.broadcast_to(products, (len(candidates), len(products)))], axis=1
            )
            self.nearest_products[block] = np.take_along_axis(candidate_products, best, axis=1)

    def ranks(self) -> np.ndarray:
        """Each query's rank (exact up to len(kept); above it, some number greater); inf where absent."""
        # NaN slots compare False: only real products count.
        ranks: np.ndarray = (self.nearest <= self.true_distance[:, None]).sum(axis=1).astype(np.float64)
        ranks[~self.found] = np.inf
        return ranks


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row becomes NaN, as cdist's cosine makes it."""
    with np.errstate(invalid="ignore", divide="ignore"):
        unit: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


def _cosine_blocks(unit_queries: np.ndarray, unit_rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Cosine distances 1 - u·v of unit rows through a float64 matrix product, in blocks of queries.

    The metrics' raw-feature baseline compares 4096-d vectors: a BLAS product is ~50x faster
    than cdist's cosine loop there, and these distances only score, they order nothing shown.
    """
    rows = max(1, MAX_BLOCK_CELLS // max(len(unit_rows), 1))
    for start in range(0, len(unit_queries), rows):
        yield start, 1.0 - unit_queries[start : start + rows] @ unit_rows.T


class _Columns:
    """A chunk's product codes by column, and the column of any code."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes
        self._sorter = np.argsort(codes)

    def find(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(column, present) for each code; column is meaningless where not present."""
        position = np.minimum(np.searchsorted(self.codes, codes, sorter=self._sorter), len(self.codes) - 1)
        column = self._sorter[position]
        return column, self.codes[column] == codes
