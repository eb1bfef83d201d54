"""The retraining lifecycle: request, train, evaluate, embed, activate; failures leave the live model serving."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from shop import runtime, selectors
from shop.models import RUNNING_STATUSES, Category, ModelVersion, Product, ProductImage, Split, StreetPhoto
from shop.services import evaluation, indexing
from shop.services.recommendations import rank_slice, slice_bounds

logger = logging.getLogger("shop")

Status = ModelVersion.Status


class TrainingAlreadyRunning(Exception):
    """A second run was requested while one is queued or running."""


class ActivationRefused(Exception):
    """A version cannot go live (not ready, or products lack its embedding)."""


def default_hyperparameters() -> dict:
    return {
        "epochs": settings.SIAMESE_EPOCHS,
        "batch_size": settings.SIAMESE_BATCH_SIZE,
        "learning_rate": settings.SIAMESE_LEARNING_RATE,
        "margin": settings.SIAMESE_MARGIN,
        "hidden_dim": settings.SIAMESE_HIDDEN_DIM,
        "embedding_dim": settings.SIAMESE_EMBEDDING_DIM,
        "negatives_per_positive": settings.SIAMESE_NEGATIVES,
        "seed": settings.SIAMESE_SEED,
        "architecture": settings.SIAMESE_ARCHITECTURE,
        "weight_decay": settings.SIAMESE_WEIGHT_DECAY,
        "loss": settings.SIAMESE_LOSS,
        "hard_negative_share": settings.SIAMESE_HARD_NEGATIVES,
        "patience": settings.SIAMESE_PATIENCE,
    }


def request_training(
    *, category: str = Category.DRESSES, user=None, hyperparameters: dict | None = None
) -> ModelVersion:
    """Queue a training run; refused while another run of the category is queued or running."""
    params = {**default_hyperparameters(), **(hyperparameters or {})}
    fail_stalled_runs(category=category)
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                category=category, hyperparameters=params, requested_by=user, progress={"stage": "queued"}
            )
    except IntegrityError:
        running = ModelVersion.objects.filter(category=category, status__in=RUNNING_STATUSES).first()
        raise TrainingAlreadyRunning(f"{running or 'A run'} is still in progress; wait for it to finish.") from None
    from workers.tasks import train_model_version

    def enqueue() -> None:
        try:
            train_model_version.delay(version.pk)
        except Exception as error:  # a queued row nobody will run would block every later run
            _fail(version.pk, f"could not queue the run: {error}")
            raise

    transaction.on_commit(enqueue, robust=True)
    return version


def fail_stalled_runs(*, category: str) -> int:
    """Mark failed the running versions whose worker stopped reporting (killed, never redelivered)."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRAINING_STALL_SECONDS)
    return ModelVersion.objects.filter(category=category, status__in=RUNNING_STATUSES, updated_at__lt=cutoff).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        error=f"no progress for {settings.TRAINING_STALL_SECONDS} s: the worker running it was lost",
    )


class RunSuperseded(Exception):
    """The run was ended elsewhere (marked failed as stalled) while this worker still ran it."""


def _update(version: ModelVersion, **fields) -> None:
    """Write a running version's fields, only while it is still running (compare-and-set)."""
    for name, value in fields.items():
        setattr(version, name, value)
    written = ModelVersion.objects.filter(pk=version.pk, status__in=RUNNING_STATUSES).update(
        **fields, updated_at=timezone.now()
    )
    if not written:
        raise RunSuperseded(f"{version} is no longer running")


def _compute_all_features(version: ModelVersion) -> None:
    """Features for every shop image and street crop of the category (skips what is stored)."""
    image_ids = list(
        ProductImage.objects.filter(product__category=version.category).order_by("id").values_list("id", flat=True)
    )
    street_ids = list(
        StreetPhoto.objects.filter(product__category=version.category).order_by("id").values_list("id", flat=True)
    )
    total = len(image_ids) + len(street_ids)
    done = 0
    for chunk in indexing.chunked(image_ids, 64):
        indexing.compute_product_image_features(product_image_ids=chunk)
        done += len(chunk)
        _update(version, progress={"stage": "features", "done": done, "total": total})
    for chunk in indexing.chunked(street_ids, 64):
        indexing.compute_street_photo_features(street_photo_ids=chunk)
        done += len(chunk)
        _update(version, progress={"stage": "features", "done": done, "total": total})


def _validation_products(train_products: np.ndarray, *, seed: int, share: float = 0.15) -> set[int]:
    """Hold out whole products (never single photos) for validation."""
    rng = np.random.default_rng(seed)
    unique = np.unique(train_products)
    count = max(1, int(round(len(unique) * share))) if len(unique) >= 4 else 0
    return set(rng.choice(unique, size=count, replace=False).tolist()) if count else set()


