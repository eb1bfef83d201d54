"""The issue-4 training design: a tower that starts at the raw geometry, hard negatives, triplets, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from similarity.embedding import embed
from similarity.evaluation import EvaluationData, top_k_accuracy
from similarity.siamese import (
    build_embedding_model,
    principal_directions,
    train_siamese,
    triplet_loss,
)
from similarity.train_config import TrainConfig
from similarity.training_data import make_pairs, nearest_wrong_products

from .factories import street_and_shop


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_it_finds_principal_directions_and_zero_fills_missing_ones():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 12)).astype(np.float32)

    mean, components = principal_directions(rows, 8)

    assert mean.shape == (12,) and components.shape == (12, 8)
    kept = components[:, np.linalg.norm(components, axis=0) > 0]
    assert kept.shape[1] == 4  # five rows span four centred directions
    assert np.allclose(kept.T @ kept, np.eye(4), atol=1e-5)


def test_it_starts_the_residual_tower_at_the_principal_projection():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(40, 16)).astype(np.float32)
    tower = build_embedding_model(16, hidden_dim=8, embedding_dim=16, architecture="residual", init_features=rows)

    mean, components = principal_directions(rows, 16)
    expected = _unit((_unit(rows) - mean) @ components)

    assert np.allclose(embed(tower, rows), expected, atol=1e-4)


def test_it_refuses_a_residual_tower_without_features_and_an_unknown_architecture():
    with pytest.raises(ValueError, match="init_features"):
        build_embedding_model(8, architecture="residual")
    with pytest.raises(ValueError, match="architecture"):
        build_embedding_model(8, architecture="transformer")


def test_it_draws_hard_negatives_from_the_candidates():
    street_labels = np.repeat(np.arange(10), 2)
    shop_labels = np.arange(10)
    hard = np.full((len(street_labels), 3), 7)
    hard[street_labels == 7] = 3  # never a crop's own product

    street, shop, labels = make_pairs(
        street_labels,
        shop_labels,
        negatives_per_positive=4,
        rng=np.random.default_rng(0),
        hard_candidates=hard,
        hard_share=1.0,
    )

    negatives = labels == 0
    expected = np.where(street_labels[street[negatives]] == 7, 3, 7)
    assert (shop_labels[shop[negatives]] == expected).all()
    assert (shop_labels[shop[labels == 1]] == street_labels[street[labels == 1]]).all()


def test_it_lists_the_nearest_wrong_products_under_a_tower():
    street, street_labels, shop, shop_labels = street_and_shop(products=6, street_per_product=2, nuisance=4)
    tower = build_embedding_model(
        street.shape[1], hidden_dim=8, embedding_dim=8, architecture="residual", init_features=shop
    )

    hard = nearest_wrong_products(tower, street, street_labels, shop, shop_labels, pool=3)

    assert hard.shape == (len(street), 3)
    assert not (hard == street_labels[:, None]).any()


def test_it_computes_the_triplet_loss_per_triplet():
    distances = np.array([[0.2, 0.9], [0.8, 0.3]], dtype=np.float32)

    loss = np.asarray(triplet_loss(0.5)(None, distances))

    assert np.allclose(loss, [max(0.04 - 0.81 + 0.5, 0), 0.64 - 0.09 + 0.5])


@pytest.fixture(scope="module")
def data():
    street, street_labels, shop, shop_labels = street_and_shop(products=16, street_per_product=10, nuisance=48, seed=2)
    train = street_labels < 12  # products 12-15 are held out, as the shop's validation split is
    validation = EvaluationData(street[~train], street_labels[~train], shop, shop_labels)
    return street[train], street_labels[train], shop[shop_labels < 12], shop_labels[shop_labels < 12], validation


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_it_trains_with_either_loss_and_keeps_the_best_validation_epoch(data, loss):
    street, street_labels, shop, shop_labels, validation = data
    config = TrainConfig(
        epochs=6,
        batch_size=32,
        learning_rate=3e-3,
        hidden_dim=32,
        embedding_dim=16,
        architecture="residual",
        weight_decay=1e-4,
        loss=loss,
        margin=0.5 if loss == "triplet" else 1.0,
        hard_negative_share=0.5,
        hard_negative_pool=3,
        patience=3,
        seed=1,
    )
    seen = []

    result = train_siamese(
        street,
        street_labels,
        shop,
        shop_labels,
        config,
        validation=validation,
        on_epoch=lambda epoch, logs: seen.append(epoch),
    )

    assert seen[0] == 0 and result.history[0]["loss"] is None  # epoch 0 scores the untrained start
    losses = [row["loss"] for row in result.history[1:]]
    assert losses[-1] < losses[0]
    scores = [row["val_top20"] for row in result.history]
    assert result.best_epoch == int(np.argmax(scores))
    kept = top_k_accuracy(
        embed(result.tower, validation.queries),
        validation.query_labels,
        embed(result.tower, validation.gallery),
        validation.gallery_labels,
        metric="euclidean",
    )
    assert kept["top20"] == pytest.approx(max(scores))


def test_it_stops_early_when_validation_stops_improving(data):
    street, street_labels, shop, shop_labels, validation = data
    # A learning rate this high wrecks the start; validation never beats epoch 0 again.
    config = TrainConfig(
        epochs=30,
        batch_size=32,
        learning_rate=5.0,
        hidden_dim=16,
        embedding_dim=8,
        architecture="residual",
        weight_decay=0.0,
        hard_negative_share=0.0,
        patience=2,
        seed=0,
    )

    result = train_siamese(street, street_labels, shop, shop_labels, config, validation=validation)

    assert len(result.history) < 31
    assert result.history[-1]["epoch"] - result.best_epoch == 2


def test_it_takes_principal_directions_from_a_seeded_sample_of_many_rows():
    rows = np.random.default_rng(3).normal(size=(500, 10)).astype(np.float32)

    first = principal_directions(rows, 4, max_rows=100, seed=1)
    again = principal_directions(rows, 4, max_rows=100, seed=1)

    assert np.array_equal(first[1], again[1])
    assert np.allclose(first[1].T @ first[1], np.eye(4), atol=1e-5)
