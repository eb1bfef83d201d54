"""Pretrained CNN backbones that turn preprocessed photos into feature vectors.

The precision they compute in is similarity.precision's; the weights files they share live in
similarity.weights_store. Keras and TensorFlow are imported inside functions so that importing
this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from similarity.artifacts import Folder, Lock, Store, file_sha256, hash_cache_dir
from similarity.images import preprocess_image, preprocess_image_mobilenet
from similarity.precision import DTYPE_POLICIES, Precision, dtype_policy, float32_outputs
from similarity.weights_store import ensure_random_weights

if TYPE_CHECKING:
    import keras

logger = logging.getLogger("similarity")

# Seconds a single network operation of the ImageNet download may stall before we give up.
DOWNLOAD_TIMEOUT = 10.0

RANDOM_WARNING = (
    "Using RANDOMLY initialised {name} weights ({reason}): features are NOT ImageNet features "
    "and similar-items quality will be poor. Put {file} in {cache} to fix this."
)


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be found, downloaded or read."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its ImageNet weights live."""

    name: str
    dim: int
    input_size: int
    # Builds the architecture the weights file belongs to, with weights=None.
    build_base: Callable[[], keras.Model]
    # Cuts or extends the base into the model that returns features.
    build_features: Callable[[keras.Model], keras.Model]
    imagenet_file: str
    imagenet_url: str
    imagenet_md5: str | None
    preprocess: Callable[[Image.Image, int], np.ndarray] = preprocess_image
    # Another backbone whose seeded random weights file this one loads instead of making its own,
    # so both see the same random layers. This base must be a leading part of that one's: Keras
    # matches the layers of a .weights.h5 file in order and ignores the ones left over.
    random_weights_of: str | None = None


def _vgg19_with_top() -> keras.Model:
    import keras

    return keras.applications.VGG19(weights=None, include_top=True)


def _vgg19_convolutions() -> keras.Model:
    import keras

    return keras.applications.VGG19(weights=None, include_top=False)


def _mobilenet_v2() -> keras.Model:
    import keras

    return keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(224, 224, 3))


def _cut_at_fc2(base: keras.Model) -> keras.Model:
    import keras

    return keras.Model(base.inputs, base.get_layer("fc2").output, name="vgg19_fc2")


def _pool_block5(pooling: Literal["max", "gem"]) -> Callable[[keras.Model], keras.Model]:
    def build(base: keras.Model) -> keras.Model:
        import keras

        from similarity.pooling import GeMPooling2D

        # block5_conv4 (14×14, ReLU), not block5_pool (7×7): max pooling gives the same vector
        # either way, and GeM should average every activation, not only the 2×2 local maxima.
        maps = base.get_layer("block5_conv4").output
        pool = keras.layers.GlobalMaxPooling2D() if pooling == "max" else GeMPooling2D()
        return keras.Model(base.inputs, pool(maps), name=f"vgg19_block5_{pooling}")

    return build


def _average_pool(base: keras.Model) -> keras.Model:
    import keras

    pooled = keras.layers.GlobalAveragePooling2D()(base.output)
    return keras.Model(base.inputs, pooled, name=f"{base.name}_avg")


_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_VGG19_TOP = "vgg19_weights_tf_dim_ordering_tf_kernels.h5"
_VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
_MOBILENET_V2_NOTOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _vgg19_block5(pooling: Literal["max", "gem"]) -> BackboneSpec:
    return BackboneSpec(
        name=f"vgg19-block5-{pooling}",
        dim=512,
        input_size=224,
        build_base=_vgg19_convolutions,
        build_features=_pool_block5(pooling),
        # Keras' own include_top=False file: the same ImageNet convolutions as vgg19-fc2's, 80 MB.
        imagenet_file=_VGG19_NOTOP,
        imagenet_url=_KERAS_WEIGHTS + "vgg19/" + _VGG19_NOTOP,
        imagenet_md5="253f8cb515780f3b799900260a226db6",
        random_weights_of="vgg19-fc2",
    )


BACKBONES: dict[str, BackboneSpec] = {
    "vgg19-fc2": BackboneSpec(
        name="vgg19-fc2",
        dim=4096,
        input_size=224,
        build_base=_vgg19_with_top,
        build_features=_cut_at_fc2,
        imagenet_file=_VGG19_TOP,
        imagenet_url=_KERAS_WEIGHTS + "vgg19/" + _VGG19_TOP,
        # The hash keras.applications.VGG19 itself checks.
        imagenet_md5="cbe5617147190e668d6c5d5026f83318",
    ),
    "vgg19-block5-max": _vgg19_block5("max"),
    "vgg19-block5-gem": _vgg19_block5("gem"),
    "mobilenetv2": BackboneSpec(
        name="mobilenetv2",
        dim=1280,
        input_size=224,
        build_base=_mobilenet_v2,
        build_features=_average_pool,
        imagenet_file=_MOBILENET_V2_NOTOP,
        imagenet_url=_KERAS_WEIGHTS + "mobilenet_v2/" + _MOBILENET_V2_NOTOP,
        # keras.applications.MobileNetV2 checks no hash for this file either.
        imagenet_md5=None,
        preprocess=preprocess_image_mobilenet,
    ),
}


