"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def _status() -> dict[str, object]:
    from shop import selectors

    weights_id = selectors.current_weights_id()
    return {
        "weights_id": weights_id,
        # A random backbone is a labelled fallback, never passed off as ImageNet features.
        "is_fallback": weights_id is not None and "/random" in weights_id,
    }


def backbone_status(request: HttpRequest) -> dict[str, SimpleLazyObject[dict[str, object]]]:
    return {"backbone": SimpleLazyObject(_status)}
