"""Backbone features and siamese embeddings: computed in workers, stored with each image/product."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, TypeVar

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.fields.files import FieldFile
from PIL import Image

from shop import runtime, selectors
from shop.models import (
    Feature,
    ModelVersion,
    Product,
    ProductEmbedding,
    ProductImage,
    StreetPhoto,
    vector_to_bytes,
)
from shop.services import colours, duplicates
from similarity.garment import read_garment
from similarity.images import BadBox, ImageError, backbone_input, open_image, thumbnail_jpeg

logger = logging.getLogger("shop")
# Longest side of a card's thumbnail in pixels; a second one twice as large serves 2x screens.
THUMBNAIL_SIDE = 320

T = TypeVar("T")


class PhotoLook(NamedTuple):
    """What the worker reads off a shop photo besides its features (similarity.garment)."""

    signature: bytes
    colours: dict[str, Any]


def _extract_features(
    items: Sequence[T], load: Callable[[T], Image.Image], *, label: Callable[[T], str]
) -> tuple[list[T], np.ndarray | None]:
    """Decode each item's image and run the backbone in batches; bad images are logged and skipped."""
    backbone = runtime.get_backbone()
    kept: list[T] = []
    vectors: list[np.ndarray] = []
    batch_items: list[T] = []
    batch_images: list[Image.Image] = []

    def flush() -> None:
        if batch_images:
            started = time.perf_counter()
            vectors.append(backbone.extract_images(batch_images, batch_size=settings.FEATURE_BATCH_SIZE))
            seconds = time.perf_counter() - started
            logger.info(
                "%s: %d images in %.2f s (%.1f images/s)",
                backbone.weights_id,
                len(batch_images),
                seconds,
                len(batch_images) / seconds,
            )
            kept.extend(batch_items)
            batch_items.clear()
            batch_images.clear()

    for item in items:
        try:
            image = load(item)
        except (ImageError, BadBox, OSError) as error:
            logger.warning("skipping %s: %s", label(item), error)
            continue
        batch_items.append(item)
        batch_images.append(image)
        if len(batch_images) >= settings.FEATURE_BATCH_SIZE:
            flush()
    flush()
    return kept, (np.concatenate(vectors) if vectors else None)


class StoredVector(TypedDict):
    """A Feature's vector and dtype fields."""

    vector: bytes
    dtype: str


def stored_vector(vector: np.ndarray) -> StoredVector:
    """A Feature's vector and dtype fields, in FEATURE_DTYPE unless float16 cannot hold the values."""
    dtype = settings.FEATURE_DTYPE
    if dtype == "float16" and not np.all(np.abs(vector) <= np.finfo(np.float16).max):
        dtype = "float32"  # keep an out-of-range vector exact rather than infinite
    return {"vector": vector_to_bytes(vector, dtype), "dtype": dtype}


def open_stored_image(field: FieldFile, *, upright: bool = True) -> Image.Image:
    """Decode a stored photo with the shop's pixel cap (see similarity.images.open_image)."""
    with field.open("rb") as handle:
        return open_image(handle, max_pixels=settings.IMAGE_MAX_PIXELS, upright=upright)


def compute_product_image_features(*, product_image_ids: Sequence[int]) -> int:
    """Store backbone features (and a thumbnail) for shop images that lack them under the current weights.

    Skipping an image that has features is sound: stored features always belong to the image's
    current file. A replacement deletes them in the transaction that changes the file, and
    features are written only while, under the row's lock, the file is still the one that was
    read (see _store_image_results).
    """
    return len(index_product_images(product_image_ids=product_image_ids).stored)


@dataclass
class ImageResults:
    """What a run over shop images did, by image id."""

    stored: list[int] = field(default_factory=list)
    # Replaced (or deleted) while the worker read them: nothing of theirs was written; the
    # re-index the replacement queued computes them from the new file.
    replaced: list[int] = field(default_factory=list)
    # Could not be decoded (logged by _extract_features).
    failed: list[int] = field(default_factory=list)