@dataclass(frozen=True)
class ResolvedWeights:
    """Which weights a backbone will use; path is None for random weights."""

    kind: Literal["imagenet", "random", "file"]
    path: Path | None
    warning: str | None = None


def get_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name, listing the known ones on a typo."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"Unknown backbone {name!r}; known backbones: {known}.") from None


def keras_cache_dir() -> Path:
    """The Keras model cache, read from KERAS_HOME now rather than when Keras was imported."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        # Keras' own rule: ~/.keras, or /tmp/.keras when the home directory is read-only.
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = str(base / ".keras")
    return Path(home).expanduser() / "models"


def resolve_weights(setting: str, *, allow_download: bool = True, name: str = "vgg19-fc2") -> ResolvedWeights:
    """Turn "auto" | "imagenet" | "random" | a file path into concrete weights."""
    spec = get_spec(name)
    if setting == "random":
        return ResolvedWeights("random", None, _random_warning(spec, "weights='random' was asked for"))
    if setting in ("imagenet", "auto"):
        try:
            return ResolvedWeights("imagenet", _imagenet_path(spec, allow_download=allow_download))
        except WeightsUnavailable as exc:
            if setting == "imagenet":
                raise
            warning = _random_warning(spec, "ImageNet weights are not available")
            logger.warning("%s (%s)", warning, exc)
            return ResolvedWeights("random", None, warning)
    path = Path(setting).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"Backbone weights {setting!r} is not 'auto', 'imagenet', 'random' or an existing file."
        )
    return ResolvedWeights("file", path.resolve())


def _random_warning(spec: BackboneSpec, reason: str) -> str:
    return RANDOM_WARNING.format(name=spec.name, reason=reason, file=spec.imagenet_file, cache=keras_cache_dir())


def _imagenet_path(spec: BackboneSpec, *, allow_download: bool) -> Path:
    cache = keras_cache_dir()
    cached = cache / spec.imagenet_file
    if cached.is_file():
        return cached
    if not allow_download:
        raise WeightsUnavailable(f"ImageNet weights are not cached at {cached} and downloading is off.")
    import keras

    try:
        # get_file silently switches to /tmp/.keras when the cache directory does not exist yet.
        cache.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            downloaded = keras.utils.get_file(
                spec.imagenet_file,
                spec.imagenet_url,
                cache_subdir="models",
                cache_dir=str(cache.parent),
                file_hash=spec.imagenet_md5,
            )
    # get_file raises a bare Exception for URL errors, ValueError for a bad hash.
    except Exception as exc:
        raise WeightsUnavailable(
            f"Could not download ImageNet weights from {spec.imagenet_url}: {exc}. "
            f"Copy {spec.imagenet_file} into {cache} instead."
        ) from exc
    return Path(downloaded)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urlretrieve (used by get_file) has no timeout argument; without one a dropped
    # connection would hang worker start-up forever.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class Backbone:
    """A loaded feature extractor; one per process."""

    def __init__(
        self,
        spec: BackboneSpec,
        model: keras.Model,
        *,
        weights_id: str,
        is_fallback: bool,
        warning: str | None,
        precision: Precision = "float32",
    ) -> None:
        import tensorflow as tf

        self.spec = spec
        # The compute precision. bfloat16 features sit at cosine >= 0.9999 to float32 ones with
        # the same demo top-k, but swap near-tie neighbours (tests/similarity/test_precision.py):
        # not interchangeable for ranking, so their weights id carries "+bf16" and the two are
        # never compared. Features are always returned as float32.
        self.precision = precision
        self.name = spec.name
        self.dim = spec.dim
        self.input_size = spec.input_size
        self.weights_id = weights_id
        self.is_fallback = is_fallback
        self.warning = warning
        self.model = model
        size = spec.input_size
        # A None batch dimension means one trace serves every batch size.
        self._forward = tf.function(
            lambda batch: tf.cast(model(batch, training=False), tf.float32),
            input_signature=[tf.TensorSpec(shape=(None, size, size, 3), dtype=tf.float32)],
            reduce_retracing=True,
        )

    def __repr__(self) -> str:
        return f"<Backbone {self.weights_id} dim={self.dim} {self.precision}>"

    def extract(self, batch: np.ndarray) -> np.ndarray:
        """Features for a preprocessed (N, size, size, 3) batch, as (N, dim) float32."""
        array = np.asarray(batch, dtype=np.float32)
        expected = (self.input_size, self.input_size, 3)
        if array.ndim != 4 or array.shape[1:] != expected:
            raise ValueError(f"Expected a batch shaped (N, {expected}), got {array.shape}.")
        if len(array) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self._forward(array).numpy()
        return np.ascontiguousarray(features, dtype=np.float32)

    def extract_images(self, images: Sequence[Image.Image], *, batch_size: int = 16) -> np.ndarray:
        """Preprocess PIL images and extract their features in batches."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1.")
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            batch = np.stack(
                [self.spec.preprocess(image, self.input_size) for image in images[start : start + batch_size]]
            )
            chunks.append(self.extract(batch))
        return np.concatenate(chunks)


