"""Global pooling of convolutional feature maps into one vector per image.

Imports Keras at the top: only similarity.backbone imports this module, and only inside the
functions that build models, so importing similarity.backbone stays cheap.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# The p of Radenović et al.'s GeM that works well for retrieval with a fixed (untrained) p.
GEM_P = 3.0
# Keeps pow() away from exact zeros, which ReLU outputs are full of.
GEM_EPS = 1e-6


def gem_pool(features: Any, *, p: float = GEM_P, eps: float = GEM_EPS) -> Any:
    """Generalised mean over the spatial axes of (N, H, W, C) maps: (mean x^p)^(1/p), x clamped to eps.

    p=1 is average pooling and p→∞ tends to max pooling; for p ≥ 1 it is never below the mean.
    """
    if p <= 0:
        raise ValueError(f"GeM needs p > 0, got {p}.")
    clamped = ops.maximum(ops.convert_to_tensor(features, dtype="float32"), eps)
    return ops.power(ops.mean(ops.power(clamped, p), axis=(1, 2)), 1.0 / p)


class GeMPooling2D(keras.layers.Layer):  # type: ignore[misc]  # keras ships no type information
    """gem_pool as a weightless layer, so adding it leaves the backbone's weights file unchanged."""

    def __init__(self, p: float = GEM_P, eps: float = GEM_EPS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.p = float(p)
        self.eps = float(eps)

    def call(self, inputs: Any) -> Any:
        return gem_pool(inputs, p=self.p, eps=self.eps)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int | None]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "p": self.p, "eps": self.eps}
