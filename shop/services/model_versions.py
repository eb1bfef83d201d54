"""Model versions once trained: activation and rollback, embedding catch-up, deleting their files."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from shop import runtime, selectors
from shop.models import ModelVersion
from shop.services import enqueue, indexing
from similarity.metrics import Gate

logger = logging.getLogger("shop")

Status = ModelVersion.Status


class ActivationRefused(Exception):
    """A version cannot go live (not ready, or products lack its embedding)."""


class StoredFileRefused(ActivationRefused):
    """The version's tower in the model store is missing or not the recorded file: it can never go live."""


def activate_version(*, version_id: int, override: bool = False, user: Any = None) -> ModelVersion:
    """Make a ready version the live one in one transaction (pages never see a mix).

    A version the gate refused goes live only with `override`, which is recorded; a version
    that was live before (a rollback) needs none (see ModelVersion.needs_override).
    """
    candidate = ModelVersion.objects.get(pk=version_id)
    if candidate.status != Status.ACTIVE:
        # Outside the transaction: reading a file back from a bucket must not hold the row locks.
        try:
            check_stored_tower(candidate)
        except ValueError as error:
            raise StoredFileRefused(str(error)) from error
    with transaction.atomic():
        category = candidate.category
        # Lock the category's serving versions with this one, in id order: the order in which list
        # writers (recommendations.remove_from_lists) take them, so the two never deadlock.
        locked = (
            ModelVersion.objects.select_for_update()
            .filter(Q(pk=version_id) | Q(category=category, status__in=[Status.READY, Status.ACTIVE]))
            .order_by("id")
        )
        version = next(v for v in locked if v.pk == version_id)
        if version.status == Status.ACTIVE:
            return version
        _check_activatable(version, override=override)
        missing = list(selectors.products_missing_embedding(version=version).values_list("id", flat=True))
        if not missing:
            _make_active(version, user=user)
    if missing:
        # Products added since it was built (a rollback): embed them, then it can go live.
        transaction.on_commit(lambda: enqueue.embed_for_version(version.pk, missing), robust=True)
        raise ActivationRefused(
            f"{len(missing)} products have no embedding for {version} yet; they are being embedded now, "
            "try again in a minute"
        )
    return version


def _check_activatable(version: ModelVersion, *, override: bool) -> None:
    """Refuse a version that is not ready, that the gate refused (without override), or on other weights."""
    if version.status != Status.READY:
        raise ActivationRefused(f"{version} is {version.get_status_display().lower()}, not ready")
    if version.needs_override and not override:
        gate = version.run_metrics.gate
        raise ActivationRefused(
            f"the gate refused {version}: {gate.reason if gate and gate.reason else 'no evaluation'}. "
            "Activating it anyway needs an override, which is recorded."
        )
    current = selectors.current_weights_id()
    if current and version.weights_id != current:
        # Its vectors would not compare with the features the workers now make.
        raise ActivationRefused(
            f"{version} was trained on {version.weights_id}, but the workers use {current}: train a new version"
        )


def _make_active(version: ModelVersion, *, user: Any) -> None:
    """Switch the category's live version to this one (inside the caller's transaction)."""
    needs_override = version.needs_override
    ModelVersion.objects.filter(category=version.category, status=Status.ACTIVE).update(status=Status.READY)
    fields: dict[str, Any] = {"status": Status.ACTIVE, "activated_at": timezone.now()}
    if needs_override:
        gate = dataclasses.replace(
            version.run_metrics.gate or Gate(passed=False),
            overridden_by=getattr(user, "username", None) or "system",
            overridden_at=timezone.now().isoformat(),
        )
        fields |= {"gate_overridden": True, "metrics": {**(version.metrics or {}), "gate": gate.to_json()}}
    for name, value in fields.items():
        setattr(version, name, value)
    version.save(update_fields=[*fields, "updated_at"])
    # Products indexed during the switch were embedded for the old version only.
    transaction.on_commit(lambda: _queue_unembedded(version.pk), robust=True)


def _queue_unembedded(version_id: int) -> None:
    version = ModelVersion.objects.get(pk=version_id)
    late = list(selectors.products_missing_embedding(version=version).values_list("id", flat=True))
    if late:
        enqueue.embed_for_version(version_id, late)


def embed_late_products(version: ModelVersion) -> int:
    """Embed, for a run that just embedded its catalogue, the products that arrived meanwhile."""
    late = list(selectors.products_missing_embedding(version=version).values_list("id", flat=True))
    if not late:
        return 0
    indexing.compute_product_image_features(product_image_ids=selectors.product_image_ids(product_ids=late))
    return indexing.embed_products(version=version, product_ids=late)


def embed_for_version(*, version_id: int, product_ids: list[int]) -> int:
    """Embed products that lack a vector for a ready or active version, and rank them."""
    from shop.services.recommendations import update_recommendations

    version = ModelVersion.objects.filter(pk=version_id, status__in=[Status.READY, Status.ACTIVE]).first()
    if version is None:
        return 0
    missing = selectors.products_without_embedding(version=version, product_ids=product_ids)
    embedded = indexing.embed_products(version=version, product_ids=missing) if missing else 0
    if embedded:
        update_recommendations(version_id=version.pk, product_ids=missing)
    return embedded


def delete_artifact(*, name: str) -> bool:
    """Delete a trained tower's file from the model store unless another version still uses it."""
    if not name or Path(name).is_absolute() or ModelVersion.objects.filter(artifact_name=name).exists():
        return False  # an absolute path predates the store (outside it, or a row migration left alone)
    runtime.model_store().delete(name)
    logger.info("deleted the model file %s of a deleted version", name)
    return True


def check_stored_tower(version: ModelVersion) -> None:
    """Read the version's tower file in the model store and check it is the one recorded
    (artifacts.ArtifactError, a ValueError, if not): what every other host would load."""
    from similarity.artifacts import ArtifactError, verify

    if not version.artifact_name or not version.checksum:
        raise ArtifactError(f"{version} records no model file")
    verify(runtime.model_store(), version.artifact_name, sha256=version.checksum)
