"""The retraining lifecycle: request, train, evaluate, embed, activate; failures leave the live model serving."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from shop import runtime
from shop.models import RUNNING_STATUSES, Category, ModelVersion, Product, ProductImage, Split, StreetPhoto
from shop.services import evaluation, indexing
from shop.services.recommendations import rebuild_recommendations

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
    }


def request_training(
    *, category: str = Category.DRESSES, user=None, hyperparameters: dict | None = None
) -> ModelVersion:
    """Queue a training run; refused while another run of the category is queued or running."""
    params = {**default_hyperparameters(), **(hyperparameters or {})}
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                category=category, hyperparameters=params, requested_by=user, progress={"stage": "queued"}
            )
    except IntegrityError:
        running = ModelVersion.objects.filter(category=category, status__in=RUNNING_STATUSES).first()
        raise TrainingAlreadyRunning(f"{running or 'A run'} is still in progress; wait for it to finish.") from None
    from workers.tasks import train_model_version

    transaction.on_commit(lambda: train_model_version.delay(version.pk))
    return version


def _update(version: ModelVersion, **fields) -> None:
    for name, value in fields.items():
        setattr(version, name, value)
    version.save(update_fields=list(fields))


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


def _train(version: ModelVersion) -> tuple[object, dict]:
    from similarity.siamese import TrainConfig, train_siamese

    weights_id = version.weights_id
    street, street_labels = evaluation.street_features(
        category=version.category, split=Split.TRAIN, weights_id=weights_id
    )
    if len(street) == 0:
        raise ValueError("no training street photos with features: seed and index the catalogue first")
    params = version.hyperparameters
    validation = _validation_products(street_labels, seed=int(params.get("seed", 0)))
    fit_products = set(np.unique(street_labels).tolist()) - validation
    keep = np.isin(street_labels, list(fit_products))
    # Negatives come from training products only: test products must stay unseen.
    shop, shop_labels = evaluation.shop_features(
        category=version.category, weights_id=weights_id, product_ids=fit_products
    )
    counts = {
        "train_products": len(fit_products),
        "validation_products": len(validation),
        "train_street_crops": int(keep.sum()),
        "train_shop_images": int(len(shop)),
        "test_products": Product.objects.filter(
            category=version.category, street_photos__split=Split.TEST
        ).distinct().count(),
    }
    _update(version, dataset_counts=counts, progress={"stage": "training", "epoch": 0, "epochs": params["epochs"]})
    history: list[dict] = []

    def on_epoch(epoch: int, logs: dict) -> None:
        history.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        _update(version, history=history, progress={"stage": "training", "epoch": epoch, "epochs": params["epochs"]})

    config = TrainConfig(**{k: params[k] for k in TrainConfig.__dataclass_fields__ if k in params})
    result = train_siamese(street[keep], street_labels[keep], shop, shop_labels, config, on_epoch=on_epoch)
    return result.tower, counts


def _evaluate(version: ModelVersion, tower) -> dict:
    metrics: dict = {}
    test = evaluation.evaluation_data(category=version.category, split=Split.TEST, weights_id=version.weights_id)
    metrics["test"] = {
        "queries": int(len(test.queries)),
        "gallery": int(test.gallery_products),
        "baseline": evaluation.evaluate_features(test),
        "siamese": evaluation.evaluate_features(test, tower=tower),
    }
    return metrics


def run_training(*, version_id: int) -> None:
    """Worker entry: run one queued version to `active`, or mark it failed with its error."""
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None or version.status not in RUNNING_STATUSES:
        return  # done already (a redelivered task), or cancelled
    try:
        _update(version, status=Status.TRAINING, started_at=timezone.now(), error="")
        backbone = runtime.get_backbone()
        _update(version, weights_id=backbone.weights_id)
        _compute_all_features(version)
        tower, _counts = _train(version)

        from similarity.siamese import save_tower

        path = Path(settings.MODEL_STORE) / "siamese" / f"v{version.pk}-{version.category}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        checksum = save_tower(tower, path)
        _update(version, status=Status.EVALUATING, artifact_path=str(path), checksum=checksum,
                progress={"stage": "evaluating"})
        _update(version, metrics=_evaluate(version, tower))

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
        rebuild_recommendations(version_id=version.pk)
        _update(version, status=Status.READY, finished_at=timezone.now(), progress={"stage": "ready"})
        activate_version(version_id=version.pk)
    except Exception as error:  # any failure must leave the live model serving and say why
        logger.exception("training run %s failed", version_id)
        ModelVersion.objects.filter(pk=version_id).update(
            status=Status.FAILED,
            finished_at=timezone.now(),
            error="".join(traceback.format_exception_only(type(error), error)).strip(),
        )


def _products_missing_embedding(version: ModelVersion):
    """Products of the version's category that have features under its weights but no embedding."""
    return (
        Product.objects.filter(category=version.category, images__features__weights_id=version.weights_id)
        .exclude(embeddings__version=version)
        .distinct()
    )


def activate_version(*, version_id: int) -> ModelVersion:
    """Make a ready version the live one in one transaction (pages never see a mix)."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if version.status == Status.ACTIVE:
            return version
        if version.status != Status.READY:
            raise ActivationRefused(f"{version} is {version.get_status_display().lower()}, not ready")
        missing = _products_missing_embedding(version).count()
        if missing:
            raise ActivationRefused(f"{missing} products have no embedding for {version} yet")
        ModelVersion.objects.filter(category=version.category, status=Status.ACTIVE).update(status=Status.READY)
        _update(version, status=Status.ACTIVE, activated_at=timezone.now())
    return version
