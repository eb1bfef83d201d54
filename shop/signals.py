"""Safety net for deletions made through the ORM (a shell, a script): the same services the admin calls.

The admin calls shop.services.catalogue explicitly (delete_products, delete_product_images); those
mark their own deletions, and the receivers below leave them alone. pre_delete, not post_delete:
refilling the lists a product leaves needs the list rows that the deletion's cascade removes.
An ORM delete of many products is handled one product at a time: correct, but slower than
delete_products, which does a whole batch at once.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver

from shop.models import ModelVersion, Product, ProductImage
from shop.services import catalogue, model_versions


@receiver(pre_delete, sender=Product, dispatch_uid="shop.product_deleted")
def product_deleted(sender: type[Product], instance: Product, **kwargs: Any) -> None:
    catalogue.product_deleted(product=instance)


@receiver(pre_delete, sender=ProductImage, dispatch_uid="shop.product_image_deleted")
def product_image_deleted(
    sender: type[ProductImage], instance: ProductImage, origin: object = None, **kwargs: Any
) -> None:
    catalogue.product_image_deleted(image=instance, with_product=_deletes_products(origin))


def _deletes_products(origin: object) -> bool:
    """Whether the delete() that sent the signal was called on a product or a queryset of products."""
    return isinstance(origin, Product) or (isinstance(origin, QuerySet) and origin.model is Product)


@receiver(post_delete, sender=ModelVersion, dispatch_uid="shop.model_version_deleted")
def model_version_deleted(sender: type[ModelVersion], instance: ModelVersion, **kwargs: Any) -> None:
    """A deleted version's trained tower leaves the model store once the deletion commits."""
    if instance.artifact_name:
        transaction.on_commit(lambda: model_versions.delete_artifact(name=instance.artifact_name))
