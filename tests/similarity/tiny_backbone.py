"""A tiny CNN registered as a backbone, to test the weights machinery in seconds, not minutes."""

from __future__ import annotations

from similarity.backbone import BackboneSpec


def _build_base():
    import keras

    inputs = keras.Input(shape=(32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(3, name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _cut(base):
    import keras

    return keras.Model(base.inputs, base.get_layer("fc").output, name="tiny_fc")


TINY = BackboneSpec(
    name="tiny-test",
    dim=8,
    input_size=32,
    build_base=_build_base,
    build_features=_cut,
    imagenet_file="tiny-test-imagenet.h5",
    # Replaced per test by an address that cannot serve it.
    imagenet_url="http://127.0.0.1:9/tiny-test-imagenet.h5",
    imagenet_md5=None,
)
