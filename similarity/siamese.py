"""A siamese network over backbone features, trained with contrastive loss.

Follows keras-io's siamese_contrastive example: one shared embedding tower used by both inputs
(and alone for inference), a loss made by a factory, data fed through tf.data, seeds fixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras


class TowerChecksumError(ValueError):
    """A saved tower does not have the checksum recorded when it was trained."""


def build_embedding_model(
    input_dim: int,
    *,
    hidden_dim: int = 512,
    embedding_dim: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
) -> keras.Model:
    """The shared tower: L2-normalised features in, L2-normalised embedding out."""
    import keras

    inputs = keras.Input(shape=(input_dim,), name="features")
    # Backbone features differ wildly in scale between photos; only their direction matters.
    x = keras.layers.UnitNormalization(name="normalise_input")(inputs)
    x = keras.layers.Dense(
        hidden_dim,
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="hidden",
    )(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    x = keras.layers.Dense(
        embedding_dim,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        name="projection",
    )(x)
    outputs = keras.layers.UnitNormalization(name="embedding")(x)
    return keras.Model(inputs, outputs, name="embedding_tower")


def euclidean_distance(vectors: list[Any]) -> Any:
    """Row-wise distance between two batches of embeddings, shaped (N, 1)."""
    from keras import ops

    left, right = vectors
    squared = ops.sum(ops.square(left - right), axis=1, keepdims=True)
    # The floor keeps the gradient of sqrt finite when a pair is identical.
    return ops.sqrt(ops.maximum(squared, 1e-7))


def build_siamese(tower: keras.Model) -> keras.Model:
    """Street and shop inputs through the SAME tower, giving their euclidean distance."""
    import keras

    shape = tower.input_shape[1:]
    street = keras.Input(shape=shape, name="street")
    shop = keras.Input(shape=shape, name="shop")
    distance = keras.layers.Lambda(euclidean_distance, output_shape=(1,), name="distance")(
        [tower(street), tower(shop)]
    )
    return keras.Model(inputs=[street, shop], outputs=distance, name="siamese")


def contrastive_loss(margin: float = 1.0) -> Callable[[Any, Any], Any]:
    """Contrastive loss with label 1 = similar: y·d² + (1−y)·max(margin − d, 0)²."""

    def loss(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        # Labels arrive as (N,) and distances as (N, 1); without the reshape they would broadcast to (N, N).
        distance = ops.reshape(y_pred, (-1,))
        label = ops.cast(ops.reshape(y_true, (-1,)), distance.dtype)
        similar = label * ops.square(distance)
        dissimilar = (1.0 - label) * ops.square(ops.maximum(margin - distance, 0.0))
        return similar + dissimilar

    loss.__name__ = f"contrastive_loss_m{margin:g}"
    return loss


def make_pairs(
    street_labels: np.ndarray,
    shop_labels: np.ndarray,
    *,
    negatives_per_positive: int = 1,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(street index, shop index, label) pairs: one positive per street crop plus negatives.

    The positive uses a random shop row of the crop's own product; each negative uses a random
    row of a different product, drawn uniformly over products rather than rows so products with
    many shop photos do not dominate. Street crops whose product has no shop row are skipped.
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
        return order[starts[product] + offset]

    positive_shop = random_row(own)
    negative_street = np.repeat(street_index, negatives_per_positive)
    negative_own = np.repeat(own, negatives_per_positive)
    # Uniform over the other products: draw from P-1 slots and skip over the crop's own product.
    other = rng.integers(0, max(len(products) - 1, 1), size=len(negative_own))
    other = other + (other >= negative_own)
    negative_shop = random_row(other)

    street = np.concatenate([street_index, negative_street]).astype(np.int64)
    shop = np.concatenate([positive_shop, negative_shop]).astype(np.int64)
    labels = np.concatenate(
        [np.ones(len(street_index), np.float32), np.zeros(len(negative_street), np.float32)]
    )
    return street, shop, labels


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run; stored with the trained model."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    margin: float = 1.0
    hidden_dim: int = 512
    embedding_dim: int = 128
    dropout: float = 0.1
    negatives_per_positive: int = 3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    tower: keras.Model
    history: list[dict[str, Any]] = field(default_factory=list)


def train_siamese(
    street_features: np.ndarray,
    street_labels: np.ndarray,
    shop_features: np.ndarray,
    shop_labels: np.ndarray,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a fresh tower on street/shop feature pairs; fresh negatives every epoch."""
    import keras
    import tensorflow as tf

    street_features = np.asarray(street_features, dtype=np.float32)
    shop_features = np.asarray(shop_features, dtype=np.float32)
    if street_features.shape[1:] != shop_features.shape[1:] or street_features.ndim != 2:
        raise ValueError(
            f"Street and shop features must be 2-D with equal width, got "
            f"{street_features.shape} and {shop_features.shape}."
        )
    if len(street_features) != len(street_labels) or len(shop_features) != len(shop_labels):
        raise ValueError("Each feature row needs exactly one label.")

    keras.utils.set_random_seed(config.seed)
    tower = build_embedding_model(
        street_features.shape[1],
        hidden_dim=config.hidden_dim,
        embedding_dim=config.embedding_dim,
        dropout=config.dropout,
        seed=config.seed,
    )
    siamese = build_siamese(tower)
    siamese.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss=contrastive_loss(config.margin),
    )
    # Features stay in one tensor each; the pipeline carries indices and gathers per batch,
    # so pairs never copy 4096-d rows on the host.
    street_table = tf.constant(street_features)
    shop_table = tf.constant(shop_features)

    def gather(street: Any, shop: Any, label: Any) -> tuple[tuple[Any, Any], Any]:
        return (tf.gather(street_table, street), tf.gather(shop_table, shop)), label

    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    for epoch in range(1, config.epochs + 1):
        street, shop, labels = make_pairs(
            street_labels,
            shop_labels,
            negatives_per_positive=config.negatives_per_positive,
            rng=rng,
        )
        if len(labels) == 0:
            raise ValueError("No training pairs: no street crop has a shop row of its product.")
        dataset = (
            tf.data.Dataset.from_tensor_slices((street, shop, labels))
            .shuffle(len(labels), seed=config.seed + epoch)
            .batch(config.batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        fitted = siamese.fit(dataset, epochs=1, verbose=0, shuffle=False)
        logs = {"epoch": epoch, "loss": float(fitted.history["loss"][-1])}
        history.append(logs)
        if on_epoch is not None:
            on_epoch(epoch, dict(logs))
    return TrainResult(tower=tower, history=history)


def save_tower(tower: keras.Model, path: Path) -> str:
    """Write the tower as a .keras file atomically; return the file's sha256 hex."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"A tower is saved as a .keras file, got {path.name}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory so os.replace is atomic; readers never see a half-written model.
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tower.save(str(temporary))
        with open(temporary, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return digest


def load_tower(path: Path, *, expected_sha256: str | None = None) -> keras.Model:
    """Load a saved tower, refusing a file whose sha256 differs from the recorded one."""
    import keras

    path = Path(path)
    if expected_sha256 is not None:
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != expected_sha256.lower():
            raise TowerChecksumError(
                f"The model file {path} has sha256 {actual[:12]}…, expected {expected_sha256[:12]}…; "
                "it was replaced or corrupted. Retrain or restore the matching file."
            )
    return keras.saving.load_model(str(path), compile=False)


def embed(tower: keras.Model, features: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Embed feature rows with the tower, as (N, embedding_dim) float32."""
    features = np.asarray(features, dtype=np.float32)
    dim = int(tower.output_shape[-1])
    if features.ndim != 2:
        raise ValueError(f"Expected 2-D features, got shape {features.shape}.")
    chunks = [np.zeros((0, dim), dtype=np.float32)]
    # A direct call avoids predict()'s per-call set-up, which dominates for a few rows.
    for start in range(0, len(features), batch_size):
        output = tower(features[start : start + batch_size], training=False)
        chunks.append(np.asarray(output, dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(chunks))
