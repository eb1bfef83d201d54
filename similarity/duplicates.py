"""Near-duplicate listings: which products show the same garment, and lists that show one of each."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from similarity.garment import signature_distances

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class DuplicateRule:
    """Two listings are one garment when some shop photo of one and some shop photo of the other
    have garment signatures (similarity.garment) within ``max_distance``: retailers order their
    photos differently, so any pair counts. The threshold is chosen on data (bench_duplicates.py)."""

    max_distance: float


def matches(signature: np.ndarray, signatures: np.ndarray, rule: DuplicateRule) -> np.ndarray:
    """Indices of the rows of ``signatures`` within the rule's distance of ``signature``."""
    near: np.ndarray = np.flatnonzero(signature_distances(signature, signatures) <= rule.max_distance)
    return near


def group_labels(
    product_ids: Sequence[int], owners: np.ndarray, signatures: np.ndarray, rule: DuplicateRule
) -> list[int | None]:
    """Each product's group: the smallest product id among the products connected to it by the
    rule (directly or through others), or None for a product alone. ``owners[i]`` is the index
    in ``product_ids`` of the product whose photo ``signatures[i]`` is."""
    pairs: list[tuple[int, int]] = []
    for photo in range(len(signatures)):
        found = matches(signatures[photo], signatures, rule)
        pairs.extend((int(owners[photo]), int(owners[other])) for other in found if other > photo)
    labels = components(len(product_ids), pairs)
    members: dict[int, list[int]] = {}
    for row, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(int(product_ids[row]))
    return [min(members[label]) if len(members[label]) > 1 else None for label in labels.tolist()]


def components(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Connected components of n items linked by pairs (union-find); each labelled by its smallest index."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps later look-ups short
            i = parent[i]
        return i

    for a, b in pairs:
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"Pair ({a}, {b}) is outside 0..{n - 1}.")
        ra, rb = root(a), root(b)
        # The smaller index becomes the root, so every root is its component's smallest index.
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def one_per_group(
    ranked: Iterable[K], group_of: Mapping[K, int | None], *, k: int, skip_groups: Iterable[int] = ()
) -> list[K]:
    """The first ``k`` of ``ranked`` keeping only the best-ranked listing of each group and none
    of ``skip_groups`` (the page's own product's group: its other listings are the same item)."""
    seen = set(skip_groups)
    shown: list[K] = []
    for item in ranked:
        group = group_of.get(item)
        if group is not None:
            if group in seen:
                continue
            seen.add(group)
        shown.append(item)
        if len(shown) == k:
            break
    return shown
