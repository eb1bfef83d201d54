"""Writes to the catalogue made by people (the admin), as opposed to seeding."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from shop.models import Feature, ProductEmbedding, ProductImage
from shop.services.indexing import queue_indexing


def product_changed(*, product_id: int, changed_image_ids: Sequence[int] = ()) -> None:
    """Forget vectors made from replaced photos and queue the product for indexing after commit."""
    with transaction.atomic():
        if changed_image_ids:
            Feature.objects.filter(product_image_id__in=changed_image_ids).delete()
            # The worker makes a new thumbnail for a photo that has none.
            ProductImage.objects.filter(pk__in=changed_image_ids).update(thumbnail="")
            # Its embedding was made from the old photos; the worker makes a new one.
            ProductEmbedding.objects.filter(product_id=product_id).delete()
        queue_indexing(product_ids=[product_id])
