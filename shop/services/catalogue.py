"""Writes to the catalogue made by people (the admin, or code using the ORM), as opposed to seeding.

No stale lists: a product whose vector changes (a photo replaced, added, moved or deleted) or
that is deleted leaves every ready and active list in the transaction of the edit, its
embeddings go with it, and the lists it left are refilled from the rest of the catalogue (in
the request for up to RERANK_IN_REQUEST lists, else by a worker). A product that is still for
sale is queued for indexing: the worker embeds it from its current photos, and the incremental
update (recommendations.update_recommendations) ranks its new list and puts it into the lists
it now enters. Photo files nobody references any more are deleted once the edit commits.

The admin calls these services explicitly (shop.admin); shop.signals calls the same ones for
deletions made through the ORM (a safety net) and stays out of the way of the explicit calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import transaction
from django.db.models import QuerySet

from shop.models import Feature, Product, ProductEmbedding, ProductImage, StreetPhoto
from shop.services import enqueue, recommendations
from shop.services.enqueue import chunked, queue_indexing

logger = logging.getLogger("shop")

# Lists a request re-ranks itself: a top-k search on the cached index costs a few ms per list at
# 1e5 products. More than that (a bulk delete) goes to the workers, RERANK_TASK_CHUNK per task.
RERANK_IN_REQUEST = 500
RERANK_TASK_CHUNK = 500

# Set while a service below deletes rows itself, so the pre_delete safety net leaves them alone.
_explicit_deletion: ContextVar[bool] = ContextVar("catalogue_explicit_deletion", default=False)


@contextmanager
def _deleting_explicitly() -> Iterator[None]:
    token = _explicit_deletion.set(True)
    try:
        yield
    finally:
        _explicit_deletion.reset(token)


def photo_file_names(*, image_ids: Sequence[int]) -> list[str]:
    """The stored photo file of each of these shop images, as committed (read before a form saves a new one)."""
    ids = [int(i) for i in image_ids if i]
    return list(ProductImage.objects.filter(pk__in=ids).exclude(image="").values_list("image", flat=True))


def product_changed(
    *, product_id: int, changed_image_ids: Sequence[int] = (), replaced_files: Sequence[str] = ()
) -> None:
    """A product was added or got new photos: forget what the old photos made, queue indexing after commit.

    ``changed_image_ids`` are its photos that are new or whose file was replaced (their features
    and thumbnails go, and the product's vector changes: it leaves every list now); ``replaced_files``
    the files they had, deleted once the edit commits unless another row still names them.
    """
    with transaction.atomic():
        if changed_image_ids:
            thumbnails = [
                name
                for pair in ProductImage.objects.filter(pk__in=changed_image_ids).values_list(
                    "thumbnail", "thumbnail_large"
                )
                for name in pair
                if name
            ]
            Feature.objects.filter(product_image_id__in=changed_image_ids).delete()
            # The worker makes new thumbnails for a photo that has none.
            ProductImage.objects.filter(pk__in=changed_image_ids).update(thumbnail="", thumbnail_large="")
            withdraw_products(product_ids=[product_id])
            delete_files_on_commit([*replaced_files, *thumbnails])
        queue_indexing(product_ids=[product_id])


def photos_removed(*, product_ids: Sequence[int]) -> None:
    """These products lost a photo (deleted, or moved to another product): new vectors from the rest."""
    with transaction.atomic():
        withdraw_products(product_ids=product_ids)
        queue_indexing(product_ids=sorted({int(p) for p in product_ids}))


def delete_products(*, product_ids: Sequence[int]) -> int:
    """Delete products and everything of theirs; the lists they were in are refilled. Returns rows deleted.

    Called by ProductAdmin.delete_model / delete_queryset; an ORM delete gets the same through
    the pre_delete signal (product_deleted), one product at a time.
    """
    ids = sorted({int(p) for p in product_ids})
    with transaction.atomic():
        files = _image_files(ProductImage.objects.filter(product_id__in=ids))
        withdraw_products(product_ids=ids)
        with _deleting_explicitly():
            deleted, _ = Product.objects.filter(pk__in=ids).delete()
        delete_files_on_commit(files)
    return deleted


def delete_product_images(*, image_ids: Sequence[int]) -> int:
    """Delete shop images and their files; their products get vectors from the photos they keep.

    Called by ProductImageAdmin.delete_model / delete_queryset and by ProductAdmin.save_formset
    for inline deletions; an ORM delete gets the same through the pre_delete signal.
    """
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return 0
    with transaction.atomic():
        images = ProductImage.objects.filter(pk__in=ids)
        files = _image_files(images)
        products = sorted(set(images.values_list("product_id", flat=True)))
        withdraw_products(product_ids=products)
        with _deleting_explicitly():
            deleted, _ = ProductImage.objects.filter(pk__in=ids).delete()
        delete_files_on_commit(files)
        queue_indexing(product_ids=products)
    return deleted


def product_deleted(*, product: Product) -> None:
    """pre_delete safety net for a Product deleted through the ORM rather than delete_products."""
    if not _explicit_deletion.get():
        withdraw_products(product_ids=[product.pk])


def product_image_deleted(*, image: ProductImage, with_product: bool) -> None:
    """pre_delete safety net for a ProductImage deleted through the ORM rather than delete_product_images.

    ``with_product``: its product is being deleted too (a cascade), which product_deleted handles.
    """
    if _explicit_deletion.get():
        return
    delete_files_on_commit([image.image.name, image.thumbnail.name, image.thumbnail_large.name])
    if not with_product:
        photos_removed(product_ids=[image.product_id])


def withdraw_products(*, product_ids: Sequence[int], in_request: bool = True) -> dict[int, list[int]]:
    """Take products out of every ready and active list, in the caller's transaction.

    Their rows in other products' lists and their own lists go, their embeddings (made from
    photos that changed or are going) too, and the lists they left are refilled from the rest
    of the catalogue: right here, or by workers once this transaction commits when more than
    RERANK_IN_REQUEST lists lost a row (``in_request``: False in a worker, which always does it
    itself). Returns, per version, the products whose lists were re-ranked or queued.
    """
    ids = sorted({int(p) for p in product_ids})
    if not ids:
        return {}
    with transaction.atomic():
        categories = set(Product.objects.filter(pk__in=ids).values_list("category", flat=True))
        version_ids = recommendations.serving_version_ids(categories=categories)
        owners = recommendations.remove_from_lists(version_ids=version_ids, product_ids=ids)
        for batch in chunked(ids, RERANK_TASK_CHUNK):
            ProductEmbedding.objects.filter(product_id__in=batch).delete()
        _refill(owners, removed=ids, in_request=in_request)
    return owners


def _refill(owners: dict[int, list[int]], *, removed: list[int], in_request: bool) -> None:
    if in_request and sum(len(lists) for lists in owners.values()) > RERANK_IN_REQUEST:
        transaction.on_commit(lambda: _queue_reranks(owners, removed), robust=True)
        return
    for version_id, lists in owners.items():
        recommendations.rerank_lists(version_id=version_id, product_ids=lists, removed_ids=removed)


def _queue_reranks(owners: dict[int, list[int]], removed: list[int]) -> None:
    for version_id, lists in owners.items():
        for batch in chunked(lists, RERANK_TASK_CHUNK):
            enqueue.rerank_similar_lists(version_id, batch, removed)


def _image_files(images: QuerySet[ProductImage]) -> list[str]:
    return [name for names in images.values_list("image", "thumbnail", "thumbnail_large") for name in names if name]


def delete_files_on_commit(names: Iterable[str | None]) -> None:
    """Delete these stored files once the current transaction commits, unless a row still names them."""
    wanted = sorted({name for name in names if name})
    if wanted:
        transaction.on_commit(lambda: delete_unreferenced_files(wanted), robust=True)


def delete_unreferenced_files(names: Iterable[str]) -> list[str]:
    """Delete the files no shop image (photo or thumbnail) or street photo names; returns those deleted.

    Seeding shares one stored copy of a dataset photo between the products that show it, so a
    file is only ever deleted once nothing references it.
    """
    wanted = {name for name in names if name}
    in_use: set[str] = set()
    for batch in chunked(sorted(wanted), RERANK_TASK_CHUNK):
        in_use.update(ProductImage.objects.filter(image__in=batch).values_list("image", flat=True))
        in_use.update(ProductImage.objects.filter(thumbnail__in=batch).values_list("thumbnail", flat=True))
        in_use.update(ProductImage.objects.filter(thumbnail_large__in=batch).values_list("thumbnail_large", flat=True))
        in_use.update(StreetPhoto.objects.filter(image__in=batch).values_list("image", flat=True))
    storage = ProductImage._meta.get_field("image").storage
    deleted = []
    for name in sorted(wanted - in_use):
        try:
            storage.delete(name)
        except OSError as error:
            logger.warning("could not delete %s: %s", name, error)
            continue
        deleted.append(name)
    return deleted
