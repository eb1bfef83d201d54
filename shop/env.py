"""Environment helpers that read a setting once and fail loudly on a bad value."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


class MissingSetting(ImproperlyConfigured):
    """A variable production needs is not set; manage.py prints this as one line."""


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def required_unless(debug: bool, name: str, debug_default: str, hint: str) -> str:
    """A variable that development may leave unset (it gets debug_default) but production may not."""
    value = os.environ.get(name, "")
    if value:
        return value
    if debug:
        return debug_default
    raise MissingSetting(f"{name} is not set: with DEBUG off the shop needs {hint} (or set DEBUG=true for development)")


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below its minimum {minimum}")
    return number


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


def envpath(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def bucket_origins() -> str:
    """Where a browser fetches photos from the bucket (AWS_* variables): the endpoint's origin, or AWS's own hosts."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("AWS_S3_ENDPOINT_URL", "")
    if endpoint:
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"
    bucket = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
    region = os.environ.get("AWS_S3_REGION_NAME", "")
    hosts = [f"https://{bucket}.s3.amazonaws.com"] + ([f"https://{bucket}.s3.{region}.amazonaws.com"] if region else [])
    return " ".join(hosts)