def load_backbone(
    name: str = "vgg19-fc2",
    *,
    weights: str = "auto",
    store_dir: Path | None = None,
    store: Store | None = None,
    cache_dir: Path | None = None,
    lock: Lock | None = None,
    seed: int = 1234,
    allow_download: bool = True,
    precision: Precision = "float32",
) -> Backbone:
    """Build a backbone and load its weights; random weights come from a shared file in the model store.

    The store is ``store`` (a bucket or any Storage; its files are copied into ``cache_dir``, this
    host's cache, and checked) or the local folder ``store_dir`` (loaded in place). ``lock`` is
    held while the random weights are made, once for every host of the store.

    precision "bfloat16" builds the model under Keras' mixed_bfloat16 policy: the weights stay
    float32 variables (the same files load the same way), the maths runs in bf16, and features
    come back as float32.
    """
    if precision not in DTYPE_POLICIES:
        raise ValueError(f"Unknown backbone precision {precision!r}; use float32 or bfloat16.")
    store, cache_dir = _model_store(store_dir, store, cache_dir)
    spec = get_spec(name)
    resolved = resolve_weights(weights, allow_download=allow_download, name=name)
    policy = DTYPE_POLICIES[precision]
    with dtype_policy(policy):
        base = spec.build_base()
    if resolved.kind == "random":
        path, sha = _shared_random_weights(spec, base, store, cache_dir=cache_dir, lock=lock, seed=seed)
        # Load even right after creating it, so this process matches every other one bit for bit.
        base.load_weights(str(path))
        weights_id = f"{name}/random-s{seed}-{sha[:12]}"
        logger.warning("Backbone %s: %s", weights_id, resolved.warning)
    else:
        assert resolved.path is not None
        _load_weights_file(base, resolved.path)
        if resolved.kind == "imagenet":
            weights_id = f"{name}/imagenet"
        else:
            sha = file_sha256(resolved.path, cache_dir=hash_cache_dir(cache_dir))
            weights_id = f"{name}/file-{sha[:12]}"
    with dtype_policy(policy):
        model = spec.build_features(base)
        if precision != "float32":
            model = float32_outputs(model)
    if precision == "bfloat16":
        weights_id += "+bf16"  # near-tie neighbours differ from float32's: keep the two apart
    return Backbone(
        spec,
        model,
        weights_id=weights_id,
        is_fallback=resolved.kind == "random",
        warning=resolved.warning,
        precision=precision,
    )


def _model_store(store_dir: Path | None, store: Store | None, cache_dir: Path | None) -> tuple[Store, Path]:
    """The store and this host's cache: a given store (a bucket needs a cache_dir), or a local folder."""
    if store is not None and cache_dir is not None:
        return store, Path(cache_dir)
    if store_dir is None:
        raise ValueError("load_backbone needs a model store: store and cache_dir, or store_dir.")
    return store or Folder(Path(store_dir)), Path(cache_dir or store_dir)


def _load_weights_file(model: keras.Model, path: Path) -> None:
    try:
        model.load_weights(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsUnavailable(f"Could not load backbone weights from {path}: {exc}") from exc


def _shared_random_weights(
    spec: BackboneSpec, base: keras.Model, store: Store, *, cache_dir: Path, lock: Lock | None, seed: int
) -> tuple[Path, str]:
    """The random weights file this backbone loads (its own, or the one of random_weights_of) and its sha256."""
    owner = spec if spec.random_weights_of is None else get_spec(spec.random_weights_of)
    # Only when the owner's file is missing is its base built: for VGG19, all 143M parameters.
    make_base = (lambda: base) if owner is spec else owner.build_base
    return ensure_random_weights(owner.name, make_base, store, seed=seed, cache_dir=cache_dir, lock=lock)
