"""The pooled VGG19 block5 backbones and MobileNetV2, behind the same interface as vgg19-fc2."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.backbone import (
    BACKBONES,
    BackboneSpec,
    WeightsUnavailable,
    load_backbone,
    resolve_weights,
)
from similarity.images import preprocess_image, preprocess_image_mobilenet
from similarity.weights_store import random_weights_path

from .factories import photo
from .test_backbone import finish, run_extract
from .tiny_backbone import TINY


def photos(count: int) -> list[Image.Image]:
    return [photo(80, 120, seed=seed) for seed in range(count)]


def load_random(name: str, store: Path):
    return load_backbone(name, weights="random", store_dir=store, seed=1234, allow_download=False)


@pytest.fixture(scope="module")
def block5_gem(model_store: Path):
    return load_random("vgg19-block5-gem", model_store)


@pytest.fixture(scope="module")
def block5_max(model_store: Path):
    return load_random("vgg19-block5-max", model_store)


@pytest.fixture(scope="module")
def mobilenet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mobilenet-store")


@pytest.fixture(scope="module")
def mobilenet(mobilenet_store: Path):
    return load_random("mobilenetv2", mobilenet_store)


def test_it_registers_each_backbone_with_its_dimension():
    dims = {name: (spec.dim, spec.input_size) for name, spec in BACKBONES.items() if name != TINY.name}

    assert dims == {
        "vgg19-fc2": (4096, 224),
        "vgg19-block5-max": (512, 224),
        "vgg19-block5-gem": (512, 224),
        "mobilenetv2": (1280, 224),
    }
    assert BACKBONES["mobilenetv2"].preprocess is preprocess_image_mobilenet
    assert BACKBONES["vgg19-block5-gem"].preprocess is preprocess_image


@pytest.mark.parametrize("fixture", ["block5_max", "block5_gem"])
def test_it_pools_vgg19_block5_into_512_non_negative_float32_features(fixture, request):
    backbone = request.getfixturevalue(fixture)

    features = backbone.extract_images(photos(3), batch_size=2)

    assert features.shape == (3, 512)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert (features >= 0).all()
    assert not np.allclose(features[0], features[1])
    assert backbone.extract_images([]).shape == (0, 512)


def test_it_shares_vgg19_fc2s_random_file_instead_of_writing_its_own(block5_gem, block5_max, vgg_random, model_store):
    fc2_layers = {layer.name: layer for layer in vgg_random.model.layers}

    convolutions = [layer for layer in block5_gem.model.layers if layer.weights]

    assert [layer.name for layer in convolutions][-1] == "block5_conv4"
    assert len(convolutions) == 16
    for layer in convolutions:
        ours, theirs = layer.get_weights(), fc2_layers[layer.name].get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)), layer.name
    for name in ("vgg19-block5-gem", "vgg19-block5-max"):
        assert not random_weights_path(model_store, name, 1234).exists()
    # The same file hash, under each backbone's own name, so their vectors are never mixed.
    digest = vgg_random.weights_id.rsplit("-", 1)[1]
    assert block5_gem.weights_id == f"vgg19-block5-gem/random-s1234-{digest}"
    assert block5_max.weights_id == f"vgg19-block5-max/random-s1234-{digest}"


def test_it_gem_pools_the_unpooled_block5_conv4_maps(block5_gem, block5_max):
    import keras

    from similarity.pooling import gem_pool

    batch = np.stack([preprocess_image(image) for image in photos(2)])
    maps_model = keras.Model(block5_gem.model.inputs, block5_gem.model.get_layer("block5_conv4").output)
    maps = keras.ops.convert_to_numpy(maps_model([batch]))

    gem = block5_gem.extract(batch)

    assert maps.shape == (2, 14, 14, 512)
    assert np.allclose(gem, keras.ops.convert_to_numpy(gem_pool(maps)), rtol=1e-5)
    assert np.array_equal(block5_max.extract(batch), maps.max(axis=(1, 2)))
    assert (gem >= maps.mean(axis=(1, 2)) * (1 - 1e-5)).all()
    assert (gem <= maps.max(axis=(1, 2)) * (1 + 1e-5) + 1e-6).all()


def test_it_loads_the_same_weights_id_every_time_and_a_distinct_one_per_backbone(
    block5_gem, block5_max, mobilenet, vgg_random, model_store, mobilenet_store
):
    again = [load_random("vgg19-block5-gem", model_store), load_random("mobilenetv2", mobilenet_store)]

    assert [backbone.weights_id for backbone in again] == [block5_gem.weights_id, mobilenet.weights_id]
    ids = {vgg_random.weights_id, block5_gem.weights_id, block5_max.weights_id, mobilenet.weights_id}
    assert len(ids) == 4
    assert re.fullmatch(r"mobilenetv2/random-s1234-[0-9a-f]{12}", mobilenet.weights_id)


def test_it_extracts_1280_float32_features_that_differ_between_photos(mobilenet):
    features = mobilenet.extract_images(photos(4), batch_size=3)

    assert features.shape == (4, 1280)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    # Averages of ReLU6 outputs.
    assert (features >= 0).all() and (features <= 6).all()
    assert not np.allclose(features[0], features[1])
    # Not a handful of live units: most dimensions change from photo to photo.
    assert (features.std(axis=0) > 1e-3).mean() > 0.5


def test_it_starts_mobilenets_batch_norms_as_the_identity_and_scales_depthwise_kernels_per_channel(mobilenet):
    import keras

    norms = [layer for layer in mobilenet.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    depthwise = [layer for layer in mobilenet.model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]

    assert len(norms) == 52 and len(depthwise) == 17
    for layer in norms:
        gamma, beta, mean, variance = (np.asarray(v) for v in layer.get_weights())
        assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (variance == 1).all(), layer.name
    # He-uniform on a fan-in of 3×3 per channel, not 3×3×channels.
    for layer in depthwise:
        kernel = np.asarray(layer.kernel)
        assert 0.75 < np.abs(kernel).max() <= np.sqrt(6 / 9), layer.name


def test_it_computes_identical_features_in_another_process(
    block5_gem, mobilenet, model_store, mobilenet_store, tmp_path
):
    # (backbone here, its store, the random file it loads, its preprocessing)
    cases = {
        "vgg19-block5-gem": (block5_gem, model_store, "vgg19-fc2", preprocess_image),
        "mobilenetv2": (mobilenet, mobilenet_store, "mobilenetv2", preprocess_image_mobilenet),
    }
    batches = {name: np.stack([prep(image) for image in photos(2)]) for name, (*_, prep) in cases.items()}
    files = {name: random_weights_path(store, owner, 1234) for name, (_, store, owner, _) in cases.items()}
    before = {name: path.stat() for name, path in files.items()}

    # Both at once: each spends most of its time importing TensorFlow.
    processes = {name: run_extract(name, cases[name][1], 1234, batches[name], tmp_path, name) for name in cases}
    here = {name: backbone.extract(batches[name]) for name, (backbone, *_) in cases.items()}

    for name, process in processes.items():
        there, report, _ = finish(process, tmp_path, name)
        assert report["weights_id"] == cases[name][0].weights_id
        assert np.array_equal(here[name], there), name
        after = files[name].stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[name].st_ino, before[name].st_mtime_ns)


def test_it_makes_the_owners_random_file_when_a_sharing_backbone_loads_first(tiny_spec, tmp_path, monkeypatch):
    import keras

    def convolution_only() -> keras.Model:
        inputs = keras.Input(shape=(32, 32, 3))
        maps = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        return keras.Model(inputs, maps, name="tiny_conv")

    sharing = BackboneSpec(
        name="tiny-conv",
        dim=4,
        input_size=32,
        build_base=convolution_only,
        build_features=lambda base: keras.Model(base.inputs, keras.layers.GlobalMaxPooling2D()(base.output)),
        imagenet_file="tiny-conv.h5",
        imagenet_url="http://127.0.0.1:9/tiny-conv.h5",
        imagenet_md5=None,
        random_weights_of=tiny_spec.name,
    )
    monkeypatch.setitem(BACKBONES, sharing.name, sharing)

    pooled = load_backbone("tiny-conv", weights="random", store_dir=tmp_path, seed=9, allow_download=False)
    whole = load_backbone("tiny-test", weights="random", store_dir=tmp_path, seed=9, allow_download=False)

    files = sorted(path.name for path in (tmp_path / "backbones").glob("*.h5"))
    assert files == ["tiny-test-random-seed9.weights.h5"]
    kernels = [backbone.model.get_layer("conv").get_weights()[0] for backbone in (pooled, whole)]
    assert np.array_equal(*kernels)
    assert pooled.weights_id.startswith("tiny-conv/random-s9-")
    assert pooled.weights_id.rsplit("-", 1)[1] == whole.weights_id.rsplit("-", 1)[1]


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("vgg19-block5-gem", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("vgg19-block5-max", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("mobilenetv2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    ],
)
def test_it_looks_for_keras_include_top_false_imagenet_file(name, file, empty_keras_home):
    with pytest.raises(WeightsUnavailable, match="not cached"):
        resolve_weights("imagenet", allow_download=False, name=name)
    fallback = resolve_weights("auto", allow_download=False, name=name)
    cached = empty_keras_home / "models" / file
    cached.parent.mkdir()
    cached.write_bytes(b"placeholder; resolving does not read it")

    resolved = resolve_weights("imagenet", allow_download=False, name=name)

    assert fallback.kind == "random" and file in fallback.warning
    assert (resolved.kind, resolved.path) == ("imagenet", cached)
    assert BACKBONES[name].imagenet_url.endswith("/" + file)


def test_it_scales_mobilenet_pixels_to_minus_one_to_one_in_rgb_order():
    red = Image.new("RGBA", (10, 10), (255, 0, 0, 255))

    out = preprocess_image_mobilenet(red, size=32)

    assert out.shape == (32, 32, 3)
    assert np.array_equal(out[0, 0], np.array([1, -1, -1], dtype=np.float32))


def gem(values: np.ndarray, **options: float) -> np.ndarray:
    import keras

    from similarity.pooling import gem_pool

    return keras.ops.convert_to_numpy(gem_pool(values, **options))


def test_gem_is_the_cube_root_of_the_mean_cube_by_default():
    maps = np.array([1, 2, 3, 4], dtype=np.float32).reshape(1, 2, 2, 1)

    assert np.allclose(gem(maps), [[25 ** (1 / 3)]], rtol=1e-6)


def test_gem_with_p_one_is_average_pooling():
    maps = np.random.default_rng(0).uniform(0.1, 5, size=(2, 7, 7, 6)).astype(np.float32)

    assert np.allclose(gem(maps, p=1.0), maps.mean(axis=(1, 2)), rtol=1e-6)


def test_gem_lies_between_the_mean_and_the_max_and_grows_with_p():
    rng = np.random.default_rng(1)
    # ReLU-like: a third of the activations are exactly zero.
    maps = np.maximum(rng.normal(size=(3, 5, 5, 8)), 0).astype(np.float32)

    pooled = [gem(maps, p=p) for p in (1.0, 3.0, 8.0)]

    assert (pooled[1] >= maps.mean(axis=(1, 2))).all()
    assert (pooled[0] <= pooled[1] * (1 + 1e-6)).all() and (pooled[1] <= pooled[2] * (1 + 1e-6)).all()
    assert (pooled[2] <= maps.max(axis=(1, 2)) * (1 + 1e-6)).all()


def test_gem_of_all_zero_maps_is_epsilon_not_nan():
    pooled = gem(np.zeros((1, 3, 3, 2), np.float32), eps=1e-6)

    assert np.allclose(pooled, 1e-6)


def test_gem_refuses_a_non_positive_p():
    with pytest.raises(ValueError, match="p > 0"):
        gem(np.ones((1, 2, 2, 1), np.float32), p=0.0)
