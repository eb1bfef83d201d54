"""A training run's lifecycle: request, train, evaluate, embed, rank, then live if the gate passed.

The stages themselves are in shop.services.training_stages, activation in
shop.services.model_versions. Any failure leaves the live model serving and says why.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from shop import runtime, selectors
from shop.models import RUNNING_STATUSES, Category, ModelVersion
from shop.services import enqueue, training_stages
from shop.services.model_versions import ActivationRefused, StoredFileRefused, activate_version
from shop.services.recommendations import rank_slice, slice_bounds
from shop.services.training_config import run_config

if TYPE_CHECKING:
    import keras

logger = logging.getLogger("shop")

Status = ModelVersion.Status


class TrainingAlreadyRunning(Exception):
    """A second run was requested while one is queued or running."""


class RunSuperseded(Exception):
    """The run was ended elsewhere (marked failed as stalled) while this worker still ran it."""


def request_training(
    *, category: str = Category.DRESSES, user: Any = None, hyperparameters: Mapping[str, object] | None = None
) -> ModelVersion:
    """Queue a training run of the settings' config with `hyperparameters` over it, recorded whole.

    Raises InvalidTrainConfig for an unknown key or a bad value, and TrainingAlreadyRunning
    while another run of the category is queued or running.
    """
    config = run_config(hyperparameters)
    fail_stalled_runs(category=category)
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                category=category, hyperparameters=config.to_dict(), requested_by=user, progress={"stage": "queued"}
            )
    except IntegrityError:
        running = selectors.running_version_of(category=category)
        raise TrainingAlreadyRunning(f"{running or 'A run'} is still in progress; wait for it to finish.") from None
    enqueue.on_commit_or_fail(
        lambda: enqueue.train_model_version(version.pk),
        fail=lambda error: _fail(version.pk, f"could not queue the run: {error}"),
    )
    return version


def fail_stalled_runs(*, category: str) -> int:
    """Mark failed the running versions whose worker stopped reporting (killed, never redelivered)."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRAINING_STALL_SECONDS)
    return ModelVersion.objects.filter(category=category, status__in=RUNNING_STATUSES, updated_at__lt=cutoff).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        error=f"no progress for {settings.TRAINING_STALL_SECONDS} s: the worker running it was lost",
    )


def _update(version: ModelVersion, **fields: Any) -> None:
    """Write a running version's fields, only while it is still running (compare-and-set)."""
    for name, value in fields.items():
        setattr(version, name, value)
    written = ModelVersion.objects.filter(pk=version.pk, status__in=RUNNING_STATUSES).update(
        **fields, updated_at=timezone.now()
    )
    if not written:
        raise RunSuperseded(f"{version} is no longer running")


def run_training(*, version_id: int) -> None:
    """Worker entry: run one queued version to `active`, or mark it failed with its error."""
    version = ModelVersion.objects.filter(pk=version_id).first()
    # Only one delivery of the task may take a queued run; a duplicate finds it started and
    # leaves it alone (a run whose worker died is failed by fail_stalled_runs).
    if version is None or not ModelVersion.objects.filter(pk=version.pk, status=Status.QUEUED).update(
        status=Status.TRAINING, started_at=timezone.now(), updated_at=timezone.now()
    ):
        return
    version.refresh_from_db()
    try:
        _run(version)
    except RunSuperseded as error:
        logger.warning("training run %s abandoned: %s", version_id, error)
    except Exception as error:  # any failure must leave the live model serving and say why
        logger.exception("training run %s failed", version_id)
        _fail(version_id, _error_text(error))


