from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import similarity.backbone as backbone_module
from similarity.backbone import (
    BACKBONES,
    WeightsUnavailable,
    load_backbone,
    resolve_weights,
)
from similarity.images import preprocess_image
from similarity.weights_store import random_weights_path

from .conftest import REPO
from .factories import photo


def run_extract(name: str, store: Path, seed: int, batch: np.ndarray, tmp_path: Path, tag: str) -> subprocess.Popen:
    """Start a fresh Python process that loads the backbone and extracts features for batch."""
    batch_file = tmp_path / f"batch-{tag}.npy"
    np.save(batch_file, batch)
    command = [
        sys.executable, "-m", "tests.similarity.extract_features",
        "--name", name, "--store", str(store), "--seed", str(seed),
        "--batch", str(batch_file), "--out", str(tmp_path / f"features-{tag}.npy"),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, tmp_path: Path, tag: str) -> tuple[np.ndarray, dict, str]:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return np.load(tmp_path / f"features-{tag}.npy"), json.loads(stdout.strip().splitlines()[-1]), stderr


def vgg_batch(count: int) -> np.ndarray:
    return np.stack([preprocess_image(photo(80, 120, seed=seed)) for seed in range(count)])


def tiny_batch() -> np.ndarray:
    return np.stack([preprocess_image(photo(40, 40, seed=seed), 32) for seed in range(3)])


def test_it_extracts_4096_float32_features_per_image(vgg_random):
    images = [photo(80, 120, seed=seed) for seed in range(3)]

    features = vgg_random.extract_images(images, batch_size=2)

    assert features.shape == (3, 4096)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert not np.allclose(features[0], features[1])
    assert (vgg_random.name, vgg_random.dim, vgg_random.input_size) == ("vgg19-fc2", 4096, 224)


def test_it_extracts_nothing_as_an_empty_matrix(vgg_random):
    assert vgg_random.extract_images([]).shape == (0, 4096)
    assert vgg_random.extract(np.zeros((0, 224, 224, 3), np.float32)).shape == (0, 4096)


def test_it_refuses_a_batch_of_the_wrong_shape(vgg_random):
    with pytest.raises(ValueError, match="224"):
        vgg_random.extract(np.zeros((1, 100, 100, 3), np.float32))


def test_it_traces_once_for_every_batch_size_and_agrees_with_predict(vgg_random):
    batch = vgg_batch(3)

    one = vgg_random.extract(batch[:1])
    three = vgg_random.extract(batch)
    predicted = vgg_random.model.predict(batch, verbose=0)

    assert vgg_random._forward.experimental_get_tracing_count() == 1
    assert np.allclose(three, predicted, rtol=1e-4, atol=1e-3)
    assert np.allclose(one[0], three[0], rtol=1e-4, atol=1e-3)


def test_it_tags_random_weights_with_seed_and_file_hash(vgg_random, model_store):
    path = random_weights_path(model_store, "vgg19-fc2", 1234)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    assert vgg_random.weights_id == f"vgg19-fc2/random-s1234-{digest[:12]}"
    assert vgg_random.is_fallback
    assert "NOT ImageNet" in vgg_random.warning


def test_it_computes_identical_vgg_features_in_another_process(vgg_random, model_store, tmp_path):
    batch = vgg_batch(2)
    path = random_weights_path(model_store, "vgg19-fc2", 1234)
    before = path.stat()

    process = run_extract("vgg19-fc2", model_store, 1234, batch, tmp_path, "vgg")
    here = vgg_random.extract(batch)
    there, report, _ = finish(process, tmp_path, "vgg")

    assert report["weights_id"] == vgg_random.weights_id
    assert np.array_equal(here, there)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_it_creates_random_weights_once_and_reuses_them(tiny_spec, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="similarity")
    first = load_backbone("tiny-test", weights="random", store_dir=tmp_path, seed=7, allow_download=False)
    path = random_weights_path(tmp_path, "tiny-test", 7)
    created = path.stat()
    creations = [r for r in caplog.records if r.getMessage().startswith("Created random backbone weights")]

    second = load_backbone("tiny-test", weights="random", store_dir=tmp_path, seed=7, allow_download=False)

    assert len(creations) == 1
    reused = path.stat()
    assert (reused.st_ino, reused.st_mtime_ns) == (created.st_ino, created.st_mtime_ns)
    assert second.weights_id == first.weights_id
    assert np.array_equal(first.extract(tiny_batch()), second.extract(tiny_batch()))
    assert not list(path.parent.glob(".tmp-*"))


def test_it_logs_a_warning_when_using_random_weights(tiny_spec, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="similarity")

    backbone = load_backbone("tiny-test", weights="random", store_dir=tmp_path, allow_download=False)

    assert any(r.levelno == logging.WARNING and "NOT ImageNet" in r.getMessage() for r in caplog.records)
    assert backbone.is_fallback


def test_it_derives_random_weights_from_the_seed_alone(tiny_spec, tmp_path):
    seven = load_backbone("tiny-test", weights="random", store_dir=tmp_path / "a", seed=7, allow_download=False)
    seven_elsewhere = load_backbone(
        "tiny-test", weights="random", store_dir=tmp_path / "b", seed=7, allow_download=False
    )
    eight = load_backbone("tiny-test", weights="random", store_dir=tmp_path / "a", seed=8, allow_download=False)

    assert re.fullmatch(r"tiny-test/random-s7-[0-9a-f]{12}", seven.weights_id)
    assert eight.weights_id != seven.weights_id
    # HDF5 records write times, so two files of the same seed hash differently, but hold the same weights.
    assert np.array_equal(seven.extract(tiny_batch()), seven_elsewhere.extract(tiny_batch()))
    assert not np.allclose(seven.extract(tiny_batch()), eight.extract(tiny_batch()))