@dataclass
class TrainingData:
    """Training pairs' features, and the validation set the gate and early stopping use."""

    street: np.ndarray
    street_labels: np.ndarray
    shop: np.ndarray
    shop_labels: np.ndarray
    validation: evaluation.EvaluationData | None
    counts: dict


def training_data(*, category: str, weights_id: str, seed: int) -> TrainingData:
    """Train-split crops, minus held-out validation products; test products are never touched."""
    street, street_labels = evaluation.street_features(category=category, split=Split.TRAIN, weights_id=weights_id)
    if len(street) == 0:
        raise ValueError("no training street photos with features: seed and index the catalogue first")
    held_out = _validation_products(street_labels, seed=seed)
    fit_products = set(np.unique(street_labels).tolist()) - held_out
    fit = np.isin(street_labels, list(fit_products))
    # Negatives come from training products only: test products must stay unseen.
    shop, shop_labels = evaluation.shop_features(category=category, weights_id=weights_id, product_ids=fit_products)
    validation = None
    if held_out:
        # Validation crops rank the training and validation products' shop photos.
        gallery, gallery_labels = evaluation.shop_features(
            category=category, weights_id=weights_id, product_ids=fit_products | held_out
        )
        validation = evaluation.EvaluationData(street[~fit], street_labels[~fit], gallery, gallery_labels)
    counts = {
        "train_products": len(fit_products),
        "validation_products": len(held_out),
        "train_street_crops": int(fit.sum()),
        "validation_street_crops": int((~fit).sum()),
        "train_shop_images": len(shop),
        "test_products": Product.objects.filter(category=category, street_photos__split=Split.TEST).distinct().count(),
    }
    return TrainingData(street[fit], street_labels[fit], shop, shop_labels, validation, counts)


def _train(version: ModelVersion, data: TrainingData):
    from similarity.siamese import TrainConfig, ValidationSet, train_siamese

    params = version.hyperparameters
    _update(version, dataset_counts=data.counts, progress={"stage": "training", "epoch": 0, "epochs": params["epochs"]})
    history: list[dict] = []

    def on_epoch(epoch: int, logs: dict) -> None:
        history.append({k: (float(v) if v is not None else None) for k, v in logs.items()} | {"epoch": epoch})
        _update(version, history=history, progress={"stage": "training", "epoch": epoch, "epochs": params["epochs"]})

    config = TrainConfig(**{k: params[k] for k in TrainConfig.__dataclass_fields__ if k in params})
    validation = None
    if data.validation is not None:
        v = data.validation
        validation = ValidationSet(v.queries, v.query_labels, v.gallery, v.gallery_labels)
    return train_siamese(
        data.street,
        data.street_labels,
        data.shop,
        data.shop_labels,
        config,
        validation=validation,
        on_epoch=on_epoch,
    )


def _previous_tower(version: ModelVersion):
    """The active version's tower, where it was trained on the same backbone weights."""
    active = ModelVersion.objects.filter(category=version.category, status=Status.ACTIVE).exclude(pk=version.pk).first()
    if active is None or active.weights_id != version.weights_id or not active.artifact_path:
        return None, None
    try:
        return active, runtime.get_tower(
            version_id=active.pk, artifact_path=active.artifact_path, checksum=active.checksum
        )
    except (OSError, ValueError) as error:
        logger.warning("cannot load the active %s for comparison: %s", active, error)
        return None, None


def _scores(queries: np.ndarray, query_labels: np.ndarray, chunks, tower, previous) -> dict:
    """Raw features (baseline), the comparable active model and the new one, in one pass over the gallery chunks."""
    towers = {"baseline": None, **({"previous": previous} if previous is not None else {}), "siamese": tower}
    return evaluation.score(queries, query_labels, chunks, towers)


def gate_decision(validation: dict | None, *, has_previous: bool) -> dict:
    """Pass only when validation top-20 is at least the raw baseline's and the active model's."""
    if not validation:
        if has_previous:
            return {"passed": False, "reason": "no validation products to compare with the active model"}
        return {"passed": True, "reason": "first model; too few products for a validation split"}
    new = validation["siamese"]["top20"]
    floors = {"baseline": validation["baseline"]["top20"]}
    if "previous" in validation:
        floors["active model"] = validation["previous"]["top20"]
    below = [f"{name} {value:.3f}" for name, value in floors.items() if new < value]
    if below:
        return {"passed": False, "reason": f"validation top-20 {new:.3f} is below the " + " and the ".join(below)}
    return {
        "passed": True,
        "reason": f"validation top-20 {new:.3f} ≥ "
        + ", ".join(f"{name} {value:.3f}" for name, value in floors.items()),
    }


