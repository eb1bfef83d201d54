"""The weights files backbones share: seeded random weights made once per model store, and cached SHA-256s.

Keras is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from similarity.artifacts import Lock, Store, fetch_or_create, file_lock

if TYPE_CHECKING:
    import keras

logger = logging.getLogger("similarity")


def random_weights_name(name: str, seed: int) -> str:
    """The model store's name for the shared random initialisation of a backbone."""
    return f"backbones/{name}-random-seed{seed}.weights.h5"


def random_weights_path(store_dir: Path, name: str, seed: int) -> Path:
    """Where that file lives in a model store kept in a local folder."""
    return Path(store_dir) / random_weights_name(name, seed)


def ensure_random_weights(
    name: str,
    make_base: Callable[[], keras.Model],
    store: Store,
    *,
    seed: int,
    cache_dir: Path,
    lock: Lock | None = None,
) -> tuple[Path, str]:
    """A local, checked copy of backbone ``name``'s seeded random weights and its sha256.

    Made once for every worker of the store, under ``lock`` (one held across hosts; by default
    a file lock, enough on one host): HDF5 records write times, so two hosts that each made the
    file would hold different bytes and tag their features differently.
    """

    def create(path: Path) -> None:
        base = make_base()
        _seeded_init(base, seed)
        base.save_weights(str(path))
        logger.info("Created random backbone weights %s", random_weights_name(name, seed))

    return fetch_or_create(
        store,
        random_weights_name(name, seed),
        cache_dir=cache_dir,
        create=create,
        lock=lock or file_lock(store, cache_dir),
    )


def _seeded_init(model: keras.Model, seed: int) -> None:
    """He-uniform kernels, zero biases and identity batch norms from a numpy Generator.

    Drawn in numpy rather than through Keras initialisers so the file depends only on the seed,
    not on Keras' global RNG state. He (not Keras' default Glorot) keeps ReLU activations from
    shrinking towards zero through VGG's 18 layers, so random features still vary between photos.
    Batch norms start as the identity (gamma and moving variance 1, beta and moving mean 0):
    zeros there would make every feature the same constant.
    """
    rng = np.random.default_rng(seed)
    ones = _batch_norm_ones(model)
    depthwise = _depthwise_kernels(model)
    # Kernels are drawn in model.weights order, so models without batch norm or depthwise
    # convolutions (VGG19) get the same values for a seed as before those were handled.
    for variable in model.weights:
        shape = tuple(variable.shape)
        if id(variable) in ones:
            values = np.ones(shape, dtype=np.float32)
        elif len(shape) >= 2:
            # A depthwise kernel (h, w, channels, multiplier) sees h×w inputs per output, not h×w×channels.
            fan_in = int(np.prod(shape[:-2] if id(variable) in depthwise else shape[:-1]))
            limit = np.float32(np.sqrt(6.0 / fan_in))
            # float32 draws and in-place maths: fc1 alone holds 103M weights.
            values = rng.random(shape, dtype=np.float32)
            values *= 2 * limit
            values -= limit
        else:
            values = np.zeros(shape, dtype=np.float32)
        variable.assign(values)


def _all_layers(model: keras.Model) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _batch_norm_ones(model: keras.Model) -> set[int]:
    import keras

    return {
        id(variable)
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for variable in (layer.gamma, layer.moving_variance)
        if variable is not None
    }


def _depthwise_kernels(model: keras.Model) -> set[int]:
    import keras

    return {id(layer.kernel) for layer in _all_layers(model) if isinstance(layer, keras.layers.DepthwiseConv2D)}
