from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_store() -> Path:
    """Where the 550 MB random VGG19 lives between runs (var/ is git-ignored)."""
    store = Path(os.environ.get("TEST_MODEL_STORE") or REPO / "var" / "test-models")
    store.mkdir(parents=True, exist_ok=True)
    return store


@pytest.fixture(scope="session")
def vgg_random(model_store: Path):
    """The real VGG19 fc2 backbone with seeded random weights, built once per session."""
    from similarity.backbone import load_backbone

    return load_backbone("vgg19-fc2", weights="random", store_dir=model_store, seed=1234, allow_download=False)


@pytest.fixture
def tiny_spec(monkeypatch: pytest.MonkeyPatch):
    from similarity.backbone import BACKBONES

    from .tiny_backbone import TINY

    monkeypatch.setitem(BACKBONES, TINY.name, TINY)
    return TINY


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Keras cache with no ImageNet weights in it."""
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home
