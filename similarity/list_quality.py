"""How alike a product's similar items look: agreement of lists with known attributes.

On a catalogue whose attributes are known (the demo generator's), for each product's k nearest
other products: the share that have its main colour, its pattern, its cut. Used to choose the
colour weight of product lists (similarity.embedding.with_colour) on validation products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from similarity.embedding import with_colour
from similarity.neighbours import top_k


def agreement(
    vectors: np.ndarray, labels: Mapping[str, Sequence[object]], *, rows: Sequence[int], k: int = 10
) -> dict[str, float]:
    """For each attribute, the mean over ``rows`` of the share of the row's k nearest other rows
    (over all rows) that carry the row's own value."""
    vectors = np.asarray(vectors, dtype=np.float32)
    columns = {name: np.asarray(values, dtype=object) for name, values in labels.items()}
    shares: dict[str, list[float]] = {name: [] for name in columns}
    for start in range(0, len(rows), 256):
        chunk = np.asarray(rows[start : start + 256], dtype=np.intp)
        nearest, _ = top_k(vectors[chunk], vectors, k, exclude=[int(r) for r in chunk])
        for query, found in zip(chunk.tolist(), nearest):
            found = found[found >= 0]
            for name, column in columns.items():
                shares[name].append(float(np.mean(column[found] == column[query])) if len(found) else 0.0)
    return {name: float(np.mean(values)) if values else 0.0 for name, values in shares.items()}


@dataclass(frozen=True)
class WeightChoice:
    weight: float
    # Agreement of each weight tried, on the validation rows.
    tried: dict[float, dict[str, float]]


def choose_colour_weight(
    embeddings: np.ndarray,
    descriptors: np.ndarray,
    labels: Mapping[str, Sequence[object]],
    *,
    rows: Sequence[int],
    weights: Sequence[float],
    k: int = 10,
    colour: str = "colour",
    cut: str = "cut",
    pattern: str = "pattern",
) -> WeightChoice:
    """The weight whose lists a shopper would pick: the best balance of colour and cut agreement
    (the larger of the two worst-cases: max of min(colour, cut)), among weights that keep pattern
    agreement at least that of the tower alone (weight 0)."""
    tried = {
        float(w): agreement(with_colour(embeddings, descriptors, float(w)), labels, rows=rows, k=k) for w in weights
    }
    floor = tried.get(0.0, agreement(embeddings, labels, rows=rows, k=k))[pattern]
    allowed = [w for w, shares in tried.items() if shares[pattern] >= floor - 1e-9] or [0.0]
    best = max(allowed, key=lambda w: (min(tried[w][colour], tried[w][cut]), -w))
    return WeightChoice(weight=best, tried=tried)


def refined_precision(
    vectors: np.ndarray,
    carries: np.ndarray,
    truth: np.ndarray,
    *,
    rows: Sequence[int],
    colours: Sequence[int],
    k: int = 10,
) -> dict[int, float]:
    """Per colour bit: the mean over ``rows`` of the share of the k items shown when that colour
    is chosen (the nearest rows whose detected colours ``carries`` hold it) that truly carry it
    (``truth``, the known colours as bit masks)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    result: dict[int, float] = {}
    for bit in colours:
        pool = np.flatnonzero(carries & bit)
        shares = []
        for row in rows:
            candidates = pool[pool != row]
            if not len(candidates):
                continue
            nearest, _ = top_k(vectors[row], vectors[candidates], k)
            shares.append(float(np.mean((truth[candidates[nearest]] & bit) != 0)))
        result[int(bit)] = float(np.mean(shares)) if shares else 0.0
    return result


def balance_ceiling(colours: Sequence[object], cuts: Sequence[object], *, rows: Sequence[int], k: int = 10) -> float:
    """The most any list of k other products could reach, knowing the true attributes: the mean
    over ``rows`` of the best min(share with the row's colour, share with its cut).

    A list holds a products with both, b with the colour only and c with the cut only (and none
    with neither, which helps no share); the best split is searched exhaustively (k is small).
    """
    colour = np.asarray(colours, dtype=object)
    cut = np.asarray(cuts, dtype=object)
    best_shares = []
    for row in rows:
        others = np.arange(len(colour)) != row
        same_colour, same_cut = others & (colour == colour[row]), others & (cut == cut[row])
        both = int(np.sum(same_colour & same_cut))
        colour_only, cut_only = int(np.sum(same_colour & ~same_cut)), int(np.sum(same_cut & ~same_colour))
        best = 0
        for a in range(min(both, k) + 1):
            for b in range(min(colour_only, k - a) + 1):
                best = max(best, min(a + b, a + min(cut_only, k - a - b)))
        best_shares.append(best / k)
    return float(np.mean(best_shares)) if best_shares else 0.0
