"""A siamese network over backbone features, trained with contrastive loss.

Follows keras-io's siamese_contrastive example: one shared embedding tower used by both inputs
(and alone for inference), a loss made by a factory, data fed through tf.data, seeds fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from similarity.evaluation import EvaluationData
from similarity.files import atomic_path, sha256_file
from similarity.train_config import TrainConfig
from similarity.training_data import make_pairs, nearest_wrong_products

if TYPE_CHECKING:
    import keras


class TowerChecksumError(ValueError):
    """A saved tower does not have the checksum recorded when it was trained."""


def principal_directions(
    features: np.ndarray, dim: int, *, max_rows: int = 8192, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (d_in, dim)) of L2-normalised features; missing directions are zero.

    A projection on these directions keeps most of the raw features' geometry, so a tower that
    starts from it starts near the raw-feature baseline instead of at a random embedding.
    At most `max_rows` rows (a seeded sample) are used: the directions settle long before, and
    the SVD of the full real dataset would need gigabytes.
    """
    rows = np.asarray(features)
    if len(rows) > max_rows:
        rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False))]
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    mean = rows.mean(axis=0)
    centred = rows - mean
    components = np.zeros((rows.shape[1], dim), dtype=np.float64)
    if len(rows) > 1:
        # The Gram matrix is (n, n): cheaper than the (d, d) covariance when n < 4096.
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        keep = min(dim, int((singular > singular[0] * 1e-6).sum()) if singular.size else 0)
        components[:, :keep] = vt[:keep].T
    return mean.astype(np.float32), components.astype(np.float32)


def build_embedding_model(
    input_dim: int,
    *,
    hidden_dim: int = 512,
    embedding_dim: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
    architecture: str = "mlp",
    weight_decay: float = 0.0,
    init_features: np.ndarray | None = None,
) -> keras.Model:
    """The shared tower: L2-normalised features in, L2-normalised embedding out.

    `mlp` is the seed project's tower (Dense-ReLU-Dense from a random start). `residual` starts
    as the principal-direction projection of `init_features` plus a residual MLP whose last
    layer is zero, so before training it ranks like the raw features and small data can only
    move it as far as the training signal pushes.
    """
    import keras

    regulariser = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=(input_dim,), name="features")
    # Backbone features differ wildly in scale between photos; only their direction matters.
    x = keras.layers.UnitNormalization(name="normalise_input")(inputs)
    hidden = keras.layers.Dense(
        hidden_dim,
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=regulariser,
        name="hidden",
    )(x)
    hidden = keras.layers.Dropout(dropout, seed=seed, name="dropout")(hidden)
    if architecture == "mlp":
        x = keras.layers.Dense(
            embedding_dim,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            kernel_regularizer=regulariser,
            name="projection",
        )(hidden)
    elif architecture == "residual":
        if init_features is None:
            raise ValueError("The residual tower starts from init_features' principal directions.")
        mean, components = principal_directions(init_features, embedding_dim)
        projection = keras.layers.Dense(
            embedding_dim,
            kernel_initializer=keras.initializers.Constant(components),
            # Centring folded into the bias: (x - mean) @ W == x @ W - mean @ W.
            bias_initializer=keras.initializers.Constant(-(mean @ components)),
            kernel_regularizer=regulariser,
            name="projection",
        )(x)
        residual = keras.layers.Dense(
            embedding_dim, kernel_initializer="zeros", kernel_regularizer=regulariser, name="residual"
        )(hidden)
        x = keras.layers.Add(name="projection_plus_residual")([projection, residual])
    else:
        raise ValueError(f"Unknown tower architecture {architecture!r}; use 'mlp' or 'residual'.")
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
    distance = keras.layers.Lambda(euclidean_distance, output_shape=(1,), name="distance")([tower(street), tower(shop)])
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


def build_triplet(tower: keras.Model) -> keras.Model:
    """Anchor (street), positive and negative (shop) through the same tower: (d_ap, d_an)."""
    import keras

    shape = tower.input_shape[1:]
    anchor, positive, negative = (keras.Input(shape=shape, name=n) for n in ("street", "shop", "other_shop"))
    a, p, n = tower(anchor), tower(positive), tower(negative)
    distance = keras.layers.Lambda(euclidean_distance, output_shape=(1,))
    pair = keras.layers.Concatenate(name="distances")([distance([a, p]), distance([a, n])])
    return keras.Model(inputs=[anchor, positive, negative], outputs=pair, name="triplet")


