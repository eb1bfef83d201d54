"""Grouping listings of one garment (near-identical shop photos), kept up to date as photos are read."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet

from shop.models import Product, ProductImage
from similarity.duplicates import DuplicateRule, group_labels, matches
from similarity.garment import SIGNATURE_DIM

logger = logging.getLogger("shop")
# Serialises regrouping: two workers joining listings to one group at once must not each label
# it from a snapshot that misses the other's listing.
_LOCK_KEY = 0x5D0B1E


def rule() -> DuplicateRule:
    return DuplicateRule(max_distance=settings.DUPLICATE_MAX_DISTANCE)


class _Photos:
    """The signatures of a category's shop photos that may match the products being regrouped."""

    def __init__(self, photos: QuerySet[ProductImage]) -> None:
        photos = photos.filter(signature__isnull=False)
        rows = list(
            photos.order_by("product_id", "id").values_list("product_id", "signature").iterator(chunk_size=5000)
        )
        self.owner = np.array([row[0] for row in rows], dtype=np.int64)
        self.signatures = np.zeros((len(rows), SIGNATURE_DIM), dtype=np.float32)
        for i, (_product, blob) in enumerate(rows):
            if blob is not None:  # filtered out above; the check is for the type checker
                self.signatures[i] = np.frombuffer(blob, dtype=np.float16)

    def products_matching(self, product_id: int) -> set[int]:
        own = self.owner == product_id
        found: set[int] = set()
        for signature in self.signatures[own]:
            found.update(self.owner[matches(signature, self.signatures, rule())].tolist())
        return found


def regroup(*, product_ids: Sequence[int]) -> int:
    """Recompute the groups these products are in or now join; returns the listings relabelled.

    The listings looked at are these products, every listing the rule matches to them, and every
    member of the groups any of those were in, so a group that splits (a photo replaced) or
    merges (a new listing bridging two) is relabelled whole.
    """
    changed = 0
    products = Product.objects.filter(pk__in=product_ids).values_list("category", "colour_mask")
    masks: dict[str, int] = {}
    for category, mask in products:
        masks[category] = masks.get(category, 0) | mask
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for category, mask in sorted(masks.items()):
            # Listings of one garment share a category: a dress and a skirt are never one group.
            own = Product.objects.filter(pk__in=product_ids, category=category).values_list("id", flat=True)
            changed += _regroup_category(category, mask, list(own))
    return changed


def _regroup_category(category: str, mask: int, product_ids: Sequence[int]) -> int:
    candidates = ProductImage.objects.filter(product__category=category)
    if mask:
        # Copies of one photo share their colours: only products sharing one of them can match
        # (a few of the 16 colours' products, not the whole category, at catalogue scale).
        candidates = candidates.annotate(shared=F("product__colour_mask").bitand(mask)).filter(shared__gt=0)
    photos = _Photos(candidates)
    involved: set[int] = set()
    for product_id in product_ids:
        involved |= photos.products_matching(int(product_id)) | {int(product_id)}
    old = dict(Product.objects.filter(pk__in=involved).values_list("id", "duplicate_group"))
    old_groups = {group for group in old.values() if group is not None}
    members = Product.objects.filter(duplicate_group__in=old_groups).values_list("id", "duplicate_group")
    old.update(dict(members))
    ids = sorted(old)
    position = {product_id: row for row, product_id in enumerate(ids)}
    # Every photo of these listings, whatever their colours now (a group's old members included).
    looked_at = _Photos(ProductImage.objects.filter(product_id__in=ids, product__category=category))
    owners = np.array([position[int(p)] for p in looked_at.owner], dtype=np.int64)
    labels = group_labels(ids, owners, looked_at.signatures, rule())
    relabel: dict[int | None, list[int]] = {}
    for product_id, label in zip(ids, labels):
        if old.get(product_id) != label:
            relabel.setdefault(label, []).append(product_id)
    for label, relabelled in relabel.items():
        Product.objects.filter(pk__in=relabelled).update(duplicate_group=label)
    changed = sum(len(m) for m in relabel.values())
    if changed:
        logger.info("%s: %d listings joined or left duplicate groups", category, changed)
    return changed