def index_product_images(*, product_image_ids: Sequence[int]) -> ImageResults:
    """compute_product_image_features, saying which images were stored, replaced meanwhile or failed."""
    backbone = runtime.get_backbone()
    has_features = Feature.objects.filter(product_image=OuterRef("pk"), weights_id=backbone.weights_id)
    todo = list(
        ProductImage.objects.filter(pk__in=product_image_ids)
        # Photos stored before colours and signatures existed get them too (and their features again).
        .filter(~Exists(has_features) | Q(signature__isnull=True))
        .order_by("id")
    )
    thumbnails: dict[int, tuple[str, ...]] = {}  # the thumbnail files made here, by image id
    looks: dict[int, PhotoLook] = {}

    def load(item: ProductImage) -> Image.Image:
        image = open_stored_image(item.image)
        # The worker decodes the photo anyway; pages then never ship multi-megapixel originals.
        made: list[str] = []
        sizes = ((item.thumbnail, "", THUMBNAIL_SIDE), (item.thumbnail_large, "-large", 2 * THUMBNAIL_SIDE))
        for thumbnail, suffix, side in sizes:
            if not thumbnail:
                thumbnail.save(f"{item.pk}{suffix}.jpg", ContentFile(thumbnail_jpeg(image, longest=side)), save=False)
                assert thumbnail.name is not None  # save() named it
                made.append(thumbnail.name)
        if made:
            thumbnails[item.pk] = tuple(made)
        model_input = backbone_input(image, size=backbone.input_size)
        # ~1.6 ms a photo against a forward pass of 20 ms (bf16) to 115 ms (float32) here
        # (benchmarks/bench_worker_extras.py).
        reading = read_garment(image, model_input)
        looks[item.pk] = PhotoLook(reading.signature.astype(np.float16).tobytes(), reading.colours.to_json())
        return model_input

    kept, vectors = _extract_features(todo, load, label=lambda item: f"shop image {item.pk}")
    features = dict(zip((item.pk for item in kept), vectors)) if vectors is not None else {}
    current, thumbnails_kept = _store_image_results(
        todo,
        features,
        thumbnails,
        looks={pk: look for pk, look in looks.items() if pk in features},
        weights_id=backbone.weights_id,
    )
    results = ImageResults()
    for item in todo:
        if current.get(item.pk) != item.image.name:
            # Replaced or deleted meanwhile (a decode may have failed only because the old file is gone).
            results.replaced.append(item.pk)
        elif item.pk in features:
            results.stored.append(item.pk)
        else:
            results.failed.append(item.pk)
    orphans = [name for pk, names in thumbnails.items() if pk not in thumbnails_kept for name in names]
    if orphans:
        from shop.services.catalogue import delete_unreferenced_files

        delete_unreferenced_files(orphans)
    _update_products_looks(product_image_ids)
    return results


def _update_products_looks(product_image_ids: Sequence[int]) -> None:
    """The colours and duplicate group of every product named, not only those with new photos:
    one that lost a photo may lose a colour or leave a group of listings."""
    touched = sorted(set(ProductImage.objects.filter(pk__in=product_image_ids).values_list("product_id", flat=True)))
    if touched:
        colours.update_product_colours(product_ids=touched)
        duplicates.regroup(product_ids=touched)


def _store_image_results(
    items: list[ProductImage],
    features: dict[int, np.ndarray],
    thumbnails: dict[int, tuple[str, ...]],
    *,
    looks: dict[int, PhotoLook],
    weights_id: str,
) -> tuple[dict[int, str], set[int]]:
    """Write what was made from the files `items` were read with, for the rows that still have those files.

    The check and the writes share one transaction holding the rows' locks (taken in id order, so
    two workers cannot deadlock), and the admin changes a file and deletes its old features in one
    transaction too, so features of a replaced file are never stored. One transaction per batch
    keeps the write cost of a batch at a few statements. Returns each row's current file name
    (absent: deleted) and the ids whose thumbnail was stored.
    """
    if not items:
        return {}, set()
    with transaction.atomic():
        # Every row, written or not: an image that failed to decode may have failed because it was replaced.
        rows = {
            pk: (image, thumbnail and large)
            for pk, image, thumbnail, large in ProductImage.objects.select_for_update()
            .filter(pk__in=[item.pk for item in items])
            .order_by("id")
            .values_list("id", "image", "thumbnail", "thumbnail_large")
        }
        unchanged = [item for item in items if item.pk in rows and rows[item.pk][0] == item.image.name]
        kept = {item.pk for item in unchanged}
        for item in items:
            if item.pk not in kept:
                logger.info(
                    "shop image %s was replaced or deleted while %s was read: nothing stored", item.pk, item.image.name
                )
        thumbnailed = [item for item in unchanged if item.pk in thumbnails and not rows[item.pk][1]]
        if thumbnailed:
            ProductImage.objects.bulk_update(thumbnailed, ["thumbnail", "thumbnail_large"])
        looked = [item for item in unchanged if item.pk in looks]
        for item in looked:
            item.signature, item.colours = looks[item.pk]
        if looked:
            ProductImage.objects.bulk_update(looked, ["signature", "colours"])
        Feature.objects.bulk_create(
            [
                Feature(product_image_id=item.pk, weights_id=weights_id, **stored_vector(features[item.pk]))
                for item in unchanged
                if item.pk in features
            ],
            ignore_conflicts=True,  # a redelivered task may race its first run
        )
    return {pk: image for pk, (image, _) in rows.items()}, {item.pk for item in thumbnailed}


def compute_street_photo_features(*, street_photo_ids: Sequence[int]) -> int:
    """Store backbone features of street crops (the boxed garment) that lack them."""
    backbone = runtime.get_backbone()
    todo = list(
        StreetPhoto.objects.filter(pk__in=street_photo_ids)
        .exclude(features__weights_id=backbone.weights_id)
        .order_by("id")
    )

    def load(photo: StreetPhoto) -> Image.Image:
        # Dataset boxes are on the stored pixel grid, so no EXIF rotation before cropping.
        image = open_stored_image(photo.image, upright=False)
        return backbone_input(image, bbox=photo.bbox, size=backbone.input_size)

    kept, vectors = _extract_features(todo, load, label=lambda photo: f"street photo {photo.pk}")
    if vectors is None:
        return 0
    Feature.objects.bulk_create(
        [
            Feature(street_photo=photo, weights_id=backbone.weights_id, **stored_vector(v))
            for photo, v in zip(kept, vectors)
        ],
        ignore_conflicts=True,
    )
    return len(kept)


