"""The model version a command is asked about: one named by id, else the category's active one."""

from __future__ import annotations

from django.core.management.base import CommandError

from shop import selectors
from shop.models import ModelVersion


def chosen_version(*, category: str, version_id: int | None) -> ModelVersion | None:
    """The version with ``version_id`` (CommandError when there is none), else the category's active one."""
    if version_id:
        version = selectors.model_version(version_id=version_id)
        if version is None:
            raise CommandError(f"no model version {version_id}")
        return version
    return selectors.active_version(category=category)
