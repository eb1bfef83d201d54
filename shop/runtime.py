"""Per-process model cache: Keras models load lazily, once, inside the process that uses them.

Celery's prefork pool forks before any task runs, so nothing here is touched in the parent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

from django.conf import settings

if TYPE_CHECKING:
    import keras

    from shop.models import ModelVersion
    from similarity.artifacts import Store
    from similarity.backbone import Backbone

logger = logging.getLogger("shop")

_lock = threading.Lock()
_backbones: dict[tuple[str, str, int, str], Backbone] = {}
_towers: dict[tuple[int, str], keras.Model] = {}
# Towers a worker keeps loaded: the active versions' and a candidate's; retired ones are dropped.
KEPT_TOWERS = 3


def get_backbone() -> Backbone:
    """The backbone named by settings, in the precision BACKBONE_PRECISION resolves to, loaded once per process."""
    from similarity.backbone import load_backbone
    from similarity.precision import resolve_precision

    setting = settings.BACKBONE_PRECISION
    precision = resolve_precision(setting)
    key = (settings.BACKBONE, settings.BACKBONE_WEIGHTS, settings.BACKBONE_SEED, precision)
    with _lock:
        if key not in _backbones:
            backbone = load_backbone(
                key[0],
                weights=key[1],
                store=model_store(),
                cache_dir=Path(settings.MODEL_CACHE_DIR),
                lock=creation_lock,
                seed=key[2],
                allow_download=settings.BACKBONE_ALLOW_DOWNLOAD,
                precision=precision,
            )
            logger.info(
                "loaded backbone %s in %s (%s)", backbone.weights_id, precision, _precision_reason(setting, precision)
            )
            _backbones[key] = backbone
        return _backbones[key]


def _precision_reason(setting: str, precision: str) -> str:
    if setting != "auto":
        return f"forced by BACKBONE_PRECISION={setting}"
    if precision == "bfloat16":
        return "detected: the CPU has native bf16 (avx512_bf16 or amx_bf16)"
    return "detected: the CPU has no native bf16 (neither avx512_bf16 nor amx_bf16)"


def model_store() -> Store:
    """Where model files live for every host: the "models" storage (a folder or a bucket)."""
    from django.core.files.storage import storages

    return cast("Store", storages["models"])


@contextmanager
def creation_lock(name: str) -> Iterator[None]:
    """Held while a model file every host shares is made (the random backbone): on the broker's
    Redis, which every host reaches, so two hosts never make two different files."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        # Making VGG19's random weights takes a minute or two on a small machine; waiters wait. A lock
        # that ran out meanwhile is no reason to fail a file already made and checked.
        lock = client.lock(
            f"fashion-similarity:model-file:{name}", timeout=1800, blocking_timeout=3600, raise_on_release_error=False
        )
        with lock:
            yield
    finally:
        client.close()


def tower_for(version: ModelVersion) -> keras.Model:
    """The embedding tower of a model version (the one way the shop gets a tower)."""
    return get_tower(version_id=version.pk, artifact_name=version.artifact_name, checksum=version.checksum)


def get_tower(*, version_id: int, artifact_name: str, checksum: str) -> keras.Model:
    """The embedding tower of one model version: copied from the model store into this host's
    cache once and checked against its checksum (artifacts.ArtifactError, a ValueError, if not)."""
    from similarity.artifacts import ArtifactError, fetch
    from similarity.siamese import load_tower

    if not checksum:
        raise ArtifactError(f"Model version {version_id} records no checksum for {artifact_name!r}; retrain it.")
    key = (version_id, checksum)
    with _lock:
        tower = _towers.pop(key, None)
        if tower is None:
            path = fetch(model_store(), artifact_name, sha256=checksum, cache_dir=Path(settings.MODEL_CACHE_DIR))
            tower = load_tower(path, expected_sha256=checksum)
        _towers[key] = tower  # last = most recently used
        while len(_towers) > KEPT_TOWERS:
            _towers.pop(next(iter(_towers)))
        return tower
