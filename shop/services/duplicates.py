"""Grouping listings of one garment (near-identical shop photos), kept up to date as photos are read."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from shop.models import Product, ProductImage
from similarity.duplicates import DuplicateRule, group_labels, matches
from similarity.embedding import COLOUR_DIM

logger = logging.getLogger("shop")
# Serialises regrouping: two workers joining listings to one group at once must not each label
# it from a snapshot that misses the other's listing.
_LOCK_KEY = 0x5D0B1E


def rule() -> DuplicateRule:
    return DuplicateRule(
        max_hamming=settings.DUPLICATE_MAX_HAMMING, max_colour_distance=settings.DUPLICATE_MAX_COLOUR_DISTANCE
    )


def _looks(category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int | None]]:
    """(product ids, first-photo hashes, colour descriptors, current groups) of the category's
    products whose first photo has been read. One pass over the category (a 1e5 catalogue: ~0.2 s)."""
    first: dict[int, int] = {}
    photos = (
        ProductImage.objects.filter(product__category=category, photo_hash__isnull=False)
        .order_by("product_id", "position", "id")
        .values_list("product_id", "photo_hash")
    )
    for product_id, photo_hash in photos.iterator(chunk_size=10000):
        if photo_hash is not None:
            first.setdefault(product_id, photo_hash)
    rows = (
        Product.objects.filter(pk__in=first.keys()) if len(first) < 1000 else Product.objects.filter(category=category)
    )
    descriptor_of: dict[int, np.ndarray] = {}
    groups: dict[int, int | None] = {}
    for product_id, blob, group in rows.values_list("id", "colour_descriptor", "duplicate_group").iterator(
        chunk_size=10000
    ):
        groups[product_id] = group
        if blob:
            descriptor_of[product_id] = np.frombuffer(blob, dtype=np.float32)
    ids = np.array(sorted(p for p in first if p in groups), dtype=np.int64)
    hashes = np.array([first[p] for p in ids.tolist()], dtype=np.int64)
    descriptors = np.zeros((len(ids), COLOUR_DIM), dtype=np.float32)
    for row, product_id in enumerate(ids.tolist()):
        if product_id in descriptor_of:
            descriptors[row] = descriptor_of[product_id]
    return ids, hashes, descriptors, groups


def regroup(*, product_ids: Sequence[int]) -> int:
    """Recompute the groups these products are in or now join; returns the listings relabelled.

    The listings looked at are these products, every listing the rule matches to them, and every
    member of the groups any of those were in, so a group that splits (a photo replaced) or
    merges (a new listing bridging two) is relabelled whole.
    """
    changed = 0
    categories = set(Product.objects.filter(pk__in=product_ids).values_list("category", flat=True))
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for category in sorted(categories):
            changed += _regroup_category(category, product_ids)
    return changed


def _regroup_category(category: str, product_ids: Sequence[int]) -> int:
    ids, hashes, descriptors, groups = _looks(category)
    if not len(ids):
        return 0
    position = {int(p): i for i, p in enumerate(ids.tolist())}
    current = rule()
    involved: set[int] = set()
    for product_id in product_ids:
        row = position.get(int(product_id))
        if row is None:
            continue
        involved.add(row)
        involved.update(matches(int(hashes[row]), descriptors[row], hashes, descriptors, current).tolist())
    old_groups = {groups[int(ids[i])] for i in involved} - {None}
    involved.update(i for i, p in enumerate(ids.tolist()) if groups.get(p) in old_groups)
    rows = sorted(involved)
    labels = group_labels([int(ids[i]) for i in rows], hashes[rows], descriptors[rows], current)
    relabel: dict[int | None, list[int]] = {}
    for i, label in zip(rows, labels):
        product_id = int(ids[i])
        if groups.get(product_id) != label:
            relabel.setdefault(label, []).append(product_id)
    for label, members in relabel.items():
        Product.objects.filter(pk__in=members).update(duplicate_group=label)
    changed = sum(len(m) for m in relabel.values())
    if changed:
        logger.info("%s: %d listings joined or left duplicate groups", category, changed)
    return changed
