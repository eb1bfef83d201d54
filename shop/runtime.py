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

    from similarity.backbone import Backbone

logger = logging.getLogger("shop")

_lock = threading.Lock()
_backbones: dict[tuple[str, str, int], Backbone] = {}
_towers: dict[tuple[int, str], keras.Model] = {}


def get_backbone() -> Backbone:
    """The backbone named by settings, loaded once per process."""
    from similarity.backbone import load_backbone

    key = (settings.BACKBONE, settings.BACKBONE_WEIGHTS, settings.BACKBONE_SEED)
    with _lock:
        if key not in _backbones:
            backbone = load_backbone(
                key[0],
                weights=key[1],
                store_dir=Path(settings.MODEL_STORE),
                seed=key[2],
                allow_download=settings.BACKBONE_ALLOW_DOWNLOAD,
            )
            logger.info("loaded backbone %s", backbone.weights_id)
            _backbones[key] = backbone
        return _backbones[key]


def get_tower(*, version_id: int, artifact_path: str, checksum: str) -> keras.Model:
    """The embedding tower of one model version, verified against its checksum once."""
    from similarity.siamese import load_tower

    key = (version_id, checksum)
    with _lock:
        if key not in _towers:
            _towers[key] = load_tower(Path(artifact_path), expected_sha256=checksum or None)
        return _towers[key]
