"""Training data from backbone features: the fit/validation split by product, pairs and hard negatives.

Shared by the shop's training runs and benchmarks/bench_quality.py, so both train on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from similarity.embedding import embed
from similarity.evaluation import EvaluationData

if TYPE_CHECKING:
    import keras

# Share of the training products held out (whole, never single photos) for validation.
VALIDATION_SHARE = 0.15


def validation_products(train_labels: np.ndarray, *, seed: int, share: float = VALIDATION_SHARE) -> set[int]:
    """Products held out for validation: none below 4 products, else at least one."""
    rng = np.random.default_rng(seed)
    unique = np.unique(train_labels)
    count = max(1, round(len(unique) * share)) if len(unique) >= 4 else 0
    return set(rng.choice(unique, size=count, replace=False).tolist()) if count else set()


@dataclass(frozen=True)
class TrainingData:
    """Fit crops with the shop rows their pairs draw from, and the validation set (None: too few products)."""

    street: np.ndarray
    street_labels: np.ndarray
    shop: np.ndarray
    shop_labels: np.ndarray
    validation: EvaluationData | None
    counts: dict[str, int]


def split_training_data(
    street: np.ndarray,
    street_labels: np.ndarray,
    shop: np.ndarray,
    shop_labels: np.ndarray,
    *,
    seed: int,
    share: float = VALIDATION_SHARE,
) -> TrainingData:
    """Hold out whole training products for validation; the fit sees the other products only.

    `street` are the training split's crops. `shop` may hold rows of any product: pairs and
    negatives use the fit products' rows only (test products must stay unseen), and the
    validation crops rank the fit and held-out products' rows.
    """
    street_labels = np.asarray(street_labels)
    shop_labels = np.asarray(shop_labels)
    if len(street) == 0:
        raise ValueError("No training street crops.")
    held_out = validation_products(street_labels, seed=seed, share=share)
    fit_products = set(np.unique(street_labels).tolist()) - held_out
    fit = np.isin(street_labels, list(fit_products))
    shop_fit = np.isin(shop_labels, list(fit_products))
    validation = None
    if held_out:
        in_gallery = np.isin(shop_labels, list(fit_products | held_out))
        gallery, gallery_labels = (
            (shop, shop_labels) if in_gallery.all() else (shop[in_gallery], shop_labels[in_gallery])
        )
        validation = EvaluationData(street[~fit], street_labels[~fit], gallery, gallery_labels)
    counts = {
        "train_products": len(fit_products),
        "validation_products": len(held_out),
        "train_street_crops": int(fit.sum()),
        "validation_street_crops": int((~fit).sum()),
        "train_shop_images": int(shop_fit.sum()),
    }
    return TrainingData(street[fit], street_labels[fit], shop[shop_fit], shop_labels[shop_fit], validation, counts)


def make_pairs(
    street_labels: np.ndarray,
    shop_labels: np.ndarray,
    *,
    negatives_per_positive: int = 1,
    rng: np.random.Generator,
    hard_candidates: np.ndarray | None = None,
    hard_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(street index, shop index, label) pairs: one positive per street crop plus negatives.

    The positive uses a random shop row of the crop's own product; each negative uses a random
    row of a different product, drawn uniformly over products rather than rows so products with
    many shop photos do not dominate. Street crops whose product has no shop row are skipped.
    With `hard_candidates` ((n_street, m) product labels, e.g. the nearest wrong products under
    the current model), a `hard_share` of the negatives is drawn from a crop's candidates instead.
    """
    street_labels = np.asarray(street_labels)
    shop_labels = np.asarray(shop_labels)
    if negatives_per_positive < 0:
        raise ValueError("negatives_per_positive must not be negative.")
    products, shop_product = np.unique(shop_labels, return_inverse=True)
    order = np.argsort(shop_product, kind="stable")
    counts = np.bincount(shop_product, minlength=len(products))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    position = np.searchsorted(products, street_labels)
    position = np.minimum(position, max(len(products) - 1, 0))
    known = len(products) > 0
    has_shop = (products[position] == street_labels) if known else np.zeros(len(street_labels), bool)
    street_index = np.flatnonzero(has_shop)
    own = position[street_index]
    if negatives_per_positive and len(street_index) and len(products) < 2:
        raise ValueError("Negative pairs need shop rows of at least two products.")

    def random_row(product: np.ndarray) -> np.ndarray:
        offset = (rng.random(len(product)) * counts[product]).astype(np.int64)
        return np.asarray(order[starts[product] + offset])

    positive_shop = random_row(own)
    negative_street = np.repeat(street_index, negatives_per_positive)
    negative_own = np.repeat(own, negatives_per_positive)
    # Uniform over the other products: draw from P-1 slots and skip over the crop's own product.
    other = rng.integers(0, max(len(products) - 1, 1), size=len(negative_own))
    other = other + (other >= negative_own)
    if hard_candidates is not None and hard_share > 0 and len(negative_street):
        candidates = np.asarray(hard_candidates)[negative_street]
        picked = candidates[np.arange(len(candidates)), rng.integers(0, candidates.shape[1], len(candidates))]
        hard_position = np.minimum(np.searchsorted(products, picked), len(products) - 1)
        usable = (products[hard_position] == picked) & (hard_position != negative_own)
        use_hard = usable & (rng.random(len(other)) < hard_share)
        other = np.where(use_hard, hard_position, other)
    negative_shop = random_row(other)

    street = np.concatenate([street_index, negative_street]).astype(np.int64)
    shop = np.concatenate([positive_shop, negative_shop]).astype(np.int64)
    labels = np.concatenate([np.ones(len(street_index), np.float32), np.zeros(len(negative_street), np.float32)])
    return street, shop, labels


def nearest_wrong_products(
    tower: keras.Model,
    street_features: np.ndarray,
    street_labels: np.ndarray,
    shop_features: np.ndarray,
    shop_labels: np.ndarray,
    *,
    pool: int,
) -> np.ndarray:
    """(n_street, pool) labels of the products nearest to each crop under `tower`, its own excluded."""
    from similarity.neighbours import prepare_matrix, top_k

    shop_labels = np.asarray(shop_labels)
    street_labels = np.asarray(street_labels)
    # Over-fetch rows: several rows may belong to one product, and one of them is the crop's own.
    want = min(len(shop_labels), (pool + 1) * 3)
    street = embed(tower, street_features)
    shop = prepare_matrix(embed(tower, shop_features))
    # In blocks of crops, so the (crops × shop rows) distance matrix never exists whole.
    block = max(1, 4_000_000 // max(len(shop), 1))
    rows = (
        np.concatenate(
            [np.atleast_2d(top_k(street[i : i + block], shop, k=want)[0]) for i in range(0, len(street), block)]
        )
        if len(street)
        else np.zeros((0, want), dtype=np.intp)
    )
    result = np.empty((len(street_labels), pool), dtype=shop_labels.dtype)
    for i, ranked in enumerate(rows):
        labels = [label for label in dict.fromkeys(shop_labels[ranked].tolist()) if label != street_labels[i]]
        labels = labels[:pool] or [street_labels[i]]  # make_pairs ignores a crop's own product
        result[i] = np.resize(np.asarray(labels, dtype=shop_labels.dtype), pool)
    return result
