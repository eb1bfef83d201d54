from __future__ import annotations

import hashlib

import numpy as np
import pytest

from similarity.embedding import embed
from similarity.evaluation import top_k_accuracy
from similarity.siamese import (
    TowerChecksumError,
    build_embedding_model,
    build_siamese,
    contrastive_loss,
    load_tower,
    save_tower,
    train_siamese,
)
from similarity.train_config import TrainConfig
from similarity.training_data import make_pairs

from .factories import street_and_shop


@pytest.fixture(scope="module")
def trained():
    """A tower trained on 16 street crops per product; 4 more per product are held out."""
    street, street_labels, shop, shop_labels = street_and_shop(street_per_product=20, nuisance=32, seed=0)
    # street_and_shop tiles products, so the last 4 × 12 rows are four crops of every product.
    split = 16 * 12
    epochs = []
    # The seed project's tower: random start, no weight decay, random negatives only, no early stopping.
    config = TrainConfig(
        epochs=12,
        batch_size=32,
        learning_rate=3e-3,
        hidden_dim=64,
        embedding_dim=16,
        seed=3,
        architecture="mlp",
        weight_decay=0.0,
        hard_negative_share=0.0,
        patience=0,
    )
    result = train_siamese(
        street[:split],
        street_labels[:split],
        shop,
        shop_labels,
        config,
        on_epoch=lambda epoch, logs: epochs.append((epoch, logs)),
    )
    held_out = (street[split:], street_labels[split:], shop, shop_labels)
    return result, epochs, config, held_out


def test_it_builds_a_tower_with_unit_length_embeddings_of_the_asked_size():
    tower = build_embedding_model(20, hidden_dim=16, embedding_dim=6)
    features = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)

    out = embed(tower, features)

    assert out.shape == (5, 6)
    assert out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_it_normalises_the_tower_input_so_feature_scale_does_not_matter():
    tower = build_embedding_model(20, hidden_dim=16, embedding_dim=6)
    features = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)

    assert np.allclose(embed(tower, features), embed(tower, 50 * features), atol=1e-5)


def test_it_builds_the_same_tower_for_the_same_seed():
    features = np.random.default_rng(0).normal(size=(3, 20)).astype(np.float32)

    first = embed(build_embedding_model(20, hidden_dim=16, embedding_dim=6, seed=4), features)
    again = embed(build_embedding_model(20, hidden_dim=16, embedding_dim=6, seed=4), features)
    other = embed(build_embedding_model(20, hidden_dim=16, embedding_dim=6, seed=5), features)

    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_it_shares_one_tower_between_both_siamese_inputs():
    tower = build_embedding_model(20, hidden_dim=16, embedding_dim=6)
    siamese = build_siamese(tower)
    rng = np.random.default_rng(0)
    street, shop = rng.normal(size=(2, 4, 20)).astype(np.float32)

    distance = np.asarray(siamese([street, shop], training=False))

    assert [layer for layer in siamese.layers if layer is tower] == [tower]
    expected = np.linalg.norm(embed(tower, street) - embed(tower, shop), axis=1, keepdims=True)
    assert distance.shape == (4, 1)
    assert np.allclose(distance, expected, atol=1e-5)


def test_it_computes_contrastive_loss_per_pair():
    loss = contrastive_loss(margin=1.0)
    labels = np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32)
    distances = np.array([[0.5], [0.3], [1.5], [0.0]], dtype=np.float32)

    values = np.asarray(loss(labels, distances))

    # similar: d²; dissimilar: max(margin - d, 0)²
    assert np.allclose(values, [0.25, 0.49, 0.0, 0.0])
    assert np.allclose(np.asarray(contrastive_loss(margin=2.0)(labels, distances))[2], 0.25)


def test_it_makes_one_positive_and_n_negatives_per_street_crop():
    street_labels = np.array([10, 10, 20, 30])
    shop_labels = np.array([20, 10, 30, 10, 40])

    street, shop, labels = make_pairs(
        street_labels, shop_labels, negatives_per_positive=3, rng=np.random.default_rng(0)
    )

    assert len(labels) == 4 * (1 + 3)
    assert labels.dtype == np.float32
    same = street_labels[street] == shop_labels[shop]
    assert np.array_equal(same, labels == 1)
    assert np.bincount(street[labels == 1]).tolist() == [1, 1, 1, 1]
    assert np.bincount(street[labels == 0]).tolist() == [3, 3, 3, 3]