def _evaluate(version: ModelVersion, tower, data: TrainingData, *, best_epoch: int | None) -> dict:
    previous_version, previous = _previous_tower(version)
    metrics: dict = {"best_epoch": best_epoch}
    if previous_version is not None:
        metrics["previous_version"] = previous_version.pk
    # Test crops rank the whole category's gallery, streamed from the database chunk by chunk.
    queries, query_labels = evaluation.street_features(
        category=version.category, split=Split.TEST, weights_id=version.weights_id
    )
    if len(queries):
        chunks = evaluation.gallery_chunks(category=version.category, weights_id=version.weights_id)
        metrics["test"] = _scores(queries, query_labels, chunks, tower, previous)
    del queries, query_labels
    if data.validation is not None and len(data.validation.queries):
        v = data.validation
        metrics["validation"] = _scores(v.queries, v.query_labels, v.chunks(), tower, previous)
    metrics["gate"] = gate_decision(metrics.get("validation"), has_previous=previous is not None)
    return metrics


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
        backbone = runtime.get_backbone()
        _update(version, weights_id=backbone.weights_id)
        _compute_all_features(version)
        data = training_data(
            category=version.category, weights_id=version.weights_id, seed=int(version.hyperparameters.get("seed", 0))
        )
        result = _train(version, data)
        tower = result.tower

        from similarity.siamese import save_tower

        path = Path(settings.MODEL_STORE) / "siamese" / f"v{version.pk}-{version.category}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        checksum = save_tower(tower, path)
        _update(
            version,
            status=Status.EVALUATING,
            artifact_path=str(path),
            checksum=checksum,
            progress={"stage": "evaluating"},
        )
        metrics = _evaluate(version, tower, data, best_epoch=result.best_epoch)
        _update(version, metrics={**metrics, "backbone": _backbone_cost(version, backbone)})

        _update(version, status=Status.EMBEDDING, progress={"stage": "embedding", "done": 0})
        product_ids = list(
            Product.objects.filter(category=version.category).order_by("id").values_list("id", flat=True)
        )
        done = 0
        for chunk in indexing.chunked(product_ids, 256):
            indexing.embed_products(version=version, product_ids=chunk)
            done += len(chunk)
            _update(version, progress={"stage": "embedding", "done": done, "total": len(product_ids)})
        # Products that arrived while this run was embedding.
        late = list(_products_missing_embedding(version).values_list("id", flat=True))
        if late:
            indexing.compute_product_image_features(
                product_image_ids=list(ProductImage.objects.filter(product_id__in=late).values_list("id", flat=True))
            )
            indexing.embed_products(version=version, product_ids=late)
        _rank_in_slices(version)
    except RunSuperseded as error:
        logger.warning("training run %s abandoned: %s", version_id, error)
    except Exception as error:  # any failure must leave the live model serving and say why
        logger.exception("training run %s failed", version_id)
        _fail(version_id, _error_text(error))


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def _rank_in_slices(version: ModelVersion) -> None:
    """Queue the similar-item lists of the new version as slice tasks; the last slice to finish
    ends the run. Many workers shorten it; pages keep reading the active version meanwhile."""
    from workers.tasks import rank_similar_slice

    bounds = slice_bounds(version_id=version.pk)
    _update(version, progress={"stage": "ranking", "done": 0, "total": len(bounds), "slices_done": []})
    if not bounds:
        _finish_run(version.pk)
        return
    for number, (low, high) in enumerate(bounds):
        rank_similar_slice.delay(version.pk, low, high, number)


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
    gate = (version.metrics or {}).get("gate") or {}
    if not gate.get("passed"):
        logger.warning("%s stays ready, not active: %s", version, gate.get("reason"))
        return
    try:
        activate_version(version_id=version.pk)
    except ActivationRefused as error:
        logger.warning("%s stays ready: %s", version, error)


def _backbone_cost(version: ModelVersion, backbone) -> dict:
    """What the backbone costs per image on this machine, timed on a few of the category's photos."""
    import time

    from similarity.images import open_image

    images = []
    for item in ProductImage.objects.filter(product__category=version.category).order_by("id")[:9]:
        try:
            with item.image.open("rb") as handle:
                images.append(open_image(handle, max_pixels=settings.IMAGE_MAX_PIXELS))
        except (OSError, ValueError):
            continue
    info = {
        "name": backbone.name,
        "weights_id": backbone.weights_id,
        "dim": backbone.dim,
        "fallback": backbone.is_fallback,
    }
    if len(images) < 2:
        return info
    backbone.extract_images(images[:1])  # warm-up: the first call traces the graph
    started = time.perf_counter()
    backbone.extract_images(images[1:], batch_size=len(images) - 1)
    info["ms_per_image"] = round((time.perf_counter() - started) * 1000 / (len(images) - 1), 1)
    return info