def product_feature_matrix(*, product_ids: Sequence[int], weights_id: str) -> tuple[list[int], list[np.ndarray]]:
    """Per product, the stacked features of its shop images (products without any are left out)."""
    pairs = ProductImage.objects.filter(product_id__in=product_ids).order_by("product_id", "position", "id")
    image_to_product = dict(pairs.values_list("id", "product_id"))
    features = selectors.image_features(weights_id=weights_id, product_image_ids=list(image_to_product))
    grouped: dict[int, list[np.ndarray]] = {}
    for image_id, product_id in image_to_product.items():
        if image_id in features:
            grouped.setdefault(product_id, []).append(features[image_id])
    ids = sorted(grouped)
    return ids, [np.stack(grouped[i]) for i in ids]


def embed_products(*, version: ModelVersion, product_ids: Sequence[int]) -> int:
    """Store each product's vector under a version: the normalised mean of its shop images'
    embeddings, blended with its colours when the version has a colour weight."""
    from similarity.embedding import embed, with_colour

    tower = runtime.tower_for(version)
    ids, stacks = product_feature_matrix(product_ids=product_ids, weights_id=version.weights_id)
    if not ids:
        return 0
    flat = np.concatenate(stacks)
    embedded = embed(tower, flat)
    means = []
    offset = 0
    for stack in stacks:
        mean = embedded[offset : offset + len(stack)].mean(axis=0)
        offset += len(stack)
        means.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    weight = colours.colour_weight(version)
    descriptors = colours.colour_descriptors(product_ids=ids) if weight > 0 else None
    vectors = with_colour(np.stack(means), descriptors, weight)
    rows = [
        ProductEmbedding(product_id=product_id, version=version, vector=vector_to_bytes(vector))
        for product_id, vector in zip(ids, vectors)
    ]
    ProductEmbedding.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["product", "version"], update_fields=["vector"]
    )
    return len(rows)


def index_products(*, product_ids: Sequence[int]) -> int:
    """Features for the products' shop images, then their embedding under the active version."""
    image_ids = list(ProductImage.objects.filter(product_id__in=product_ids).values_list("id", flat=True))
    results = index_product_images(product_image_ids=image_ids)
    weights_id = runtime.get_backbone().weights_id
    _withdraw_outdated_embeddings(results)
    waiting = _products_awaiting_features(product_ids, results, weights_id=weights_id)
    categories = set(Product.objects.filter(pk__in=product_ids).values_list("category", flat=True))
    for category in categories:
        version = selectors.active_version(category=category)
        if version is None:
            continue
        if version.weights_id != weights_id:
            # Never mix vectors made by different backbones: this version needs a retrain.
            logger.warning("active %s uses %s, workers use %s: not embedding", version, version.weights_id, weights_id)
            continue
        ids = list(
            Product.objects.filter(pk__in=product_ids, category=category)
            .exclude(pk__in=waiting)
            .values_list("id", flat=True)
        )
        missing = list(
            Product.objects.filter(pk__in=ids).exclude(embeddings__version=version).values_list("id", flat=True)
        )
        if missing and embed_products(version=version, product_ids=missing):
            from shop.services.recommendations import update_recommendations

            update_recommendations(version_id=version.pk, product_ids=missing)
    return len(results.stored)


def _withdraw_outdated_embeddings(results: ImageResults) -> None:
    """Products that got new features here but already have an embedding: it was made from older
    features (a worker embedded them while the photo was being replaced). Take them out of every
    list first, so that embedding them below replaces the old vector everywhere."""
    if not results.stored:
        return
    stored = ProductImage.objects.filter(pk__in=results.stored).values_list("product_id", flat=True)
    outdated = sorted(set(ProductEmbedding.objects.filter(product_id__in=stored).values_list("product_id", flat=True)))
    if outdated:
        from shop.services.catalogue import withdraw_products

        logger.info("products %s had embeddings older than their features: re-embedding them", outdated[:10])
        withdraw_products(product_ids=outdated, in_request=False)


def _products_awaiting_features(product_ids: Sequence[int], results: ImageResults, *, weights_id: str) -> set[int]:
    """Products with a photo that lacks features for a reason other than failing to decode here:
    replaced while this run read it, or changed or added since. Their re-index is queued; an
    embedding made now would miss that photo and keep the re-index from embedding them again."""
    lacking = (
        ProductImage.objects.filter(product_id__in=product_ids)
        .exclude(features__weights_id=weights_id)
        .exclude(pk__in=results.failed)
    )
    return set(lacking.values_list("product_id", flat=True))


def index_street_photos(*, street_photo_ids: Sequence[int]) -> int:
    return compute_street_photo_features(street_photo_ids=street_photo_ids)