def _run(version: ModelVersion) -> None:
    """The stages of a claimed run, up to queuing its ranking slices."""
    record = partial(_update, version)
    # Stored whole at request; validated again, and completed for rows recorded before a field existed.
    config = run_config(version.hyperparameters)
    backbone = runtime.get_backbone()
    record(weights_id=backbone.weights_id, hyperparameters=config.to_dict())
    training_stages.compute_all_features(version, record)
    data = training_stages.training_data(category=version.category, weights_id=version.weights_id, seed=config.seed)
    result = training_stages.fit(version, data, config, record)

    name, checksum = store_tower(result.tower, f"siamese/v{version.pk}-{version.category}.keras")
    record(status=Status.EVALUATING, artifact_name=name, checksum=checksum, progress={"stage": "evaluating"})
    metrics = training_stages.evaluate(version, result.tower, data, best_epoch=result.best_epoch)
    cost = training_stages.backbone_cost(version, backbone)
    record(metrics={**metrics.to_json(), "backbone": cost.to_json()})

    record(status=Status.EMBEDDING, progress={"stage": "embedding", "done": 0})
    training_stages.embed_catalogue(version, record)
    _rank_in_slices(version)


def store_tower(tower: keras.Model, name: str) -> tuple[str, str]:
    """Save a tower into the model store (for every host) and this host's cache: (its name, its sha256)."""
    from similarity.artifacts import publish
    from similarity.siamese import save_tower

    cache = Path(settings.MODEL_CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".saving-") as folder:
        local = Path(folder) / Path(name).name
        save_tower(tower, local)
        return publish(runtime.model_store(), local, name, cache_dir=cache)


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def _rank_in_slices(version: ModelVersion) -> None:
    """Queue the similar-item lists of the new version as slice tasks; the last slice to finish
    ends the run. Many workers shorten it; pages keep reading the active version meanwhile."""
    bounds = slice_bounds(version_id=version.pk)
    _update(version, progress={"stage": "ranking", "done": 0, "total": len(bounds), "slices_done": []})
    if not bounds:
        _finish_run(version.pk)
        return
    for number, (low, high) in enumerate(bounds):
        enqueue.rank_similar_slice(version.pk, low, high, number)


def rank_training_slice(*, version_id: int, low: int, high: int, number: int) -> None:
    """Worker entry: one slice of a training run's lists; a failed slice fails the whole run."""
    if not ModelVersion.objects.filter(pk=version_id, status=Status.EMBEDDING).exists():
        return  # failed, superseded or already finished: nothing pages read may change
    try:
        rank_slice(version_id=version_id, low=low, high=high)
    except Exception as error:
        logger.exception("ranking slice %s of version %s failed", number, version_id)
        _fail(version_id, f"ranking slice {number} (products {low}–{high - 1}) failed: {_error_text(error)}")
        return
    if _slice_done(version_id, number):
        _finish_run(version_id)


def _slice_done(version_id: int, number: int) -> bool:
    """Record a finished slice (a redelivered one counts once); True for the run's last slice."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=version_id, status=Status.EMBEDDING).first()
        if version is None:
            return False
        progress = dict(version.progress or {})
        done = sorted(set(progress.get("slices_done", [])) | {number})
        progress.update(slices_done=done, done=len(done))
        ModelVersion.objects.filter(pk=version_id).update(progress=progress, updated_at=timezone.now())
        return len(done) >= int(progress.get("total", 0))


def _finish_run(version_id: int) -> None:
    """The run's lists are complete: ready, then live if the gate passed."""
    finished = ModelVersion.objects.filter(pk=version_id, status=Status.EMBEDDING).update(
        status=Status.READY, finished_at=timezone.now(), progress={"stage": "ready"}, updated_at=timezone.now()
    )
    version = ModelVersion.objects.get(pk=version_id)
    if not finished:
        return
    gate = version.run_metrics.gate
    if gate is None or not gate.passed:
        logger.warning("%s stays ready, not active: %s", version, gate.reason if gate else "not evaluated")
        return
    try:
        activate_version(version_id=version.pk)  # reads the stored tower back and checks it first
    except StoredFileRefused as error:
        # Never live on a file other hosts would refuse: the live version keeps serving.
        ModelVersion.objects.filter(pk=version_id, status=Status.READY).update(
            status=Status.FAILED, error=str(error), updated_at=timezone.now()
        )
        logger.error("%s failed: %s", version, error)
    except ActivationRefused as error:
        logger.warning("%s stays ready: %s", version, error)


def _fail(version_id: int, error: str) -> None:
    ModelVersion.objects.filter(pk=version_id, status__in=RUNNING_STATUSES).update(
        status=Status.FAILED, finished_at=timezone.now(), error=error
    )
