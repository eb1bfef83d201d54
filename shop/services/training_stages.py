"""The stages of a training run, each given the run's version and a way to record its progress.

Features, training data, the fit, the evaluation with the quality gate, the backbone's timing,
embedding the catalogue. The run's lifecycle (shop.services.training) calls them in order; the
Django-free rules (the split, pairs, the gate) live in `similarity`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from django.conf import settings

from shop import runtime, selectors
from shop.models import ModelVersion, Split
from shop.services import enqueue, evaluation, indexing, model_versions
from similarity.evaluation import score_towers
from similarity.gate import gate_decision
from similarity.metrics import BackboneCost, RunMetrics, Scores
from similarity.train_config import TrainConfig
from similarity.training_data import TrainingData, split_training_data

if TYPE_CHECKING:
    import keras

    from similarity.backbone import Backbone
    from similarity.siamese import TrainResult

logger = logging.getLogger("shop")

# Photos timed for the backbone's cost: one warm-up, then a batch of the rest.
TIMED_IMAGES = 9


class Recorder(Protocol):
    """Writes fields of the running version (and fails when the run was ended elsewhere)."""

    def __call__(self, **fields: Any) -> None: ...


def compute_all_features(version: ModelVersion, record: Recorder) -> None:
    """Features for every shop image and street crop of the category (skips what is stored)."""
    image_ids, street_ids = selectors.category_image_ids(category=version.category)
    total = len(image_ids) + len(street_ids)
    done = 0
    for chunk in enqueue.chunked(image_ids, 64):
        indexing.compute_product_image_features(product_image_ids=chunk)
        done += len(chunk)
        record(progress={"stage": "features", "done": done, "total": total})
    for chunk in enqueue.chunked(street_ids, 64):
        indexing.compute_street_photo_features(street_photo_ids=chunk)
        done += len(chunk)
        record(progress={"stage": "features", "done": done, "total": total})


def training_data(*, category: str, weights_id: str, seed: int) -> TrainingData:
    """Train-split crops, minus held-out validation products; test products are never touched."""
    street, street_labels = evaluation.street_features(category=category, split=Split.TRAIN, weights_id=weights_id)
    if len(street) == 0:
        raise ValueError("no training street photos with features: seed and index the catalogue first")
    # The training products' shop rows only: the split takes the fit's and the validation gallery's from them.
    train_products = set(np.unique(street_labels).tolist())
    shop, shop_labels = evaluation.shop_features(category=category, weights_id=weights_id, product_ids=train_products)
    data = split_training_data(street, street_labels, shop, shop_labels, seed=seed)
    return dataclasses.replace(
        data, counts={**data.counts, "test_products": selectors.test_product_count(category=category)}
    )


def fit(version: ModelVersion, data: TrainingData, config: TrainConfig, record: Recorder) -> TrainResult:
    """Train the tower, recording the dataset's counts and each epoch's figures as it goes."""
    from similarity.siamese import train_siamese

    record(dataset_counts=data.counts, progress={"stage": "training", "epoch": 0, "epochs": config.epochs})
    history: list[dict[str, Any]] = []

    def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
        history.append({k: (float(v) if v is not None else None) for k, v in logs.items()} | {"epoch": epoch})
        record(history=history, progress={"stage": "training", "epoch": epoch, "epochs": config.epochs})

    return train_siamese(
        data.street,
        data.street_labels,
        data.shop,
        data.shop_labels,
        config,
        validation=data.validation,
        on_epoch=on_epoch,
    )


@dataclass(frozen=True)
class Comparison:
    """The active version a new one is scored against, or why it cannot be."""

    version: ModelVersion | None = None
    tower: keras.Model | None = None
    # The active version exists on the same weights, but its tower could not be loaded.
    error: str | None = None

    def towers(self, new: keras.Model) -> Mapping[str, keras.Model | None]:
        """Raw features (baseline), the active model where loaded, and the new one."""
        previous = {"previous": self.tower} if self.tower is not None else {}
        return {"baseline": None, **previous, "siamese": new}


def active_for_comparison(version: ModelVersion) -> Comparison:
    """The category's active version, where it was trained on the same backbone weights.

    One that cannot be loaded is logged and reported: the gate then refuses the new version
    (see similarity.gate.gate_decision) rather than pass it unchecked against what serves now.
    """
    active = selectors.active_version(category=version.category)
    if active is None or active.pk == version.pk or active.weights_id != version.weights_id:
        return Comparison()  # a first model, or one on other weights: nothing comparable
    problem = "it has no model file"
    if active.artifact_name:
        try:
            return Comparison(version=active, tower=runtime.tower_for(active))
        except (OSError, ValueError) as error:  # a missing, unreadable or replaced (checksum) file
            problem = str(error)
    logger.error("cannot load the active %s to compare %s with it: %s", active, version, problem)
    return Comparison(error=f"{active}: {problem}")


def evaluate(version: ModelVersion, tower: keras.Model, data: TrainingData, *, best_epoch: int | None) -> RunMetrics:
    """Baseline, active and new model on validation and test, and the gate's decision."""
    comparison = active_for_comparison(version)
    towers = comparison.towers(tower)
    test = None
    # Test crops rank the whole category's gallery, streamed from the database chunk by chunk.
    queries, query_labels = evaluation.street_features(
        category=version.category, split=Split.TEST, weights_id=version.weights_id
    )
    if len(queries):
        chunks = evaluation.gallery_chunks(category=version.category, weights_id=version.weights_id)
        test = Scores.from_json(score_towers(queries, query_labels, chunks, towers))
    del queries, query_labels
    validation = None
    if data.validation is not None and len(data.validation.queries):
        validation = Scores.from_json(data.validation.score(towers))
    gate = gate_decision(validation, has_previous=comparison.tower is not None, comparison_error=comparison.error)
    return RunMetrics(
        best_epoch=best_epoch,
        previous_version=comparison.version.pk if comparison.version is not None else None,
        test=test,
        validation=validation,
        gate=gate,
    )


