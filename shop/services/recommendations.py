"""Ranked similar-items rows of a version: built in slices (fanned out over workers), updated per batch.

Distances come from ``similarity.neighbours.VectorIndex``: plain cdist on small catalogues,
float32 BLAS candidates re-ranked by cdist on large ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from shop.models import ModelVersion, ProductEmbedding, SimilarProduct
from shop.services import embedding_index
from similarity.neighbours import top_k

logger = logging.getLogger("shop")

_COLUMNS = ("version_id", "product_id", "recommendation_id", "ranking", "distance")
# One row of PostgreSQL's binary COPY format: a field count, then (length, big-endian value) per field.
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("version_size", ">i4"),
        ("version_id", ">i8"),
        ("product_size", ">i4"),
        ("product_id", ">i8"),
        ("recommendation_size", ">i4"),
        ("recommendation_id", ">i8"),
        ("ranking_size", ">i4"),
        ("ranking", ">i2"),
        ("distance_size", ">i4"),
        ("distance", ">f8"),
    ]
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, no flags, no header extension
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


@dataclass
class RankedRows:
    """Ranked rows of one version as columns: rows[i] puts recommendation[i] at ranking[i] for product[i]."""

    version_id: int
    product_id: np.ndarray
    recommendation_id: np.ndarray
    ranking: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.product_id)

    def referenced(self) -> np.ndarray:
        return np.union1d(self.product_id, self.recommendation_id)

    def copy_binary(self) -> bytes:
        """The rows in PostgreSQL's binary COPY format, built by numpy rather than row by row."""
        rows = np.empty(len(self), dtype=_COPY_ROW)
        rows["fields"] = len(_COLUMNS)
        rows["version_size"] = rows["product_size"] = rows["recommendation_size"] = rows["distance_size"] = 8
        rows["ranking_size"] = 2
        rows["version_id"] = self.version_id
        rows["product_id"] = self.product_id
        rows["recommendation_id"] = self.recommendation_id
        rows["ranking"] = self.ranking
        rows["distance"] = self.distance
        return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


# The lists_revision each version's cached k-th distances were read at, in this process.
_seen_revisions: dict[int, int] = {}


def _locked_version(version_id: int) -> ModelVersion | None:
    """The version row, locked: writers of one version's rows take turns (PostgreSQL row lock;
    SQLite's IMMEDIATE transactions serialise writers anyway)."""
    version = ModelVersion.objects.select_for_update().filter(pk=version_id).first()
    if version is None or version.status == ModelVersion.Status.FAILED:
        return None
    return version


def _rows(
    version_id: int,
    product_ids: np.ndarray,
    positions: Sequence[int] | np.ndarray,
    indices: np.ndarray | Sequence[np.ndarray],
    distances: np.ndarray | Sequence[np.ndarray],
) -> RankedRows:
    """Rows for each position's list (index -1: no more neighbours); lists may differ in length."""
    if isinstance(indices, np.ndarray) and indices.ndim == 2:
        lists, lengths = [indices], [indices.shape[1]] * len(indices)
    else:
        lists, lengths = [np.asarray(row) for row in indices], [len(row) for row in indices]
    flat_indices = np.concatenate([row.ravel() for row in lists]) if lists else np.zeros(0, dtype=np.intp)
    flat_distances = np.concatenate([np.ravel(row) for row in distances]) if len(flat_indices) else np.zeros(0)
    owners = np.repeat(np.asarray(positions, dtype=np.intp), lengths)
    rankings = np.concatenate([np.arange(1, n + 1) for n in lengths]) if lengths else np.zeros(0, dtype=np.intp)
    kept = flat_indices >= 0
    return RankedRows(
        version_id,
        product_ids[owners[kept]].astype(np.int64),
        product_ids[flat_indices[kept]].astype(np.int64),
        rankings[kept].astype(np.int16),
        flat_distances[kept].astype(np.float64),
    )


def _insert(rows: RankedRows) -> None:
    """Write ranked rows: binary COPY on PostgreSQL (a rebuild writes ten rows per product), bulk insert elsewhere."""
    if not len(rows):
        return
    if connection.vendor == "postgresql":
        table = SimilarProduct._meta.db_table
        copy_sql = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            copy.write(rows.copy_binary())
        return
    SimilarProduct.objects.bulk_create(
        [
            SimilarProduct(version_id=rows.version_id, product_id=p, recommendation_id=r, ranking=k, distance=d)
            for p, r, k, d in zip(
                rows.product_id.tolist(), rows.recommendation_id.tolist(), rows.ranking.tolist(), rows.distance.tolist()
            )
        ],
        batch_size=2000,
    )


