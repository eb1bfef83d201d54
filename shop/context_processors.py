"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def _status() -> dict:
    from shop import selectors

    weights_id = selectors.current_weights_id()
    return {
        "weights_id": weights_id,
        # A random backbone is a labelled fallback, never passed off as ImageNet features.
        "is_fallback": bool(weights_id) and "/random" in weights_id,
    }


def backbone_status(request: HttpRequest) -> dict:
    return {"backbone": SimpleLazyObject(_status)}
