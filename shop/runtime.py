"""Per-process model cache: Keras models load lazily, once, inside the process that uses them.

Celery's prefork pool forks before any task runs, so nothing here is touched in the parent.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import keras

    from shop.models import ModelVersion
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
                store_dir=Path(settings.MODEL_STORE),
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


def tower_for(version: ModelVersion) -> keras.Model:
    """The embedding tower of a model version (the one way the shop gets a tower)."""
    return get_tower(version_id=version.pk, artifact_path=version.artifact_path, checksum=version.checksum)


def get_tower(*, version_id: int, artifact_path: str, checksum: str) -> keras.Model:
    """The embedding tower of one model version, verified against its checksum once."""
    from similarity.siamese import load_tower

    key = (version_id, checksum)
    with _lock:
        tower = _towers.pop(key, None)
        if tower is None:
            tower = load_tower(Path(artifact_path), expected_sha256=checksum or None)
        _towers[key] = tower  # last = most recently used
        while len(_towers) > KEPT_TOWERS:
            _towers.pop(next(iter(_towers)))
        return tower
