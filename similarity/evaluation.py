"""Street2Shop retrieval metrics (numpy and scipy only; imported by the web process)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from similarity.neighbours import blocked_distances


def top_k_accuracy(
    queries: np.ndarray,
    query_labels: Sequence,
    gallery: np.ndarray,
    gallery_labels: Sequence,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    metric: str = "cosine",
) -> dict:
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

    result: dict = {f"top{k}": float(np.mean(ranks <= k)) for k in ks}
    result["queries"] = int(len(queries))
    result["gallery"] = int(len(products))
    return result


def _plain(label: object) -> object:
    # np.unique(...).tolist() yields Python scalars; match numpy scalars in query labels to them.
    return label.item() if isinstance(label, np.generic) else label
