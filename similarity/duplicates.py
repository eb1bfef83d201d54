"""Near-duplicate listings: which products show the same garment, and lists that show one of each."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from similarity.photohash import components, hamming_to_many

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class DuplicateRule:
    """Two listings are one garment when their first shop photos' perceptual hashes differ in at
    most ``max_hamming`` bits AND their colour descriptors lie within ``max_colour_distance``
    (Hellinger): the hash sees only brightness, so a recoloured twin of a dress has a near-equal
    hash and only its colours tell it apart. Both thresholds are chosen on data (README)."""

    max_hamming: int
    max_colour_distance: float


def matches(
    hash_value: int, descriptor: np.ndarray, hashes: np.ndarray, descriptors: np.ndarray, rule: DuplicateRule
) -> np.ndarray:
    """Indices of the rows of (hashes, descriptors) that the rule calls the same garment as this one."""
    if not len(hashes):
        return np.zeros(0, dtype=np.intp)
    near = np.flatnonzero(hamming_to_many(hash_value, hashes) <= rule.max_hamming)
    if not len(near):
        return near
    distance = np.linalg.norm(descriptors[near] - descriptor[None, :], axis=1)
    kept: np.ndarray = near[distance <= rule.max_colour_distance]
    return kept


def group_labels(
    ids: Sequence[int], hashes: np.ndarray, descriptors: np.ndarray, rule: DuplicateRule
) -> list[int | None]:
    """Each listing's group: the smallest id among the listings connected to it by the rule
    (directly or through others), or None for a listing alone."""
    pairs: list[tuple[int, int]] = []
    for i in range(len(ids)):
        pairs.extend((i, int(j)) for j in matches(int(hashes[i]), descriptors[i], hashes, descriptors, rule) if j > i)
    labels = components(len(ids), pairs)
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(int(ids[i]))
    return [min(members[label]) if len(members[label]) > 1 else None for label in labels.tolist()]


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