def slice_bounds(*, version_id: int, slice_size: int | None = None) -> list[tuple[int, int]]:
    """[low, high) product-id ranges of about ``slice_size`` embedded products each, covering them all."""
    size = slice_size or settings.RANKING_SLICE_SIZE
    ids = np.array(
        ProductEmbedding.objects.filter(version_id=version_id)
        .order_by("product_id")
        .values_list("product_id", flat=True)
    )
    if not len(ids):
        return []
    count = math.ceil(len(ids) / size)
    starts = [int(ids[(i * len(ids)) // count]) for i in range(count)]
    return list(zip(starts, [*starts[1:], int(ids[-1]) + 1]))


def rank_slice(*, version_id: int, low: int, high: int) -> int:
    """Rank the version's products with ids in [low, high) against all of its products, and
    replace their rows in one short transaction. Returns the rows written."""
    # Slices take seconds: counting (~40 ms at 1e5) rules out a deleted product for sure.
    cached = embedding_index.version_index(version_id, recount=True)
    if cached is None:
        return 0
    ids = cached.index.ids
    positions = np.flatnonzero((ids >= low) & (ids < high))
    k = settings.SIMILAR_ITEMS
    indices: np.ndarray | list[np.ndarray]
    distances: np.ndarray | list[np.ndarray]
    indices, distances = cached.index.search_rows(positions, k) if len(positions) else ([], [])
    rows = _rows(version_id, ids, positions, indices, distances)
    with transaction.atomic():
        if _locked_version(version_id) is None:
            return 0
        SimilarProduct.objects.filter(version_id=version_id, product_id__gte=low, product_id__lt=high).delete()
        _insert(rows)
    if len(positions) and np.shape(distances)[1] == k:
        cached.kth[positions] = np.asarray(distances)[:, -1]
    return len(rows)


def rebuild_recommendations(*, version_id: int, slice_size: int | None = None) -> int:
    """Every ranked row of a version, slice by slice in this process; returns the rows written.

    Training runs fan the same slices out over the workers instead (see training.rank_in_slices).
    Each slice replaces its own products' rows, so a version that pages read (the active one)
    shows each product's old list or its new one, never a mix within a list.
    """
    written = 0
    for low, high in slice_bounds(version_id=version_id, slice_size=slice_size):
        written += rank_slice(version_id=version_id, low=low, high=high)
    # Rows of products whose embedding is gone.
    SimilarProduct.objects.filter(version_id=version_id).exclude(
        product_id__in=ProductEmbedding.objects.filter(version_id=version_id).values("product_id")
    ).delete()
    logger.info("rebuilt %d similar-item rows for version %s", written, version_id)
    return written


def update_recommendations(*, version_id: int, product_ids: Sequence[int]) -> int:
    """Rank newly embedded products, and re-rank the products they now come close to.

    Costs one (new × catalogue) matrix product against the process's cached index, not a
    reload of the catalogue. A list changes only where a new product is nearer than its k-th
    item, and then its new top k lies within its old list plus the new products, so only
    those few are re-ranked with cdist.
    """
    with transaction.atomic():
        version = _locked_version(version_id)
        if version is None:
            return 0
        if _seen_revisions.get(version_id) != version.lists_revision:
            # Products left some lists since this process cached their k-th distances: those lists
            # got farther than the cache says, so read them again (rare: deletions and replacements).
            embedding_index.forget(version_id)
            _seen_revisions[version_id] = version.lists_revision
        try:
            # Under the lock: every product embedded before it was taken is in the index.
            checked = embedding_index.with_existing_products(
                version_id,
                lambda cached: _rank_new(version_id, cached, product_ids) if len(cached.index) > 1 else None,
                lambda ranked: ranked[3].referenced().tolist(),
                ensure=product_ids,
            )
        except embedding_index.ProductsVanished as error:
            logger.warning("%s; lists left as they were, the next batch or rebuild catches up", error)
            return 0
        if checked is None:
            return 0
        cached, (positions, _indices, distances, rows) = checked
        ids = cached.index.ids
        SimilarProduct.objects.filter(version_id=version_id, product_id__in=[int(ids[i]) for i in positions]).delete()
        _insert(rows)
    _remember_kth(cached, positions, distances, short=None)
    logger.info("ranked %d new products of version %s; %d lists changed", len(product_ids), version_id, len(positions))
    return len(rows)


def _rank_new(
    version_id: int, cached: embedding_index.CachedIndex, product_ids: Sequence[int]
) -> tuple[list[int], list[np.ndarray], list[np.ndarray], RankedRows] | None:
    """(positions, neighbour indices, distances, rows) of the new rows and the lists they enter."""
    k = settings.SIMILAR_ITEMS
    new = sorted(set(cached.position_of(product_ids)))
    if not new:
        return None
    entered = np.setdiff1d(_lists_entered(cached, new), new)
    positions, indices, distances = _merge_lists(version_id, cached, entered, new, k)
    fresh_indices, fresh_distances = cached.index.search_rows(new, k)
    positions = [*positions, *new]
    indices = [*indices, *fresh_indices]
    distances = [*distances, *fresh_distances]
    return positions, indices, distances, _rows(version_id, cached.index.ids, positions, indices, distances)


def _merge_lists(
    version_id: int, cached: embedding_index.CachedIndex, entered: np.ndarray, new: list[int], k: int
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """New lists of existing rows that new rows entered: their stored list plus the new rows,
    re-ranked by cdist (a row whose stored list is short is searched in full instead)."""
    ids = cached.index.ids
    stored: dict[int, list[int]] = {}
    entered_ids = [int(ids[i]) for i in entered]
    for start in range(0, len(entered_ids), 500):
        rows = SimilarProduct.objects.filter(version_id=version_id, product_id__in=entered_ids[start : start + 500])
        for product_id, recommendation_id in rows.values_list("product_id", "recommendation_id"):
            stored.setdefault(product_id, []).append(recommendation_id)
    full_length = min(k, len(cached.index) - len(new) - 1)
    vectors = cached.index.vectors
    positions, indices, distances = [], [], []
    searched = []
    for row in entered.tolist():
        old = cached.position_of(stored.get(int(ids[row]), []))
        if len(old) < full_length:
            searched.append(row)
            continue
        # Sorted, so top_k's tie-break by lower position is a tie-break by lower row.
        pool = np.array(sorted((set(old) | set(new)) - {row}), dtype=np.intp)
        nearest, exact = top_k(vectors[row], vectors[pool], k)
        positions.append(row)
        indices.append(pool[nearest])
        distances.append(exact)
    if searched:
        full_indices, full_distances = cached.index.search_rows(searched, k)
        positions += searched
        indices += list(full_indices)
        distances += list(full_distances)
    return positions, indices, distances


def _lists_entered(cached: embedding_index.CachedIndex, new: list[int]) -> np.ndarray:
    """Rows that some new row is at least as near to as their k-th item (float32, with slack)."""
    index = cached.index
    fresh = index.vectors[new]
    fresh_norms = np.einsum("ij,ij->i", fresh, fresh)
    # The index keeps rows as [x, -|x|²/2]: row · [q, 1] = x·q - |x|²/2, so |x - q|² = |q|² - 2 (row · [q, 1]).
    augmented = np.ones((len(new), index.dim + 1), dtype=np.float32)
    augmented[:, : index.dim] = fresh
    rows = index.augmented_rows
    nearest = np.empty(len(rows), dtype=np.float32)
    block = max(1, 8_000_000 // len(new))
    for start in range(0, len(rows), block):
        scores = rows[start : start + block] @ augmented.T
        nearest[start : start + block] = (fresh_norms[None, :] - 2 * scores).min(axis=1)
    limit = cached.kth.astype(np.float64) ** 2
    # float32 rounding must never hide a list that changes: compare with a margin.
    squared_norms = -2.0 * rows[:, index.dim].astype(np.float64)
    slack = 1e-4 * (squared_norms + float(fresh_norms.max())) + 1e-6
    return np.flatnonzero(nearest <= limit + slack)


# Versions whose lists are served (active) or may be (ready: a rollback activates it in one click).
SERVING_STATUSES = (ModelVersion.Status.READY, ModelVersion.Status.ACTIVE)
# Ids per IN (...) query: under SQLite's limit on bound parameters.
_IN_BATCH = 500


def _batches(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _IN_BATCH):
        yield list(ids[start : start + _IN_BATCH])


def _remember_kth(
    cached: embedding_index.CachedIndex,
    positions: Sequence[int],
    distances: Sequence[np.ndarray],
    *,
    short: float | None,
) -> None:
    """Record the k-th distance of lists just written; a short list records ``short`` (None: keep the old value)."""
    for position, row_distances in zip(positions, distances):
        if len(row_distances) == settings.SIMILAR_ITEMS:
            cached.kth[position] = row_distances[-1]
        elif short is not None:
            cached.kth[position] = short


def serving_version_ids(*, categories: Iterable[str]) -> list[int]:
    """Ready and active versions of these categories, in id order (the order their locks are taken)."""
    return list(
        ModelVersion.objects.filter(status__in=SERVING_STATUSES, category__in=sorted(set(categories)))
        .order_by("id")
        .values_list("id", flat=True)
    )


def remove_from_lists(*, version_ids: Sequence[int], product_ids: Sequence[int]) -> dict[int, list[int]]:
    """Delete every ranked row of these versions that names these products: their own lists and
    their places in other products' lists. Runs in the caller's transaction with each version
    locked, so a writer that ranked them before this commits first (and its rows go too), and one
    that ranks after it sees them gone. Returns, per version, the other products whose lists lost
    a row: their lists are short until rerank_lists refills them."""
    removed = sorted({int(p) for p in product_ids})
    owners: dict[int, list[int]] = {}
    with transaction.atomic():
        for version_id in sorted(version_ids):
            if _locked_version(version_id) is None:
                continue
            lost: set[int] = set()
            deleted = 0
            for batch in _batches(removed):
                entries = SimilarProduct.objects.filter(version_id=version_id, recommendation_id__in=batch)
                lost.update(entries.values_list("product_id", flat=True))
                deleted += entries.delete()[0]
                deleted += SimilarProduct.objects.filter(version_id=version_id, product_id__in=batch).delete()[0]
            lost.difference_update(removed)
            if lost:
                owners[version_id] = sorted(lost)
            if deleted:
                # Every process's cached k-th distances of this version may now be too small.
                ModelVersion.objects.filter(pk=version_id).update(lists_revision=F("lists_revision") + 1)
    return owners


def rerank_lists(*, version_id: int, product_ids: Sequence[int], removed_ids: Sequence[int] = ()) -> int:
    """Rank these products' lists afresh over the version's catalogue and replace them; returns rows written.

    For lists that lost a row (remove_from_lists): one top-k search per list on the process's
    cached index (a few ms at 1e5 products), no rebuild. ``removed_ids`` are the products that
    left: those without an embedding now are kept out of every list even where this process's
    index still holds their old vectors. A product among them embedded again is ranked with its
    new vector (it is checked before the index is read, and the index reloads on a re-embedded
    product). A list whose product has no embedding is deleted.
    """
    owners = sorted({int(p) for p in product_ids})
    if not owners:
        return 0
    with transaction.atomic():
        if _locked_version(version_id) is None:
            return 0
        gone = embedding_index.missing_products(version_id, removed_ids)
        try:
            checked = embedding_index.with_existing_products(
                version_id,
                lambda cached: _rank_lists(version_id, cached, owners, gone),
                lambda ranked: ranked[2].referenced().tolist(),
                ensure=owners,
            )
        except embedding_index.ProductsVanished as error:
            logger.warning("%s; %d lists left as they were, the next rebuild refills them", error, len(owners))
            return 0
        for batch in _batches(owners):
            SimilarProduct.objects.filter(version_id=version_id, product_id__in=batch).delete()
        if checked is None:
            return 0
        cached, (positions, distances, rows) = checked
        _insert(rows)
    # A list shorter than k (a small catalogue) takes any newcomer: its k-th distance is infinite.
    _remember_kth(cached, positions, distances, short=np.inf)
    logger.info("re-ranked %d lists of version %s after products left them", len(positions), version_id)
    return len(rows)


def _rank_lists(
    version_id: int, cached: embedding_index.CachedIndex, owners: list[int], gone: set[int]
) -> tuple[list[int], list[np.ndarray], RankedRows] | None:
    """(positions, distances, rows) of the owners' new lists, leaving out the products in ``gone``."""
    k = settings.SIMILAR_ITEMS
    skip = np.array(cached.position_of(sorted(gone)), dtype=np.intp)
    skipped = set(skip.tolist())
    positions = [p for p in cached.position_of(owners) if p not in skipped]
    if not positions:
        return None
    width = min(k + len(skip), len(cached.index) - 1)
    found: np.ndarray | list[np.ndarray]
    found_distances: np.ndarray | list[np.ndarray]
    if width > 0:
        found, found_distances = cached.index.search_rows(positions, width)
    else:
        found, found_distances = [np.zeros(0, dtype=np.intp)] * len(positions), [np.zeros(0)] * len(positions)
    indices: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    for row, row_distances in zip(found, found_distances):
        keep = (row >= 0) & ~np.isin(row, skip)
        indices.append(row[keep][:k])
        distances.append(row_distances[keep][:k])
    return positions, distances, _rows(version_id, cached.index.ids, positions, indices, distances)