def waiters(lock: Path) -> int:
    """How many processes are blocked in flock() on this file, from /proc/locks."""
    inode = f":{lock.stat().st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if " -> " in line and line.split()[-3].endswith(inode))


def test_it_creates_random_weights_once_when_two_processes_start_together(tmp_path):
    if not Path("/proc/locks").exists():
        pytest.skip("needs Linux /proc/locks to see both processes waiting")
    store = tmp_path / "store"
    lock = random_weights_path(store, "tiny-test", 3).with_suffix(".h5.lock")
    lock.parent.mkdir(parents=True)
    batch = tiny_batch()

    # Hold the creation lock until both processes are queued on it, so they really race.
    with open(lock, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        processes = [run_extract("tiny-test", store, 3, batch, tmp_path, tag) for tag in "ab"]
        deadline = time.monotonic() + 120
        while waiters(lock) < 2 and time.monotonic() < deadline:
            assert all(process.poll() is None for process in processes), "a process ended early"
            time.sleep(0.1)
        assert waiters(lock) == 2
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    (features_a, report_a, log_a), (features_b, report_b, log_b) = (
        finish(process, tmp_path, tag) for process, tag in zip(processes, "ab")
    )

    assert (log_a + log_b).count("Created random backbone weights") == 1
    assert report_a == report_b
    assert np.array_equal(features_a, features_b)
    names = sorted(p.name for p in lock.parent.iterdir() if p.is_file())
    assert names == [
        "tiny-test-random-seed3.weights.h5",
        "tiny-test-random-seed3.weights.h5.lock",
        "tiny-test-random-seed3.weights.h5.sha256",  # every host checks its copy against it
    ]


def test_it_falls_back_to_random_when_imagenet_is_not_cached_and_download_is_off(empty_keras_home, caplog):
    caplog.set_level(logging.WARNING, logger="similarity")

    resolved = resolve_weights("auto", allow_download=False)

    assert resolved.kind == "random"
    assert resolved.path is None
    assert "NOT ImageNet" in resolved.warning
    assert any("NOT ImageNet" in r.getMessage() for r in caplog.records)


@pytest.fixture
def silent_server():
    """A local port that accepts connections but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/weights.h5"
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}/weights.h5"


@pytest.mark.parametrize("server", ["silent_server", "closed_port"])
def test_it_falls_back_to_random_quickly_when_the_download_fails(
    server, request, tiny_spec, empty_keras_home, monkeypatch
):
    url = request.getfixturevalue(server)
    monkeypatch.setitem(BACKBONES, tiny_spec.name, dataclasses.replace(tiny_spec, imagenet_url=url))
    monkeypatch.setattr(backbone_module, "DOWNLOAD_TIMEOUT", 0.5)

    started = time.monotonic()
    resolved = resolve_weights("auto", name=tiny_spec.name)

    assert resolved.kind == "random"
    assert time.monotonic() - started < 10
    assert socket.getdefaulttimeout() is None
    assert not (empty_keras_home / "models" / tiny_spec.imagenet_file).exists()
    with pytest.raises(WeightsUnavailable, match="Could not download"):
        resolve_weights("imagenet", name=tiny_spec.name)


def test_it_refuses_imagenet_when_it_cannot_be_found(empty_keras_home):
    with pytest.raises(WeightsUnavailable, match="not cached"):
        resolve_weights("imagenet", allow_download=False)


def test_it_uses_cached_imagenet_weights_from_keras_home(empty_keras_home):
    cached = empty_keras_home / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"placeholder; resolving does not read it")

    for setting in ("imagenet", "auto"):
        resolved = resolve_weights(setting, allow_download=False)
        assert (resolved.kind, resolved.path, resolved.warning) == ("imagenet", cached, None)


def test_it_refuses_a_weights_path_that_does_not_exist(tmp_path):
    with pytest.raises(WeightsUnavailable, match="missing.h5"):
        resolve_weights(str(tmp_path / "missing.h5"))


def test_it_refuses_a_weights_file_that_is_not_weights(tiny_spec, tmp_path):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_text("not hdf5")

    with pytest.raises(WeightsUnavailable, match="garbage"):
        load_backbone("tiny-test", weights=str(garbage), store_dir=tmp_path)


def test_it_loads_a_weights_file_and_tags_it_with_its_hash(tiny_spec, tmp_path):
    source = load_backbone("tiny-test", weights="random", store_dir=tmp_path, seed=5, allow_download=False)
    exported = tmp_path / "exported.weights.h5"
    source.model.save_weights(str(exported))  # the fc-cut model shares its layers with the base
    base = tiny_spec.build_base()
    base.load_weights(str(random_weights_path(tmp_path, "tiny-test", 5)))
    full = tmp_path / "full.weights.h5"
    base.save_weights(str(full))

    loaded = load_backbone("tiny-test", weights=str(full), store_dir=tmp_path)

    digest = hashlib.sha256(full.read_bytes()).hexdigest()
    assert loaded.weights_id == f"tiny-test/file-{digest[:12]}"
    assert not loaded.is_fallback and loaded.warning is None
    assert np.array_equal(loaded.extract(tiny_batch()), source.extract(tiny_batch()))


def test_it_names_the_known_backbones_on_a_typo(tmp_path):
    with pytest.raises(ValueError, match="vgg19-fc2"):
        load_backbone("vgg91", weights="random", store_dir=tmp_path)
