"""Do similar lists look alike? Measured on a catalogue whose attributes are known (the demo's).

Reads the demo generator's attributes (demo_products_<category>.json) beside the shop's data:
each product's true main colour, accent, pattern and cut. Reports, for raw fc2 features, the
trained tower and the tower blended with the colour descriptor, the share of each product's 10
nearest items sharing its main colour, pattern and cut; chooses the colour weight on the
validation products; and measures the colour refinement and its exact-product accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shop import runtime
from shop.models import ModelVersion, Product, Split
from shop.services import colours, evaluation
from shop.services.indexing import product_feature_matrix
from shop.street2shop.demo.plan import COLOURS
from shop.street2shop.metadata import load_demo_products
from similarity.colour import colour_mask, name_colour
from similarity.embedding import embed, with_colour
from similarity.list_quality import agreement, balance_ceiling, choose_colour_weight, refined_precision
from similarity.neighbours import top_k
from similarity.training_data import validation_products

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# A colour is offered as a refinement worth measuring when this many products carry it.
MIN_CARRIERS = 10
_RGB = {**COLOURS, "white": (255, 255, 255)}


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _truth(root: Path, category: str) -> dict[int, dict[str, Any]]:
    """Known attributes by shop product id, originals only (a relisted copy would agree with itself)."""
    demo = load_demo_products(root, category)
    by_s2s = dict(Product.objects.filter(category=category).values_list("s2s_product_id", "id"))
    truth = {}
    for s2s_id, entry in demo.items():
        if s2s_id in by_s2s and entry.duplicate_of is None and "colour" in entry.attributes:
            truth[by_s2s[s2s_id]] = entry.attributes
    return truth


def evaluate_lists(*, root: Path, category: str, version: ModelVersion, k: int = 10) -> dict[str, Any]:
    """The figures above for one category's version; see the module docstring."""
    truth = _truth(root, category)
    ids, stacks = product_feature_matrix(product_ids=sorted(truth), weights_id=version.weights_id)
    if len(ids) < k + 2:
        raise ValueError(f"only {len(ids)} products with known attributes and features")
    tower = runtime.tower_for(version)
    raw = _unit(np.stack([stack.mean(axis=0) for stack in stacks]))
    shape = _unit(np.stack([embed(tower, stack).mean(axis=0) for stack in stacks]))
    descriptors = colours.colour_descriptors(product_ids=ids)
    main = [name_colour(_RGB[truth[p]["colour"]]) for p in ids]
    labels = {
        "colour": main,
        "pattern": [truth[p]["pattern"] for p in ids],
        "cut": [truth[p]["silhouette"] for p in ids],
    }
    split_rows = _split_rows(ids, category=category, seed=int(version.hyperparameters.get("seed", 0)))
    choice = choose_colour_weight(shape, descriptors, labels, rows=split_rows["validation"], weights=WEIGHTS, k=k)
    test_rows = split_rows["test"]
    blended = with_colour(shape, descriptors, choice.weight)
    truth_masks = np.array(
        [
            colour_mask({name_colour(_RGB[truth[p]["colour"]]), name_colour(_RGB[truth[p]["accent_colour"]])})
            for p in ids
        ]
    )
    detected = np.array(list(Product.objects.filter(pk__in=ids).order_by("id").values_list("colour_mask", flat=True)))
    return {
        "category": category,
        "version": version.pk,
        "products": len(ids),
        "validation_products": len(split_rows["validation"]),
        "test_products": len(test_rows),
        "lists": {
            "raw fc2 (cosine)": agreement(raw, labels, rows=test_rows, k=k),
            "trained": agreement(shape, labels, rows=test_rows, k=k),
            f"trained + colour (weight {choice.weight:g})": agreement(blended, labels, rows=test_rows, k=k),
        },
        "chosen_weight": choice.weight,
        # What no ranking can beat on this catalogue: few products share both a colour and a cut.
        "ceiling": balance_ceiling(labels["colour"], labels["cut"], rows=test_rows, k=k),
        "validation_sweep": {f"{w:g}": shares for w, shares in choice.tried.items()},
        "refined": _refinement(blended, detected, truth_masks, rows=test_rows, k=k),
        "street": _street_accuracy(version, tower, ids, blended, detected, main, k=k, weight=choice.weight),
    }


def _split_rows(ids: Sequence[int], *, category: str, seed: int) -> dict[str, list[int]]:
    """Rows of validation products (held out of training, as training holds them out) and test products."""
    splits = dict(
        Product.objects.filter(pk__in=ids, street_photos__isnull=False).values_list("id", "street_photos__split")
    )
    train = np.array([p for p in ids if splits.get(p) == Split.TRAIN], dtype=np.int64)
    held_out = validation_products(train, seed=seed)
    return {
        "validation": [i for i, p in enumerate(ids) if p in held_out],
        "test": [i for i, p in enumerate(ids) if splits.get(p) == Split.TEST],
    }


def _refinement(
    vectors: np.ndarray, detected: np.ndarray, truth: np.ndarray, *, rows: list[int], k: int
) -> dict[str, Any]:
    """Choosing a colour carried (main or accent) by ≥ MIN_CARRIERS products: the share of the k
    items shown that truly carry it, per colour and averaged over colours."""
    from similarity.colour import PALETTE_NAMES

    eligible = [1 << i for i in range(len(PALETTE_NAMES)) if int(np.sum((truth & (1 << i)) != 0)) >= MIN_CARRIERS]
    precision = refined_precision(vectors, detected, truth, rows=rows, colours=eligible, k=k)
    per_colour = {PALETTE_NAMES[bit.bit_length() - 1]: share for bit, share in precision.items()}
    return {"per_colour": per_colour, "mean": float(np.mean(list(per_colour.values()))) if per_colour else None}


def _street_accuracy(
    version: ModelVersion,
    tower: Any,
    ids: list[int],
    blended: np.ndarray,
    detected: np.ndarray,
    main: list[str],
    *,
    k: int,
    weight: float,
) -> dict[str, Any]:
    """Exact-product top-k of test street crops: as searched (shape only), and refined by the
    right product's main colour (only products whose detected colours carry it are ranked)."""
    features, labels = evaluation.street_features(
        category=version.category, split=Split.TEST, weights_id=version.weights_id
    )
    position = {p: i for i, p in enumerate(ids)}
    keep = [i for i, label in enumerate(labels.tolist()) if label in position]
    if not keep:
        return {"queries": 0}
    queries = with_colour(embed(tower, features[keep]), None, weight)
    targets = np.array([position[int(labels[i])] for i in keep])
    found, _ = top_k(queries, blended, max(20, k))
    plain_top_k = float(np.mean([t in row[:k] for t, row in zip(targets, found)]))
    plain_top20 = float(np.mean([t in row[:20] for t, row in zip(targets, found)]))
    hits = []
    for query, target in zip(queries, targets):
        pool = np.flatnonzero(detected & colour_mask([main[target]]))
        nearest, _ = top_k(query, blended[pool], k) if len(pool) else (np.zeros(0, dtype=np.intp), None)
        hits.append(target in pool[nearest])
    return {"queries": len(keep), f"top{k}": plain_top_k, "top20": plain_top20, f"refined_top{k}": float(np.mean(hits))}