def triplet_loss(margin: float = 0.5) -> Callable[[Any, Any], Any]:
    """max(d(a, p)² − d(a, n)² + margin, 0) per triplet; y_true is unused."""

    def loss(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        positive, negative = y_pred[:, 0], y_pred[:, 1]
        return ops.maximum(ops.square(positive) - ops.square(negative) + margin, 0.0)

    loss.__name__ = f"triplet_loss_m{margin:g}"
    return loss


@dataclass
class TrainResult:
    tower: keras.Model
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None


def validation_scores(tower: keras.Model, validation: EvaluationData) -> dict[str, float]:
    """The tower's validation top-k as history keys ("val_top1" … "val_top20"), by THE scoring function."""
    figures = validation.score({"siamese": tower})["siamese"]
    return {f"val_{k}": float(figures[k]) for k in ("top1", "top5", "top10", "top20")}


def train_siamese(
    street_features: np.ndarray,
    street_labels: np.ndarray,
    shop_features: np.ndarray,
    shop_labels: np.ndarray,
    config: TrainConfig,
    *,
    validation: EvaluationData | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a tower on street/shop feature pairs; fresh (optionally hard) negatives every epoch.

    With a validation set, each epoch is scored by validation top-20 (epoch 0 is the untrained
    start); the best epoch's weights are kept and training stops after `patience` epochs
    without improvement.
    """
    import keras

    street_features, street_labels, shop_features, shop_labels = _checked_features(
        street_features, street_labels, shop_features, shop_labels
    )
    keras.utils.set_random_seed(config.seed)
    tower = build_embedding_model(
        street_features.shape[1],
        hidden_dim=config.hidden_dim,
        embedding_dim=config.embedding_dim,
        dropout=config.dropout,
        seed=config.seed,
        architecture=config.architecture,
        weight_decay=config.weight_decay,
        init_features=np.concatenate([street_features, shop_features]),
    )
    features = (street_features, street_labels, shop_features, shop_labels)
    model = _compiled(tower, config)
    feed = _PairFeed(street_features, shop_features, config)
    rng = np.random.default_rng(config.seed)
    best = _BestEpoch(validation, patience=config.patience)
    history: list[dict[str, Any]] = []

    def record(logs: dict[str, Any]) -> None:
        history.append(logs)
        if on_epoch is not None:
            on_epoch(logs["epoch"], dict(logs))

    if validation is not None:
        record({"epoch": 0, "loss": None, **best.score(tower, epoch=0)})
    for epoch in range(1, config.epochs + 1):
        street, shop, labels = _epoch_pairs(tower, features, config, rng=rng, epoch=epoch)
        fitted = model.fit(feed.dataset(street, shop, labels, epoch=epoch), epochs=1, verbose=0, shuffle=False)
        logs: dict[str, Any] = {"epoch": epoch, "loss": float(fitted.history["loss"][-1])}
        if validation is not None:
            logs.update(best.score(tower, epoch=epoch))
        record(logs)
        if best.should_stop():
            break
    best.restore(tower)
    return TrainResult(tower=tower, history=history, best_epoch=best.epoch)


def _epoch_pairs(
    tower: keras.Model,
    features: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    config: TrainConfig,
    *,
    rng: np.random.Generator,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's fresh pairs; from the second epoch on, a share of negatives is the nearest wrong products."""
    street_features, street_labels, shop_features, shop_labels = features
    hard = None
    if config.hard_negative_share > 0 and epoch > 1:
        hard = nearest_wrong_products(
            tower, street_features, street_labels, shop_features, shop_labels, pool=config.hard_negative_pool
        )
    return make_pairs(
        street_labels,
        shop_labels,
        negatives_per_positive=config.negatives_per_positive,
        rng=rng,
        hard_candidates=hard,
        hard_share=config.hard_negative_share,
    )


def _checked_features(
    street_features: np.ndarray, street_labels: np.ndarray, shop_features: np.ndarray, shop_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays as float32 features and label arrays, refused when their shapes disagree."""
    street_features = np.asarray(street_features, dtype=np.float32)
    shop_features = np.asarray(shop_features, dtype=np.float32)
    street_labels = np.asarray(street_labels)
    shop_labels = np.asarray(shop_labels)
    if street_features.shape[1:] != shop_features.shape[1:] or street_features.ndim != 2:
        raise ValueError(
            f"Street and shop features must be 2-D with equal width, got "
            f"{street_features.shape} and {shop_features.shape}."
        )
    if len(street_features) != len(street_labels) or len(shop_features) != len(shop_labels):
        raise ValueError("Each feature row needs exactly one label.")
    return street_features, street_labels, shop_features, shop_labels


def _compiled(tower: keras.Model, config: TrainConfig) -> keras.Model:
    """The training model around the tower (pairs or triplets), compiled with its loss."""
    import keras

    if config.loss == "triplet":
        model = build_triplet(tower)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=triplet_loss(config.margin))
    else:
        model = build_siamese(tower)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=contrastive_loss(config.margin))
    return model


class _PairFeed:
    """An epoch's pairs as a tf.data pipeline of indices, gathering feature rows per batch.

    Features stay in one tensor each, so pairs never copy 4096-d rows on the host.
    """

    def __init__(self, street_features: np.ndarray, shop_features: np.ndarray, config: TrainConfig) -> None:
        import tensorflow as tf

        self.street_table = tf.constant(street_features)
        self.shop_table = tf.constant(shop_features)
        self.config = config

    def _pair(self, street: Any, shop: Any, label: Any) -> tuple[tuple[Any, Any], Any]:
        import tensorflow as tf

        return (tf.gather(self.street_table, street), tf.gather(self.shop_table, shop)), label

    def _triplet(self, street: Any, positive: Any, negative: Any) -> tuple[tuple[Any, Any, Any], Any]:
        import tensorflow as tf

        inputs = (
            tf.gather(self.street_table, street),
            tf.gather(self.shop_table, positive),
            tf.gather(self.shop_table, negative),
        )
        return inputs, tf.zeros_like(street, dtype=tf.float32)

    def dataset(self, street: np.ndarray, shop: np.ndarray, labels: np.ndarray, *, epoch: int) -> Any:
        import tensorflow as tf

        if len(labels) == 0:
            raise ValueError("No training pairs: no street crop has a shop row of its product.")
        slices: tuple[np.ndarray, ...]
        if self.config.loss == "triplet":
            positive = {int(a): int(b) for a, b, y in zip(street, shop, labels) if y == 1}
            negatives = labels == 0
            slices = (street[negatives], np.array([positive[int(a)] for a in street[negatives]]), shop[negatives])
            gather: Callable[..., Any] = self._triplet
        else:
            slices, gather = (street, shop, labels), self._pair
        return (
            tf.data.Dataset.from_tensor_slices(slices)
            .shuffle(len(slices[0]), seed=self.config.seed + epoch)
            .batch(self.config.batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )


class _BestEpoch:
    """The best validation top-20 so far and its weights; says when `patience` epochs brought nothing better."""

    def __init__(self, validation: EvaluationData | None, *, patience: int) -> None:
        self.validation = validation
        self.patience = patience
        self.top20 = -1.0
        self.epoch: int | None = None
        self.weights: list[Any] | None = None
        self.stale = 0

    def score(self, tower: keras.Model, *, epoch: int) -> dict[str, float]:
        assert self.validation is not None
        logs = validation_scores(tower, self.validation)
        if logs["val_top20"] > self.top20:
            self.top20, self.epoch, self.weights, self.stale = logs["val_top20"], epoch, tower.get_weights(), 0
        else:
            self.stale += 1
        return logs

    def should_stop(self) -> bool:
        return self.validation is not None and self.patience > 0 and self.stale >= self.patience

    def restore(self, tower: keras.Model) -> None:
        """Put the best epoch's weights back (no validation: the last epoch's stay)."""
        if self.weights is not None:
            tower.set_weights(self.weights)


def save_tower(tower: keras.Model, path: Path) -> str:
    """Write the tower as a .keras file atomically; return the file's sha256 hex."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"A tower is saved as a .keras file, got {path.name}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readers never see a half-written model; Keras insists on the .keras suffix for the temp file too.
    with atomic_path(path, suffix=".keras") as temporary:
        tower.save(str(temporary))
        digest = sha256_file(temporary)
    return digest


def load_tower(path: Path, *, expected_sha256: str | None = None) -> keras.Model:
    """Load a saved tower, refusing a file whose sha256 differs from the recorded one."""
    import keras

    path = Path(path)
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256.lower():
            raise TowerChecksumError(
                f"The model file {path} has sha256 {actual[:12]}…, expected {expected_sha256[:12]}…; "
                "it was replaced or corrupted. Retrain or restore the matching file."
            )
    return keras.saving.load_model(str(path), compile=False)