def backbone_cost(version: ModelVersion, backbone: Backbone) -> BackboneCost:
    """What the backbone costs per image on this machine, timed on a few of the category's photos.

    Shown by the admin and `evaluate`; photos that cannot be read are logged and left out.
    """
    from similarity.images import open_image

    images = []
    for item in selectors.sample_product_images(category=version.category, count=TIMED_IMAGES):
        try:
            with item.image.open("rb") as handle:
                images.append(open_image(handle, max_pixels=settings.IMAGE_MAX_PIXELS))
        except (OSError, ValueError) as error:
            logger.warning("timing the backbone for %s skips shop image %s: %s", version, item.pk, error)
    cost = BackboneCost(
        name=backbone.name, weights_id=backbone.weights_id, dim=backbone.dim, fallback=backbone.is_fallback
    )
    if len(images) < 2:
        logger.warning("%s: too few readable shop images (%d) to time the backbone", version, len(images))
        return cost
    backbone.extract_images(images[:1])  # warm-up: the first call traces the graph
    started = time.perf_counter()
    backbone.extract_images(images[1:], batch_size=len(images) - 1)
    ms = round((time.perf_counter() - started) * 1000 / (len(images) - 1), 1)
    return dataclasses.replace(cost, ms_per_image=ms)


def embed_catalogue(version: ModelVersion, record: Recorder) -> None:
    """Every product's embedding under the new version, then the products that arrived meanwhile."""
    product_ids = selectors.category_product_ids(category=version.category)
    done = 0
    for chunk in enqueue.chunked(product_ids, 256):
        indexing.embed_products(version=version, product_ids=chunk)
        done += len(chunk)
        record(progress={"stage": "embedding", "done": done, "total": len(product_ids)})
    model_versions.embed_late_products(version)
