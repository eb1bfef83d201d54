"""Admin for every model, with thumbnails, indexing status and the retraining trigger."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

import shop.admin_training  # noqa: F401  (registers the training runs' admin, kept in a module of its own)
from shop import selectors
from shop.forms import CataloguePhotoForm
from shop.models import (
    Feature,
    PhotoDownload,
    Product,
    ProductEmbedding,
    ProductImage,
    SearchQuery,
    SimilarProduct,
    StreetPhoto,
)
from shop.services.catalogue import (
    delete_product_images,
    delete_products,
    photo_file_names,
    photos_removed,
    product_changed,
)


def _thumb(image, size: int = 64) -> str:
    if not image:
        return "—"
    return format_html('<img src="{}" class="thumb thumb-{}" alt="">', image.url, size)


def _shop_thumb(item: ProductImage | None) -> str:
    """The worker-made thumbnail where there is one yet, else the original photo."""
    if item is None:
        return _thumb(None)
    return _thumb(getattr(item, "thumbnail", None) or item.image)


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = CataloguePhotoForm
    extra = 0
    fields = ("photo", "image", "s2s_photo_id", "position")
    readonly_fields = ("photo",)

    @admin.display(description="Photo")
    def photo(self, obj: ProductImage) -> str:
        return _shop_thumb(obj) if obj.pk else "—"


class StreetPhotoInline(admin.TabularInline):
    model = StreetPhoto
    extra = 0
    fields = ("photo", "s2s_photo_id", "split", "bbox_left", "bbox_top", "bbox_width", "bbox_height")
    readonly_fields = ("photo",)

    @admin.display(description="Photo")
    def photo(self, obj: StreetPhoto) -> str:
        return _thumb(obj.image)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("photo", "title", "category", "price", "s2s_product_id", "indexing_status")
    list_filter = ("category",)
    search_fields = ("title", "s2s_product_id")
    inlines = [ProductImageInline, StreetPhotoInline]

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        if change:
            # Lock the product's photos in id order, the order workers lock them in to store features:
            # the formsets would otherwise take them in position order, and the two could deadlock.
            list(ProductImage.objects.select_for_update().filter(product_id=form.instance.pk).order_by("id"))
        # The files of replaced photos, read before the formsets save the new ones.
        replaced = photo_file_names(image_ids=[inline.instance.pk for inline in self._photo_forms(formsets)])
        super().save_related(request, form, formsets, change)
        changed = [inline.instance.pk for inline in self._photo_forms(formsets) if inline.instance.pk]
        # A new product, or new photos, need features and an embedding from the workers.
        if not change or changed:
            product_changed(product_id=form.instance.pk, changed_image_ids=changed, replaced_files=replaced)

    @staticmethod
    def _photo_forms(formsets) -> list:
        """Inline photo forms with a new or replaced file (not ones being deleted)."""
        return [
            inline
            for formset in formsets
            if formset.model is ProductImage
            for inline in formset.forms
            if "image" in inline.changed_data and inline not in formset.deleted_forms
        ]

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not ProductImage:
            super().save_formset(request, form, formset, change)
            return
        instances = formset.save(commit=False)  # collects the deleted photos without deleting them
        delete_product_images(image_ids=[photo.pk for photo in formset.deleted_objects])
        for instance in instances:
            instance.save()
        formset.save_m2m()

    def delete_model(self, request: HttpRequest, obj: Product) -> None:
        delete_products(product_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        delete_products(product_ids=list(queryset.values_list("pk", flat=True)))

    def get_queryset(self, request: HttpRequest):
        return selectors.products_with_index_state(super().get_queryset(request).prefetch_related("images"))

    @admin.display(description="Photo")
    def photo(self, obj: Product) -> str:
        images = list(obj.images.all())
        return _shop_thumb(images[0] if images else None)

    @admin.display(description="Indexing")
    def indexing_status(self, obj: Product) -> str:
        # Both flags are annotations of get_queryset, not fields.
        if getattr(obj, "has_embedding", False):
            return "indexed"
        if getattr(obj, "has_features", False):
            return "features only (awaiting a model)"
        return "not indexed yet"


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    form = CataloguePhotoForm
    list_display = ("photo", "product", "s2s_photo_id", "position")
    list_select_related = ("product",)
    search_fields = ("product__title", "s2s_photo_id")
    raw_id_fields = ("product",)
    # The thumbnail is made by the workers from `image`, not uploaded by hand.
    exclude = ("thumbnail", "thumbnail_large")
    readonly_fields = ("photo",)

    def save_model(self, request: HttpRequest, obj: ProductImage, form, change: bool) -> None:
        new_file = not change or "image" in form.changed_data
        replaced = photo_file_names(image_ids=[obj.pk]) if change and new_file else []
        moved_from = form.initial.get("product") if change and "product" in form.changed_data else None
        super().save_model(request, obj, form, change)
        if moved_from is not None:
            # Both products' vectors change; the photo's own features still hold.
            photos_removed(product_ids=[moved_from, obj.product_id])
        if new_file:
            product_changed(product_id=obj.product_id, changed_image_ids=[obj.pk], replaced_files=replaced)

    def delete_model(self, request: HttpRequest, obj: ProductImage) -> None:
        delete_product_images(image_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        delete_product_images(image_ids=list(queryset.values_list("pk", flat=True)))

    @admin.display(description="Photo")
    def photo(self, obj: ProductImage) -> str:
        return _shop_thumb(obj) if obj.pk else "—"


@admin.register(StreetPhoto)
class StreetPhotoAdmin(admin.ModelAdmin):
    form = CataloguePhotoForm
    list_display = ("photo", "s2s_photo_id", "product", "split", "bbox")
    list_select_related = ("product",)
    list_filter = ("split", "product__category")
    search_fields = ("s2s_photo_id", "product__title")
    raw_id_fields = ("product",)

    @admin.display(description="Photo")
    def photo(self, obj: StreetPhoto) -> str:
        return _thumb(obj.image)


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ("id", "weights_id", "product_image", "street_photo", "created_at")
    # ProductImage's str names its product; both foreign keys are nullable, so say them explicitly.
    list_select_related = ("product_image__product", "street_photo")
    list_filter = ("weights_id",)
    raw_id_fields = ("product_image", "street_photo")
    readonly_fields = ("vector",)


@admin.register(ProductEmbedding)
class ProductEmbeddingAdmin(admin.ModelAdmin):
    list_display = ("product", "version")
    list_select_related = ("product", "version")
    list_filter = ("version",)
    raw_id_fields = ("product",)
    readonly_fields = ("vector",)


@admin.register(SimilarProduct)
class SimilarProductAdmin(admin.ModelAdmin):
    list_display = ("product", "ranking", "recommendation", "distance", "version")
    list_select_related = ("product", "recommendation", "version")
    list_filter = ("version",)
    raw_id_fields = ("product", "recommendation")


@admin.register(SearchQuery)
class SearchQueryAdmin(admin.ModelAdmin):
    """Searches without their photos: a shopper's photo is shown only to the shopper's own browser."""

    list_display = ("id", "status", "created_at", "finished_at", "version")
    list_select_related = ("version",)
    list_filter = ("status",)
    exclude = ("image",)
    readonly_fields = (
        "status",
        "photo_ready",
        "width",
        "height",
        "bbox_left",
        "bbox_top",
        "bbox_width",
        "bbox_height",
        "version",
        "results",
        "error",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # searches come from shoppers' uploads


@admin.register(PhotoDownload)
class PhotoDownloadAdmin(admin.ModelAdmin):
    """Read-only: rows are written by `seed_street2shop --download`, one per photo."""

    list_display = ("photo_id", "outcome", "http_status", "attempts", "bytes", "error", "updated_at")
    list_filter = ("outcome", "http_status")
    search_fields = ("=photo_id", "url")
    readonly_fields = ("photo_id", "url", "outcome", "http_status", "attempts", "error", "bytes", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
