"""A product's colours: rolled up from its photos' colours, and the weight its version gives them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.db import transaction

from shop.models import ModelVersion, Product, ProductImage
from similarity.colour import GarmentColours, colour_mask
from similarity.embedding import COLOUR_DIM


def colour_weight(version: ModelVersion) -> float:
    """The colour descriptor's share of the version's product vectors (0 for versions made before colours)."""
    return float(version.hyperparameters.get("colour_weight", 0.0))


def update_product_colours(*, product_ids: Sequence[int]) -> int:
    """Set each product's colours from its shop photos: the colours every one of them shows, in the
    order of the first, whose descriptor the product takes. A photo worn by a model adds skin and
    hair, and a stripe's edge can pass for a third colour: neither survives a second photo."""
    with transaction.atomic():
        # The products' locks first, then their photos: two workers storing photos of one product
        # each read every photo stored before they write, so neither writes colours missing the other's.
        products = list(Product.objects.select_for_update().filter(pk__in=product_ids).order_by("id"))
        looks: dict[int, list[GarmentColours]] = {}
        photos = (
            ProductImage.objects.filter(product_id__in=[p.pk for p in products])
            .exclude(colours={})
            .order_by("product_id", "position", "id")
            .values_list("product_id", "colours")
        )
        for product_id, stored in photos:
            looks.setdefault(product_id, []).append(GarmentColours.from_json(stored))
        products = [p for p in products if p.pk in looks]
        for product in products:
            first, *others = looks[product.pk]
            shown_by_all = [name for name in first.names if all(name in other.names for other in others)]
            product.colours = shown_by_all or [first.main]
            product.colour_mask = colour_mask(product.colours)
            product.colour_descriptor = np.asarray(first.descriptor, dtype=np.float32).tobytes()
        Product.objects.bulk_update(products, ["colours", "colour_mask", "colour_descriptor"])
    return len(products)


def colour_descriptors(*, product_ids: Sequence[int]) -> np.ndarray:
    """The products' colour descriptors in the order given; zeros for a product without colours
    (its colour part then sits at the same distance from every product's)."""
    stored = dict(Product.objects.filter(pk__in=product_ids).values_list("id", "colour_descriptor"))
    matrix = np.zeros((len(product_ids), COLOUR_DIM), dtype=np.float32)
    for row, product_id in enumerate(product_ids):
        blob = stored.get(product_id)
        if blob:
            matrix[row] = np.frombuffer(blob, dtype=np.float32)
    return matrix
