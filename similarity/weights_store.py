"""The weights files backbones share: seeded random weights made once per store, and their cached SHA-256.

Keras is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from similarity.files import atomic_path, atomic_write_bytes, exclusive_lock, sha256_file

if TYPE_CHECKING:
    import keras

logger = logging.getLogger("similarity")


def random_weights_path(store_dir: Path, name: str, seed: int) -> Path:
    """Where the shared random initialisation of a backbone lives."""
    return Path(store_dir) / "backbones" / f"{name}-random-seed{seed}.weights.h5"


def ensure_random_weights(name: str, base: keras.Model, store_dir: Path, *, seed: int) -> Path:
    """Create backbone ``name``'s seeded random weights file (of ``base``) once, safely against concurrent processes."""
    target = random_weights_path(store_dir, name, seed)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(target.name + ".lock")):
        # Another process may have finished while we waited for the lock.
        if target.is_file():
            return target
        _seeded_init(base, seed)
        # Keras insists on the .weights.h5 suffix, so the temporary name ends with the target's.
        with atomic_path(target, prefix=".tmp-", suffix=f"-{target.name}") as temporary:
            base.save_weights(str(temporary))
            _remember_sha256(temporary, final=target, cache_dir=hash_cache_dir(store_dir))
        logger.info("Created random backbone weights %s", target)
    return target


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


def hash_cache_dir(store_dir: Path) -> Path:
    return Path(store_dir) / "backbones" / "sha256"


def _hash_key(path: Path) -> str:
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()


def _stat_key(path: Path) -> dict[str, Any]:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_sidecar(cache_dir: Path, path: Path, sha: str, stat_key: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    sidecar = cache_dir / f"{_hash_key(path)}.json"
    record = json.dumps({"path": str(Path(path).resolve()), "sha256": sha, **stat_key})
    # No fsync: a lost or empty sidecar only costs hashing the file again.
    atomic_write_bytes(sidecar, record.encode(), prefix=".tmp-", suffix=f"-{sidecar.name}", fsync=False)


def _remember_sha256(temporary: Path, *, final: Path, cache_dir: Path) -> None:
    # os.replace keeps size and mtime, so the sidecar written for the temp file stays valid.
    _write_sidecar(cache_dir, final, sha256_file(temporary), _stat_key(temporary))


def file_sha256(path: Path, *, cache_dir: Path) -> str:
    """SHA-256 of a (large) file, cached in a sidecar keyed by path, size and mtime."""
    stat_key = _stat_key(path)
    sidecar = Path(cache_dir) / f"{_hash_key(path)}.json"
    try:
        cached = json.loads(sidecar.read_text())
        if {key: cached.get(key) for key in stat_key} == stat_key:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    sha = sha256_file(path)
    try:
        _write_sidecar(Path(cache_dir), path, sha, stat_key)
    except OSError:
        logger.debug("Could not cache the sha256 of %s", path, exc_info=True)
    return sha