def _fail(version_id: int, error: str) -> None:
    ModelVersion.objects.filter(pk=version_id, status__in=RUNNING_STATUSES).update(
        status=Status.FAILED, finished_at=timezone.now(), error=error
    )


def _products_missing_embedding(version: ModelVersion):
    """Products of the version's category that have features under its weights but no embedding."""
    return (
        Product.objects.filter(category=version.category, images__features__weights_id=version.weights_id)
        .exclude(embeddings__version=version)
        .distinct()
    )


def activate_version(*, version_id: int, override: bool = False, user=None) -> ModelVersion:
    """Make a ready version the live one in one transaction (pages never see a mix).

    A version the gate refused goes live only with `override`, which is recorded; a version
    that was live before (a rollback) needs none.
    """
    with transaction.atomic():
        category = ModelVersion.objects.values_list("category", flat=True).get(pk=version_id)
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
        if version.status != Status.READY:
            raise ActivationRefused(f"{version} is {version.get_status_display().lower()}, not ready")
        gate = (version.metrics or {}).get("gate") or {}
        needs_override = not gate.get("passed") and version.activated_at is None
        if needs_override and not override:
            raise ActivationRefused(
                f"the gate refused {version}: {gate.get('reason', 'no evaluation')}. "
                "Activating it anyway needs an override, which is recorded."
            )
        current = selectors.current_weights_id()
        if current and version.weights_id != current:
            # Its vectors would not compare with the features the workers now make.
            raise ActivationRefused(
                f"{version} was trained on {version.weights_id}, but the workers use {current}: train a new version"
            )
        missing = list(_products_missing_embedding(version).values_list("id", flat=True))
        if not missing:
            _make_active(version, gate=gate, needs_override=needs_override, user=user)
    if missing:
        # Products added since it was built (a rollback): embed them, then it can go live.
        from workers.tasks import embed_for_version

        transaction.on_commit(lambda: embed_for_version.delay(version.pk, missing), robust=True)
        raise ActivationRefused(
            f"{len(missing)} products have no embedding for {version} yet; they are being embedded now, "
            "try again in a minute"
        )
    return version


def _make_active(version: ModelVersion, *, gate: dict, needs_override: bool, user) -> None:
    """Switch the category's live version to this one (inside the caller's transaction)."""
    ModelVersion.objects.filter(category=version.category, status=Status.ACTIVE).update(status=Status.READY)
    fields: dict = {"status": Status.ACTIVE, "activated_at": timezone.now()}
    if needs_override:
        gate = {
            **gate,
            "overridden_by": getattr(user, "username", None) or "system",
            "overridden_at": timezone.now().isoformat(),
        }
        fields |= {"gate_overridden": True, "metrics": {**version.metrics, "gate": gate}}
    for name, value in fields.items():
        setattr(version, name, value)
    version.save(update_fields=[*fields, "updated_at"])
    # Products indexed during the switch were embedded for the old version only.
    transaction.on_commit(lambda: _queue_unembedded(version.pk), robust=True)


def _queue_unembedded(version_id: int) -> None:
    version = ModelVersion.objects.get(pk=version_id)
    late = list(_products_missing_embedding(version).values_list("id", flat=True))
    if late:
        from workers.tasks import embed_for_version

        embed_for_version.delay(version_id, late)


def embed_for_version(*, version_id: int, product_ids: list[int]) -> int:
    """Embed products that lack a vector for a ready or active version, and rank them."""
    from shop.services.recommendations import update_recommendations

    version = ModelVersion.objects.filter(pk=version_id, status__in=[Status.READY, Status.ACTIVE]).first()
    if version is None:
        return 0
    missing = list(
        Product.objects.filter(pk__in=product_ids).exclude(embeddings__version=version).values_list("id", flat=True)
    )
    embedded = indexing.embed_products(version=version, product_ids=missing) if missing else 0
    if embedded:
        update_recommendations(version_id=version.pk, product_ids=missing)
    return embedded


def delete_artifact(*, path: str) -> bool:
    """Delete a trained tower's file from the model store unless another version still uses it."""
    store = Path(settings.MODEL_STORE).resolve()
    file = Path(path).resolve()
    if not file.is_relative_to(store) or ModelVersion.objects.filter(artifact_path=path).exists():
        return False
    file.unlink(missing_ok=True)
    logger.info("deleted the model file %s of a deleted version", file)
    return True
