"""Test data builders: generated images and small catalogues."""

from __future__ import annotations

import hashlib
import io

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from PIL import Image

from shop.models import (
    ModelVersion,
    Product,
    ProductEmbedding,
    ProductImage,
    SimilarProduct,
    StreetPhoto,
    vector_to_bytes,
)


def jpeg_bytes(
    size: tuple[int, int] = (64, 80), colour: tuple[int, int, int] = (180, 40, 90), quality: int = 90
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def image_bytes(fmt: str, size: tuple[int, int] = (64, 80), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (20, 120, 200) if mode == "RGB" else (20, 120, 200, 128)).save(buffer, fmt)
    return buffer.getvalue()


def make_product(
    *, title: str = "Test dress", colour=(180, 40, 90), s2s_product_id: int | None = None, category: str = "dresses"
) -> Product:
    product = Product.objects.create(title=title, price="49.00", s2s_product_id=s2s_product_id, category=category)
    image = ProductImage(product=product)
    image.image.save(f"p{product.pk}.jpg", ContentFile(jpeg_bytes(colour=colour)), save=True)
    return product


def make_street_photo(product: Product, *, split: str = "train", colour=(180, 40, 90)) -> StreetPhoto:
    photo = StreetPhoto(product=product, split=split, bbox_left=4, bbox_top=4, bbox_width=50, bbox_height=60)
    photo.image.save(f"s{product.pk}.jpg", ContentFile(jpeg_bytes(size=(64, 80), colour=colour)), save=True)
    return photo


def make_version(*, status: str = "ready", category: str = "dresses", **fields) -> ModelVersion:
    """A finished model version row, without training anything."""
    return ModelVersion.objects.create(status=status, category=category, progress={"stage": "ready"}, **fields)


def store_model_file(version: ModelVersion, data: bytes = b"a tower") -> ModelVersion:
    """Give a version a model file in the "models" storage, as training does: activation checks it.
    Use with the model_storage fixture, so the file lands in the test's own folder."""
    name = f"siamese/v{version.pk}-{version.category}.keras"
    storages["models"].save(name, ContentFile(data))
    ModelVersion.objects.filter(pk=version.pk).update(artifact_name=name, checksum=hashlib.sha256(data).hexdigest())
    version.refresh_from_db()
    return version


def make_embedding(product: Product, version: ModelVersion) -> ProductEmbedding:
    return ProductEmbedding.objects.create(product=product, version=version, vector=vector_to_bytes([0.0] * 4))


def make_similar(product: Product, recommendations: list[Product], version: ModelVersion) -> list[SimilarProduct]:
    """Ranked similar-items rows, nearest first, as the workers would write them."""
    return SimilarProduct.objects.bulk_create(
        SimilarProduct(version=version, product=product, recommendation=other, ranking=rank, distance=0.1 * rank)
        for rank, other in enumerate(recommendations, start=1)
    )