def test_it_draws_negatives_from_every_other_product():
    street_labels = np.zeros(500, dtype=int)
    shop_labels = np.array([0, 1, 2, 2, 2, 2, 3])

    _street, shop, labels = make_pairs(
        street_labels, shop_labels, negatives_per_positive=1, rng=np.random.default_rng(0)
    )

    negative_products = shop_labels[shop[labels == 0]]
    counts = np.bincount(negative_products, minlength=4)
    assert counts[0] == 0
    # Uniform over products, not rows: product 2's four photos do not make it 4× as likely.
    assert counts[1:].min() > 120


def test_it_skips_street_crops_without_a_shop_row_and_is_reproducible():
    street_labels = np.array([1, 2, 99])
    shop_labels = np.array([1, 2])

    first = make_pairs(street_labels, shop_labels, negatives_per_positive=2, rng=np.random.default_rng(5))
    again = make_pairs(street_labels, shop_labels, negatives_per_positive=2, rng=np.random.default_rng(5))

    assert 2 not in first[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_it_needs_two_products_for_negatives():
    with pytest.raises(ValueError, match="two products"):
        make_pairs(np.array([1, 1]), np.array([1]), negatives_per_positive=1, rng=np.random.default_rng(0))


def test_it_lowers_the_loss_on_separable_data(trained):
    result, *_ = trained

    losses = [entry["loss"] for entry in result.history]
    assert [entry["epoch"] for entry in result.history] == list(range(1, 13))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_it_reports_each_epoch_as_it_ends(trained):
    result, epochs, *_ = trained

    assert [epoch for epoch, _ in epochs] == list(range(1, 13))
    assert [logs for _, logs in epochs] == result.history


def test_it_learns_embeddings_that_find_the_product_of_unseen_street_crops(trained):
    result, _, config, (street, street_labels, shop, shop_labels) = trained
    untrained = build_embedding_model(
        street.shape[1], hidden_dim=config.hidden_dim, embedding_dim=config.embedding_dim, seed=config.seed
    )

    before = top_k_accuracy(embed(untrained, street), street_labels, embed(untrained, shop), shop_labels, ks=(1,))
    after = top_k_accuracy(embed(result.tower, street), street_labels, embed(result.tower, shop), shop_labels, ks=(1,))

    assert before["top1"] < 0.5
    assert after["top1"] > 0.8


def test_it_round_trips_a_saved_tower(trained, tmp_path):
    result, _, _, (street, *_) = trained
    path = tmp_path / "models" / "tower.keras"

    digest = save_tower(result.tower, path)
    loaded = load_tower(path, expected_sha256=digest)

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(embed(loaded, street), embed(result.tower, street))
    assert [p.name for p in path.parent.iterdir()] == ["tower.keras"]


def test_it_refuses_a_tower_whose_checksum_changed(trained, tmp_path):
    result, *_ = trained
    path = tmp_path / "tower.keras"
    digest = save_tower(result.tower, path)
    with open(path, "ab") as handle:
        handle.write(b"tampered")

    with pytest.raises(TowerChecksumError, match="sha256"):
        load_tower(path, expected_sha256=digest)


def test_it_embeds_nothing_as_an_empty_matrix():
    tower = build_embedding_model(20, hidden_dim=16, embedding_dim=6)

    assert embed(tower, np.zeros((0, 20), dtype=np.float32)).shape == (0, 6)


def test_it_embeds_in_batches_like_one_call():
    tower = build_embedding_model(20, hidden_dim=16, embedding_dim=6)
    features = np.random.default_rng(0).normal(size=(10, 20)).astype(np.float32)

    assert np.allclose(embed(tower, features, batch_size=3), embed(tower, features), atol=1e-6)


def test_it_serialises_every_field_of_the_train_config():
    config = TrainConfig(epochs=3)

    assert config.to_dict() == {
        "epochs": 3,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "margin": 1.0,
        "hidden_dim": 512,
        "embedding_dim": 128,
        "dropout": 0.1,
        "negatives_per_positive": 3,
        "seed": 0,
        "architecture": "residual",
        "weight_decay": 1e-4,
        "loss": "contrastive",
        "hard_negative_share": 0.5,
        "hard_negative_pool": 10,
        "patience": 6,
        "colour_weight": 0.0,
    }
