"""A siamese tower applied to feature rows: the one function every scorer and ranker embeds with.

Its own module (free of the training code) so evaluation and training data can embed without
importing the trainer, which imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


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
