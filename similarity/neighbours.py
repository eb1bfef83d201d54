"""Exact k-nearest-neighbour search over feature or embedding matrices (numpy and scipy only).

The web process imports this module, so it must stay free of TensorFlow and Django.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeAlias

import numpy as np
from scipy.spatial.distance import cdist

# Distance matrices are materialised in blocks of at most this many cells (8 bytes each).
MAX_BLOCK_CELLS = 16_000_000

# NaN (cosine distance of an all-zero vector) ranks after every real distance but before
# excluded rows, which are set to +inf.
_LAST = np.finfo(np.float64).max

# Rows to leave out of a top_k result: one row for every query, a sequence of rows for a 1-D
# query, or one entry (a row, a sequence of rows, or None) per row of a 2-D query.
Exclusion: TypeAlias = int | Sequence[int] | Sequence[int | Sequence[int] | None]


def prepare_matrix(vectors: np.ndarray) -> np.ndarray:
    """A float64 C-contiguous copy of a 2-D matrix, made once.

    scipy's cdist converts its inputs to C-contiguous float64 on every call; a float32 catalogue
    would be copied again for each query. Keep the result of this function around instead.
    """
    matrix = np.array(vectors, dtype=np.float64, order="C", copy=True)
    if matrix.ndim != 2:
        raise ValueError(f"Expected a 2-D matrix, got shape {matrix.shape}.")
    return matrix


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    # A no-op for a prepared matrix; copies anything else rather than failing.
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Expected a 2-D matrix, got shape {matrix.shape}.")
    return matrix


def blocked_distances(
    queries: np.ndarray, matrix: np.ndarray, *, metric: str, max_rows: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first query row, distances) for consecutive blocks of query rows against every matrix row.

    A block holds at most MAX_BLOCK_CELLS distances (and at most ``max_rows`` rows), so a large
    matrix never needs one (queries × rows) array. Pass a prepared matrix: cdist copies anything
    that is not C-contiguous float64 again for every block.
    """
    rows = max(1, MAX_BLOCK_CELLS // max(len(matrix), 1))
    if max_rows is not None:
        rows = max(1, min(rows, max_rows))
    for start in range(0, len(queries), rows):
        yield start, cdist(queries[start : start + rows], matrix, metric=metric)


def top_k(
    query: np.ndarray,
    matrix: np.ndarray,
    k: int = 10,
    *,
    exclude: Exclusion | None = None,
    metric: str = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of matrix closest to query, nearest first, ties broken by lower row index.

    query is (d,) or (q, d); results are (indices, distances) shaped (k,) or (q, k). exclude is
    a row index removed for every query, or for a 1-D query a sequence of rows, or for a 2-D
    query one entry per query row (an index such as the query's own row, a sequence, or None).
    Fewer than k columns come back when fewer rows exist; if a 2-D query's rows have different
    numbers of rows left after exclusion, the short rows are padded with index -1, distance inf.
    """
    matrix = _as_matrix(matrix)
    single = np.ndim(query) == 1
    queries = np.atleast_2d(np.asarray(query, dtype=np.float64))
    if queries.ndim != 2 or queries.shape[1] != matrix.shape[1]:
        raise ValueError(f"Query shape {np.shape(query)} does not fit a matrix of width {matrix.shape[1]}.")
    if k < 0:
        raise ValueError("k must not be negative.")
    distances = cdist(queries, matrix, metric=metric)
    excluded = _exclusion_mask(exclude, rows=len(queries), columns=len(matrix), single=single)
    indices, nearest = _select(distances, excluded, k)
    if single:
        return indices[0], nearest[0]
    return indices, nearest


def all_top_k(
    matrix: np.ndarray, k: int = 10, *, metric: str = "euclidean", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest OTHER rows, as (n, min(k, n-1)) indices and distances."""
    matrix = _as_matrix(matrix)
    n = len(matrix)
    width = max(min(k, n - 1), 0)
    indices = np.empty((n, width), dtype=np.intp)
    distances = np.empty((n, width), dtype=np.float64)
    for start, block in blocked_distances(matrix, matrix, metric=metric, max_rows=chunk):
        stop = start + len(block)
        excluded = _exclusion_mask(list(range(start, stop)), rows=len(block), columns=n, single=False)
        indices[start:stop], distances[start:stop] = _select(block, excluded, width)
    return indices, distances


def _check_rows(rows: np.ndarray, columns: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.size and (not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() >= columns):
        raise IndexError(f"Excluded rows must be integers in [0, {columns}), got {rows.tolist()}.")
    return rows.astype(np.intp)


def _exclusion_mask(exclude: Exclusion | None, *, rows: int, columns: int, single: bool) -> np.ndarray | None:
    if exclude is None:
        return None
    mask = np.zeros((rows, columns), dtype=bool)
    if isinstance(exclude, (int, np.integer)):
        mask[:, _check_rows(np.array([exclude]), columns)] = True
    elif single:
        mask[0, _check_rows(np.array(list(exclude), dtype=np.int64), columns)] = True
    else:
        entries = list(exclude)
        if len(entries) != rows:
            raise ValueError(f"A 2-D query needs one exclude entry per row: {rows} rows, {len(entries)} entries.")
        if all(isinstance(entry, (int, np.integer)) for entry in entries):
            mask[np.arange(rows), _check_rows(np.array(entries, dtype=np.int64), columns)] = True
        else:
            for row, entry in enumerate(entries):
                if entry is not None:
                    mask[row, _check_rows(np.atleast_1d(np.array(entry, dtype=np.int64)), columns)] = True
    return mask


def _select(distances: np.ndarray, excluded: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, columns = distances.shape
    keyed = np.where(np.isnan(distances) | np.isposinf(distances), _LAST, distances)
    if excluded is not None:
        keyed[excluded] = np.inf
        available = columns - excluded.sum(axis=1)
    else:
        available = np.full(rows, columns)
    width = min(k, int(available.max()) if rows else columns)
    if width == 0:
        return np.empty((rows, 0), dtype=np.intp), np.empty((rows, 0), dtype=np.float64)

    if width < columns:
        candidates = np.argpartition(keyed, width - 1, axis=1)[:, :width]
    else:
        candidates = np.broadcast_to(np.arange(columns), (rows, columns)).copy()
    candidate_keys = np.take_along_axis(keyed, candidates, axis=1)
    order = np.lexsort((candidates, candidate_keys), axis=-1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    candidate_keys = np.take_along_axis(candidate_keys, order, axis=1)

    if width < columns:
        # argpartition picks arbitrary members of a tie at the boundary; where the tie spills
        # past it, redo that row so the lowest row indices win.
        kth = candidate_keys[:, -1:]
        spilled = (keyed == kth).sum(axis=1) > (candidate_keys == kth).sum(axis=1)
        for row in np.flatnonzero(spilled):
            pool = np.flatnonzero(keyed[row] <= kth[row, 0])
            best = pool[np.argsort(keyed[row, pool], kind="stable")[:width]]
            candidates[row] = best
            candidate_keys[row] = keyed[row, best]

    nearest = np.take_along_axis(distances, candidates, axis=1)
    short = np.arange(width)[None, :] >= available[:, None]
    if short.any():
        candidates[short] = -1
        nearest[short] = np.inf
    return candidates, nearest


# Indexes up to this many rows rank with plain cdist over every row: the reference path.
CDIST_ROWS = 5_000
# Columns per group in the candidate search's first pass (see VectorIndex._candidates).
_GROUP = 32
# Float32 score cells one candidate block may hold (128 MB).
_SCORE_CELLS = 32_000_000


class VectorIndex:
    """An append-only matrix of row vectors with exact euclidean top-k at catalogue scale.

    Up to ``cdist_rows`` rows, queries rank with plain ``cdist`` over every row (the reference).
    Above that, float32 BLAS blocks pick candidates (squared distances through one matrix
    product) and ``cdist`` re-ranks them, so the distances that order a result are still
    cdist's; only the candidate pool is found another way. Ties go to the lower row index.
    """

    def __init__(self, dim: int, *, cdist_rows: int = CDIST_ROWS, oversample: int = 3) -> None:
        if dim < 1:
            raise ValueError("dim must be at least 1.")
        self.dim = dim
        self.cdist_rows = cdist_rows
        self.oversample = oversample
        self._size = 0
        self._ids = np.empty(0, dtype=np.int64)
        # Rows [x, -|x|²/2]: a query [q, 1] scores q·x - |x|²/2, largest for the nearest x.
        # Rows past _size are padding [0, -inf], so they score -inf and never win.
        self._rows = self._padding(0)

    def _padding(self, rows: int) -> np.ndarray:
        padding = np.zeros((rows, self.dim + 1), dtype=np.float32)
        padding[:, self.dim] = -np.inf
        return padding

    def __len__(self) -> int:
        return self._size

    @property
    def ids(self) -> np.ndarray:
        """The id of each row, in row order."""
        return self._ids[: self._size]

    @property
    def vectors(self) -> np.ndarray:
        """A (rows, dim) float32 view of the stored vectors."""
        return self._rows[: self._size, : self.dim]

    @property
    def augmented_rows(self) -> np.ndarray:
        """(rows, dim + 1) float32 view of [x, -|x|²/2] per row: one matrix product scores every row."""
        return self._rows[: self._size]

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._ids.nbytes)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Append rows; storage grows by doubling, so adding batch by batch stays linear."""
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise ValueError(f"Expected {len(ids)} vectors of width {self.dim}, got shape {vectors.shape}.")
        needed = self._size + len(vectors)
        capacity = len(self._rows)
        if needed > capacity:
            grown = max(needed, 2 * capacity, _GROUP)
            grown = -(-grown // _GROUP) * _GROUP
            self._rows = np.concatenate([self._rows[: self._size], self._padding(grown - self._size)])
            self._ids = np.concatenate([self._ids[: self._size], np.zeros(grown - self._size, dtype=np.int64)])
        rows = self._rows[self._size : needed]
        rows[:, : self.dim] = vectors
        rows[:, self.dim] = -0.5 * np.einsum("ij,ij->i", vectors, vectors)
        self._ids[self._size : needed] = ids
        self._size = needed

    def search(
        self, queries: np.ndarray, k: int, *, exclude_rows: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, distances), each (q, min(k, rows)), nearest first; -1 / inf pad short rows.

        ``exclude_rows`` names one row per query to leave out (the query's own row).
        """
        queries = np.atleast_2d(np.asarray(queries))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"Queries shaped {queries.shape} do not fit an index of width {self.dim}.")
        if k < 0:
            raise ValueError("k must not be negative.")
        excluded = None if exclude_rows is None else np.asarray(exclude_rows, dtype=np.intp)
        if excluded is not None and len(excluded) != len(queries):
            raise ValueError("exclude_rows needs one row per query.")
        if self._size <= self.cdist_rows:
            return top_k(
                np.asarray(queries, dtype=np.float64),
                self.vectors,
                k=k,
                exclude=None if excluded is None else [int(row) for row in excluded],
            )
        return self._rerank(queries, k, excluded)

    def search_rows(self, rows: Sequence[int] | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest other rows of each of these rows."""
        rows = np.asarray(rows, dtype=np.intp)
        return self.search(self.vectors[rows], k, exclude_rows=rows)

    def _rerank(self, queries: np.ndarray, k: int, excluded: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        width = min(k, self._size - (1 if excluded is not None else 0))
        indices = np.full((len(queries), width), -1, dtype=np.intp)
        distances = np.full((len(queries), width), np.inf)
        pool = max(self.oversample * k, k + 8)
        for start, candidates in self._candidates(queries, pool, excluded):
            stop = start + len(candidates)
            chosen = np.maximum(candidates, 0)
            gathered = self.vectors[chosen].astype(np.float64)
            exact = np.full(candidates.shape, np.inf)
            for row in range(len(candidates)):
                query = np.asarray(queries[start + row : start + row + 1], dtype=np.float64)
                exact[row] = cdist(query, gathered[row])[0]
            exact[candidates < 0] = np.inf
            order = np.lexsort((np.where(candidates < 0, np.iinfo(np.intp).max, candidates), exact), axis=-1)
            best = order[:, :width]
            indices[start:stop] = np.take_along_axis(candidates, best, axis=1)
            distances[start:stop] = np.take_along_axis(exact, best, axis=1)
            # A tie at the pool's edge (many identical vectors) may have left out a lower row
            # index with the same distance: such rows are answered by plain cdist instead.
            if width == 0:
                continue
            full = (candidates >= 0).all(axis=1)
            tied = np.flatnonzero(full & (distances[start:stop, -1] >= exact.max(axis=1)))
            for row in tied.tolist():
                query = np.asarray(queries[start + row], dtype=np.float64)
                own = None if excluded is None else [int(excluded[start + row])]
                indices[start + row], distances[start + row] = top_k(query, self.vectors, k=width, exclude=own)
        distances[indices < 0] = np.inf
        return indices, distances

    def _candidates(
        self, queries: np.ndarray, pool: int, excluded: np.ndarray | None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first query, (b, pool) candidate rows) per block of queries; -1 where there are fewer.

        Exact in float32: each group of _GROUP columns keeps its best score, the ``pool`` best
        groups must hold the ``pool`` best columns (a column ranked j-th leaves at most j-1
        groups ahead of its own), and only those groups' columns are searched further. That
        avoids a selection over every column, which costs more than the matrix product. Group g
        is the columns g, g + G, g + 2G, … (G groups): its maximum is then an elementwise
        maximum of 32 contiguous rows, 7x faster than reducing 32 adjacent columns.
        """
        padded = -(-self._size // _GROUP) * _GROUP
        matrix = self._rows[:padded]
        groups = padded // _GROUP
        take_groups = min(pool, groups)
        block = max(1, _SCORE_CELLS // padded)
        offsets = np.arange(_GROUP) * groups
        for start in range(0, len(queries), block):
            chunk = queries[start : start + block]
            augmented = np.ones((len(chunk), self.dim + 1), dtype=np.float32)
            augmented[:, : self.dim] = chunk
            scores = augmented @ matrix.T  # float32 @ float32: no silent float64 upcast
            if excluded is not None:
                scores[np.arange(len(chunk)), excluded[start : start + block]] = -np.inf
            best_of_group = scores.reshape(len(chunk), _GROUP, groups).max(axis=1)
            if take_groups < groups:
                top_groups = np.argpartition(-best_of_group, take_groups - 1, axis=1)[:, :take_groups]
            else:
                top_groups = np.broadcast_to(np.arange(groups), (len(chunk), groups))
            columns = (top_groups[:, :, None] + offsets).reshape(len(chunk), -1)
            values = np.take_along_axis(scores, columns, axis=1)
            take = min(pool, columns.shape[1])
            if take < columns.shape[1]:
                picked = np.argpartition(-values, take - 1, axis=1)[:, :take]
                columns = np.take_along_axis(columns, picked, axis=1)
                values = np.take_along_axis(values, picked, axis=1)
            yield start, np.where(np.isneginf(values), -1, columns)


def search_among(index: VectorIndex, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows among ``rows`` nearest to one query, nearest first: (row indices, distances).

    For a filtered list (one colour, one category's rows): the float32 scores of the chosen rows
    pick a pool, which cdist re-ranks exactly in float64, as VectorIndex.search does over all rows.
    """
    rows = np.asarray(rows, dtype=np.intp)
    if k <= 0 or not len(rows):
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    vector = np.asarray(query, dtype=np.float32).reshape(-1)
    augmented = np.ones(index.dim + 1, dtype=np.float32)
    augmented[: index.dim] = vector
    scores = index.augmented_rows[rows] @ augmented
    pool = min(len(rows), max(index.oversample * k, k + 8))
    picked = rows[np.argpartition(-scores, pool - 1)[:pool]] if pool < len(rows) else rows
    # Sorted, so top_k's tie-break by lower position is a tie-break by lower row.
    picked = np.sort(picked)
    nearest, exact = top_k(vector.astype(np.float64), index.vectors[picked], min(k, len(picked)))
    return picked[nearest], exact
