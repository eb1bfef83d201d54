"""Per-process embedding indexes: loaded once per model version, then refreshed with new rows only.

The database stays the source of truth (workers may run on other hosts): each use asks it for
the rows added since the last look (an index range scan). Counting every row of a version costs
~40 ms at 1e5 products, so the count that catches the rest (a product deleted, a row committed
late under a lower id) runs when a caller asks for it, or every RECOUNT_SECONDS; callers that
write rows check the products they reference (see recommendations), and searches check their
results, so neither acts on a deleted product.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

import numpy as np
from django.conf import settings

from shop.models import ModelVersion, ProductEmbedding, SimilarProduct, vector_from_bytes
from similarity.neighbours import VectorIndex

logger = logging.getLogger("shop")

T = TypeVar("T")
# (embedding id, product id, stored vector, the product's colour mask) as read from the database.
EmbeddingRow: TypeAlias = tuple[int, int, bytes | memoryview, int]
_ROW_FIELDS = ("id", "product_id", "vector", "product__colour_mask")

# The longest a row committed late under a lower id can stay out of a process's index.
RECOUNT_SECONDS = 10.0

_lock = threading.Lock()
_indexes: dict[int, CachedIndex] = {}
# Versions whose matrices a process keeps: the active ones of two categories and one being built.
# Older versions are dropped when a newer one is used (a rollback reloads from the database).
KEPT_INDEXES = 3


@dataclass
class CachedIndex:
    """A version's embeddings in row order (by embedding id), and what we know of its lists."""

    index: VectorIndex
    last_id: int = 0
    # Each row's k-th similar-item distance as last seen. Lists get closer as products arrive, so
    # it is an overestimate (flags too many lists for re-ranking, never too few), except after a
    # product left the lists (deleted or re-embedded, see recommendations.remove_from_lists): the
    # lists it left got farther. The process that refilled them updates its own values; others
    # see the version's lists_revision change when update_recommendations, the one reader of kth,
    # locks the version, and reload.
    kth: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Each row's colours (similarity.colour's bits) as read with its embedding: a product's colours
    # are written before it is embedded, and new photos re-embed it (which reloads the index).
    colour_masks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    positions: dict[int, int] = field(default_factory=dict)
    counted_at: float = field(default_factory=time.monotonic)

    def position_of(self, product_ids: Iterable[int]) -> list[int]:
        return [self.positions[p] for p in product_ids if p in self.positions]


def _rows_after(version_id: int, last_id: int) -> list[EmbeddingRow]:
    return list(
        ProductEmbedding.objects.filter(version_id=version_id, id__gt=last_id)
        .order_by("id")
        .values_list(*_ROW_FIELDS)
        .iterator(chunk_size=5000)
    )


def _rows_of(version_id: int, product_ids: list[int]) -> list[EmbeddingRow]:
    return list(
        ProductEmbedding.objects.filter(version_id=version_id, product_id__in=product_ids)
        .order_by("id")
        .values_list(*_ROW_FIELDS)
    )


def _append(cached: CachedIndex, rows: list[EmbeddingRow]) -> bool:
    """Add new rows; False (nothing added) when one is a product the index already holds: its
    embedding was replaced (new photos), so the old row must go and only a reload does that."""
    if not rows:
        return True
    if any(row[1] in cached.positions for row in rows):
        return False
    product_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.stack([vector_from_bytes(r[2]) for r in rows])
    start = len(cached.index)
    # Masks first: a request thread reading without the lock may see the new rows, never rows without masks.
    masks = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
    cached.colour_masks = np.concatenate([cached.colour_masks, masks])
    cached.index.add(product_ids, matrix)
    cached.positions.update({int(p): start + i for i, p in enumerate(product_ids.tolist())})
    cached.kth = np.concatenate([cached.kth, np.full(len(rows), np.inf)])
    cached.last_id = max(cached.last_id, max(row[0] for row in rows))
    return True


def _load(version_id: int) -> CachedIndex | None:
    rows = _rows_after(version_id, 0)
    if not rows:
        return None
    cached = CachedIndex(VectorIndex(len(vector_from_bytes(rows[0][2])), cdist_rows=settings.CDIST_MAX_ROWS))
    _append(cached, rows)
    kth = SimilarProduct.objects.filter(version_id=version_id, ranking=settings.SIMILAR_ITEMS)
    for product_id, distance in kth.values_list("product_id", "distance").iterator(chunk_size=10000):
        position = cached.positions.get(product_id)
        if position is not None:
            cached.kth[position] = distance
    logger.info("loaded %d embeddings of version %s (%.1f MB)", len(rows), version_id, cached.index.nbytes / 1e6)
    return cached


