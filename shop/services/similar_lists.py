"""Lists shoppers can steer: one listing per garment, and "like this, in another colour".

Product pages read their precomputed rows (recommendations) when they need no change; a colour
choice, or a stored list that holds two listings of one garment, is ranked on request here
through the same candidate path as a photo search: the process's index of the version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from shop import selectors
from shop.models import ModelVersion, Product, SearchQuery
from shop.services import embedding_index
from similarity.colour import PALETTE_NAMES, names_from_mask
from similarity.duplicates import one_per_group
from similarity.neighbours import search_among

# How many of the nearest products the colour chips are read from.
CHIP_NEIGHBOURS = 40


class UnknownColour(ValueError):
    """A colour that is not a palette name."""


@dataclass
class Listing:
    product: Product
    distance: float | None
    # Other listings of the same garment (near-identical photos), shown as "also sold as".
    others: list[Product] = field(default_factory=list)


@dataclass
class SimilarList:
    items: list[Listing]
    chips: list[str]  # colours found among nearby products, most common first
    colour: str | None  # the chosen colour, if any
    # Listings of the page's own product's garment (a product page only).
    others: list[Product] = field(default_factory=list)


Ranked = list[tuple[int, float]]


def colour_bit(colour: str) -> int:
    if colour not in PALETTE_NAMES:
        raise UnknownColour(colour)
    return 1 << PALETTE_NAMES.index(colour)


def ranked_products(
    version: ModelVersion,
    query: np.ndarray | int,
    *,
    colour: str | None = None,
    exclude: Sequence[int] = (),
    skip_groups: Iterable[int] = (),
    stored: Ranked | None = None,
    k: int | None = None,
) -> tuple[Ranked, list[str]] | None:
    """(the nearest products as (id, distance), one listing per garment, and the colours found
    among the nearest products), or None when the version has no embeddings. ``query`` is a
    vector, or a product id whose vector in the version's index is the query (None without one).

    With ``colour``, only products carrying it are ranked, as far down as it takes to fill k.
    Without, ``stored`` (a precomputed list, nearest first) is used when it still fills k once
    listings of one garment are collapsed.
    """
    k = k or settings.SIMILAR_ITEMS
    bit = colour_bit(colour) if colour else None
    skipped = list(skip_groups)

    def compute(cached: embedding_index.CachedIndex) -> tuple[Ranked, list[str]] | None:
        if isinstance(query, int) and query not in cached.positions:
            return None
        # Read off the index this computation uses: one refresh of it per request, not two.
        vector = cached.index.vectors[cached.positions[query]] if isinstance(query, int) else query
        nearby = _nearest(cached, vector, exclude, max(CHIP_NEIGHBOURS, 3 * k))
        chips = _colours(cached.colour_masks[nearby])
        if bit is None and stored is not None:
            # Only products the index still holds: one deleted or being re-embedded since the list
            # was stored is left out rather than named (the check below would refuse it).
            shown = _collapse([(p, d) for p, d in stored if p in cached.positions], skipped, k)
            if len(shown) == k or len(stored) >= len(cached.index) - len(exclude):
                return shown, chips
        return _rank(cached, vector, bit=bit, exclude=exclude, skip_groups=skipped, k=k), chips

    try:
        checked = embedding_index.with_existing_products(
            version.pk,
            compute,
            lambda found: [p for p, _ in found[0]],
            ensure=[query] if isinstance(query, int) else (),
        )
    except embedding_index.ProductsVanished:
        return None  # the catalogue is changing under this request: pages show what they stored
    return None if checked is None else checked[1]


def _nearest(cached: embedding_index.CachedIndex, vector: np.ndarray, exclude: Sequence[int], n: int) -> np.ndarray:
    """Rows of the n products nearest to the vector, leaving out ``exclude``."""
    left_out = set(cached.position_of(exclude))
    found, _ = cached.index.search(vector[None, :], n + len(left_out))
    return np.array([row for row in found[0].tolist() if row >= 0 and row not in left_out][:n], dtype=np.intp)


def _collapse(ranked: Ranked, skip_groups: list[int], k: int) -> Ranked:
    groups = selectors.duplicate_groups(product_ids=[p for p, _ in ranked])
    shown = set(one_per_group([p for p, _ in ranked], groups, k=k, skip_groups=skip_groups))
    return [(p, d) for p, d in ranked if p in shown]


def _rank(
    cached: embedding_index.CachedIndex,
    vector: np.ndarray,
    *,
    bit: int | None,
    exclude: Sequence[int],
    skip_groups: list[int],
    k: int,
) -> Ranked:
    index = cached.index
    left_out = np.array(cached.position_of(exclude), dtype=np.intp)
    rows = None if bit is None else np.setdiff1d(np.flatnonzero((cached.colour_masks & bit) != 0), left_out)
    available = len(index) - len(left_out) if rows is None else len(rows)
    wanted = 3 * k
    while True:
        if rows is None:
            found = _nearest(cached, vector, exclude, wanted)
            distances = np.linalg.norm(index.vectors[found].astype(np.float64) - vector, axis=1)
        else:
            found, distances = search_among(index, vector, rows, wanted)
        ranked = [(int(index.ids[i]), round(float(d), 6)) for i, d in zip(found.tolist(), distances.tolist())]
        shown = _collapse(ranked, skip_groups, k)
        if len(shown) == k or len(found) >= available:
            return shown
        wanted *= 4  # a run of listings of one garment: look further down


def _colours(masks: np.ndarray) -> list[str]:
    counts: Counter[str] = Counter()
    for mask in masks.tolist():
        counts.update(names_from_mask(int(mask)))
    return [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], PALETTE_NAMES.index(item[0])))]


def for_product(product: Product, version: ModelVersion | None, *, colour: str | None = None) -> SimilarList:
    """A product page's list: its stored rows when they show one listing per garment and no
    colour is chosen, else ranked on request; with the colour chips of its neighbourhood."""
    own_group = [product.duplicate_group] if product.duplicate_group else []
    ranked: Ranked = []
    chips: list[str] = []
    if version is not None:
        stored = stored_rows(selectors.similar_rows(product_id=product.pk, version=version))
        found = ranked_products(
            version, product.pk, colour=colour, exclude=[product.pk], skip_groups=own_group, stored=stored
        )
        if found is not None:
            ranked, chips = found
        elif colour is None:  # rows without an index to refine them (the product's embedding just left)
            ranked = _collapse(stored, own_group, settings.SIMILAR_ITEMS)
    listings = _listings(ranked, extra_groups=own_group)
    others = listings.pop(-1).others if own_group else []
    return SimilarList(items=listings, chips=chips, colour=colour, others=[p for p in others if p.pk != product.pk])


def _listings(ranked: Ranked, *, extra_groups: Sequence[int] = ()) -> list[Listing]:
    """Listings of the ranked products with their group's other listings (2 queries), plus one
    trailing listing holding the members of each of ``extra_groups``."""
    products = {p.pk: p for p in selectors.products_by_ids(ids=[p for p, _ in ranked])}
    groups = {p.duplicate_group for p in products.values() if p.duplicate_group} | set(extra_groups)
    members = selectors.group_members(groups=sorted(groups))
    listings = [
        Listing(
            product=products[p],
            distance=d,
            others=[m for m in members.get(products[p].duplicate_group or 0, []) if m.pk != p],
        )
        for p, d in ranked
        if p in products
    ]
    for group in extra_groups:
        listings.append(Listing(product=Product(), distance=None, others=members.get(group, [])))
    return listings


def stored_rows(rows: Sequence[tuple[int, float]]) -> Ranked:
    return [(int(p), float(d)) for p, d in rows]


def for_search(query: SearchQuery, *, colour: str | None = None) -> SimilarList:
    """A finished photo search's results: as the worker stored them, or refined by a colour on
    request from the photo's stored vector."""
    stored = [(int(r["product_id"]), float(r["distance"])) for r in query.results]
    version = query.version
    if version is None or not query.vector:
        return SimilarList(items=_listings(stored), chips=[], colour=None)
    vector = np.frombuffer(query.vector, dtype=np.float32)
    found = ranked_products(version, vector, colour=colour, stored=stored)
    if found is None:
        return SimilarList(items=_listings(stored), chips=[], colour=None)
    ranked, chips = found
    return SimilarList(items=_listings(ranked), chips=chips, colour=colour)
