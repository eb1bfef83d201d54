"""A siamese network over backbone features, trained with contrastive loss.

Follows keras-io's siamese_contrastive example: one shared embedding tower used by both inputs
(and alone for inference), a loss made by a factory, data fed through tf.data, seeds fixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from similarity.files import atomic_path, sha256_file

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
        return order[starts[product] + offset]

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
    architecture: str = "mlp"
    weight_decay: float = 0.0
    loss: str = "contrastive"  # or "triplet"
    hard_negative_share: float = 0.0
    hard_negative_pool: int = 10
    patience: int = 0  # epochs without a better validation top-20 before stopping; 0 = never stop early

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ValidationSet:
    """Held-out products: their street crops query a gallery of shop rows (theirs and others)."""

    queries: np.ndarray
    query_labels: np.ndarray
    gallery: np.ndarray
    gallery_labels: np.ndarray

    def score(self, tower: keras.Model) -> dict[str, float]:
        from similarity.evaluation import top_k_accuracy

        result = top_k_accuracy(
            embed(tower, self.queries),
            self.query_labels,
            embed(tower, self.gallery),
            self.gallery_labels,
            metric="euclidean",
        )
        return {f"val_{k}": float(result[k]) for k in ("top1", "top5", "top10", "top20")}


@dataclass
class TrainResult:
    tower: keras.Model
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None


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


def train_siamese(
    street_features: np.ndarray,
    street_labels: np.ndarray,
    shop_features: np.ndarray,
    shop_labels: np.ndarray,
    config: TrainConfig,
    *,
    validation: ValidationSet | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a tower on street/shop feature pairs; fresh (optionally hard) negatives every epoch.

    With a validation set, each epoch is scored by validation top-20 (epoch 0 is the untrained
    start); the best epoch's weights are kept and training stops after `patience` epochs
    without improvement.
    """
    import keras
    import tensorflow as tf

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
    if config.loss not in ("contrastive", "triplet"):
        raise ValueError(f"Unknown loss {config.loss!r}; use 'contrastive' or 'triplet'.")

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
    if config.loss == "triplet":
        model = build_triplet(tower)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=triplet_loss(config.margin))
    else:
        model = build_siamese(tower)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=contrastive_loss(config.margin))
    # Features stay in one tensor each; the pipeline carries indices and gathers per batch,
    # so pairs never copy 4096-d rows on the host.
    street_table = tf.constant(street_features)
    shop_table = tf.constant(shop_features)

    def gather_pair(street: Any, shop: Any, label: Any) -> tuple[tuple[Any, Any], Any]:
        return (tf.gather(street_table, street), tf.gather(shop_table, shop)), label

    def gather_triplet(street: Any, positive: Any, negative: Any) -> tuple[tuple[Any, Any, Any], Any]:
        inputs = (tf.gather(street_table, street), tf.gather(shop_table, positive), tf.gather(shop_table, negative))
        return inputs, tf.zeros_like(street, dtype=tf.float32)

    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_weights, stale = -1.0, None, None, 0
    if validation is not None:
        start = validation.score(tower)
        best_score, best_epoch, best_weights = start["val_top20"], 0, tower.get_weights()
        history.append({"epoch": 0, "loss": None, **start})
        if on_epoch is not None:
            on_epoch(0, dict(history[-1]))
    for epoch in range(1, config.epochs + 1):
        hard = None
        if config.hard_negative_share > 0 and epoch > 1:
            hard = nearest_wrong_products(
                tower, street_features, street_labels, shop_features, shop_labels, pool=config.hard_negative_pool
            )
        street, shop, labels = make_pairs(
            street_labels,
            shop_labels,
            negatives_per_positive=config.negatives_per_positive,
            rng=rng,
            hard_candidates=hard,
            hard_share=config.hard_negative_share,
        )
        if len(labels) == 0:
            raise ValueError("No training pairs: no street crop has a shop row of its product.")
        if config.loss == "triplet":
            positive = {int(a): int(b) for a, b, y in zip(street, shop, labels) if y == 1}
            negatives = labels == 0
            slices = (street[negatives], np.array([positive[int(a)] for a in street[negatives]]), shop[negatives])
            gather = gather_triplet
        else:
            slices, gather = (street, shop, labels), gather_pair
        dataset = (
            tf.data.Dataset.from_tensor_slices(slices)
            .shuffle(len(slices[0]), seed=config.seed + epoch)
            .batch(config.batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        fitted = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        logs: dict[str, Any] = {"epoch": epoch, "loss": float(fitted.history["loss"][-1])}
        if validation is not None:
            logs.update(validation.score(tower))
            if logs["val_top20"] > best_score:
                best_score, best_epoch, best_weights, stale = logs["val_top20"], epoch, tower.get_weights(), 0
            else:
                stale += 1
        history.append(logs)
        if on_epoch is not None:
            on_epoch(epoch, dict(logs))
        if validation is not None and config.patience and stale >= config.patience:
            break
    if best_weights is not None:
        tower.set_weights(best_weights)
    return TrainResult(tower=tower, history=history, best_epoch=best_epoch)


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