def version_index(
    version: ModelVersion | int, *, ensure: Sequence[int] = (), recount: bool = False
) -> CachedIndex | None:
    """The version's embedding index, refreshed from the database; None if it has no embeddings.

    ``ensure`` names products that must be in it if they have an embedding (a batch just
    embedded, whatever ids its rows got); ``recount`` checks the row count now.
    """
    version_id = version if isinstance(version, int) else version.pk
    with _lock:
        cached = _indexes.get(version_id)
        if cached is not None:
            fresh = _append(cached, _rows_after(version_id, cached.last_id))
            missing = [int(p) for p in ensure if int(p) not in cached.positions]
            if fresh and missing:
                fresh = _append(cached, _rows_of(version_id, missing))
            if not fresh:
                cached = None
            elif recount or time.monotonic() - cached.counted_at > RECOUNT_SECONDS:
                if ProductEmbedding.objects.filter(version_id=version_id).count() != len(cached.index):
                    cached = None
                else:
                    _refresh_colours(version_id, cached)
                    cached.counted_at = time.monotonic()
        if cached is None:
            cached = _load(version_id)
            if cached is None:
                _indexes.pop(version_id, None)
                return None
            _indexes[version_id] = cached
        _keep_recent(version_id)
        return cached


def _refresh_colours(version_id: int, cached: CachedIndex) -> None:
    """Re-read the rows' colour masks: colours read after a product was embedded (photos indexed
    before colours existed, a second photo dropping a colour) change no embedding row."""
    masks = cached.colour_masks.copy()
    rows = ProductEmbedding.objects.filter(version_id=version_id).values_list("product_id", "product__colour_mask")
    for product_id, mask in rows.iterator(chunk_size=10000):
        position = cached.positions.get(product_id)
        if position is not None:
            masks[position] = mask
    cached.colour_masks = masks


def _keep_recent(version_id: int) -> None:
    """Mark `version_id` used last and drop the least recently used past KEPT_INDEXES (lock held)."""
    _indexes[version_id] = _indexes.pop(version_id)  # dicts keep insertion order: last = most recent
    while len(_indexes) > KEPT_INDEXES:
        _indexes.pop(next(iter(_indexes)))


class ProductsVanished(LookupError):
    """Products kept disappearing while a result was computed from the index."""


def with_existing_products(
    version_id: int,
    compute: Callable[[CachedIndex], T | None],
    referenced: Callable[[T], Sequence[int]],
    *,
    ensure: Sequence[int] = (),
    recount: bool = False,
) -> tuple[CachedIndex, T] | None:
    """compute(index) on the version's index, checked: if a product it names lost its embedding
    (deleted since the index was loaded), reload and compute again once. None where the version
    has no embeddings or compute returns None; ProductsVanished if the second try fails too.
    ``recount`` is version_index's: reload first if rows were deleted since the last look."""
    for attempt in range(2):
        if attempt:
            forget(version_id)
        cached = version_index(version_id, ensure=ensure, recount=recount and not attempt)
        if cached is None:
            return None
        result = compute(cached)
        if result is None:
            return None
        missing = missing_products(version_id, referenced(result))
        if not missing:
            return cached, result
    raise ProductsVanished(f"products {sorted(missing)[:10]} of version {version_id} vanished while ranking")


def missing_products(version_id: int, product_ids: Sequence[int]) -> set[int]:
    """Which of these products no longer have an embedding under the version (deleted since)."""
    wanted = {int(p) for p in product_ids}
    found: set[int] = set()
    ids = sorted(wanted)
    for start in range(0, len(ids), 500):
        found.update(
            ProductEmbedding.objects.filter(version_id=version_id, product_id__in=ids[start : start + 500]).values_list(
                "product_id", flat=True
            )
        )
    return wanted - found


def forget(version_id: int | None = None) -> None:
    """Drop cached indexes (all, or one version's): the next use reloads from the database."""
    with _lock:
        if version_id is None:
            _indexes.clear()
        else:
            _indexes.pop(version_id, None)
