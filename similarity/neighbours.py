"""Exact k-nearest-neighbour search over feature or embedding matrices (numpy and scipy only).

The web process imports this module, so it must stay free of TensorFlow and Django.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.spatial.distance import cdist

# Distance matrices are materialised in blocks of at most this many cells (8 bytes each).
MAX_BLOCK_CELLS = 16_000_000

# NaN (cosine distance of an all-zero vector) ranks after every real distance but before
# excluded rows, which are set to +inf.
_LAST = np.finfo(np.float64).max


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
    exclude: int | Sequence[int] | Sequence[int | Sequence[int] | None] | None = None,
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


def _exclusion_mask(
    exclude: object, *, rows: int, columns: int, single: bool
) -> np.ndarray | None:
    if exclude is None:
        return None
    mask = np.zeros((rows, columns), dtype=bool)
    if isinstance(exclude, (int, np.integer)):
        mask[:, _check_rows(np.array([exclude]), columns)] = True
    elif single:
        mask[0, _check_rows(np.array(list(exclude), dtype=np.int64), columns)] = True
    else:
        entries = list(exclude)  # type: ignore[call-overload]
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
