"""The one way the shop gets a training config: the SIAMESE_* settings, with a run's overrides over them."""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from similarity.train_config import InvalidTrainConfig, TrainConfig

# Each TrainConfig field and the setting (and environment variable) that sets it.
SETTING_NAMES: dict[str, str] = settings.SIAMESE_SETTING_NAMES


def default_config() -> TrainConfig:
    """THE training defaults: the SIAMESE_* settings (each defaults to its TrainConfig field)."""
    try:
        return TrainConfig.from_mapping({field: getattr(settings, name) for field, name in SETTING_NAMES.items()})
    except InvalidTrainConfig as error:
        name = SETTING_NAMES.get(error.field or "", "a SIAMESE_* setting")
        raise ImproperlyConfigured(f"{name}: {error}") from None


def run_config(overrides: Mapping[str, object] | None = None) -> TrainConfig:
    """The defaults with a run's overrides over them (the admin's button, `train_model --param`, a worker).

    Raises InvalidTrainConfig for an unknown key or a bad value: nothing is dropped silently.
    """
    return TrainConfig.from_mapping(overrides or {}, base=default_config())
