"""A siamese tower applied to feature rows: the one function every scorer and ranker embeds with.

Its own module (free of the training code) so evaluation and training data can embed without
importing the trainer, which imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

# similarity.colour's descriptor length (one entry per palette name).
COLOUR_DIM = 16


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


def with_colour(embeddings: np.ndarray, descriptors: np.ndarray | None, weight: float) -> np.ndarray:
    """Product vectors ranked by shape and colour: [√(1-w)·embedding, √w·colour descriptor].

    Euclidean distance between two such rows is √((1-w)·d_shape² + w·d_colour²), so cdist and the
    index rank by the blend unchanged. ``descriptors=None`` gives a query with no colour part
    (zeros): every product's colour part has unit norm, so it adds the same w to every squared
    distance and the ranking is the tower's alone (what a photo search uses).
    weight 0 returns the embeddings as they are (the vectors of versions made before colours).
    """
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if weight <= 0:
        return embeddings
    colour = (
        np.zeros((len(embeddings), COLOUR_DIM), dtype=np.float32)
        if descriptors is None
        else np.atleast_2d(np.asarray(descriptors, dtype=np.float32))
    )
    if len(colour) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(colour)} colour descriptors")
    return np.ascontiguousarray(
        np.hstack([np.sqrt(1.0 - weight) * embeddings, np.sqrt(weight) * colour]), dtype=np.float32
    )
