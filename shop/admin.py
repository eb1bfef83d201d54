"""Admin for every model, with thumbnails, indexing status and the retraining trigger."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from shop import selectors
from shop.models import (
    Feature,
    ModelVersion,
    Product,
    ProductEmbedding,
    ProductImage,
    SearchQuery,
    SimilarProduct,
    StreetPhoto,
)
from shop.services import training
from shop.services.catalogue import product_changed


def _thumb(image, size: int = 64) -> str:
    if not image:
        return "—"
    return format_html('<img src="{}" style="max-height:{}px;max-width:{}px" alt="">', image.url, size, size)


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    extra = 0
    fields = ("thumbnail", "image", "s2s_photo_id", "position")
    readonly_fields = ("thumbnail",)

    @admin.display(description="Photo")
    def thumbnail(self, obj: ProductImage) -> str:
        return _thumb(obj.image)


class StreetPhotoInline(admin.TabularInline):
    model = StreetPhoto
    extra = 0
    fields = ("thumbnail", "s2s_photo_id", "split", "bbox_left", "bbox_top", "bbox_width", "bbox_height")
    readonly_fields = ("thumbnail",)

    @admin.display(description="Photo")
    def thumbnail(self, obj: StreetPhoto) -> str:
        return _thumb(obj.image)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("thumbnail", "title", "category", "price", "s2s_product_id", "indexing_status")
    list_filter = ("category",)
    search_fields = ("title", "s2s_product_id")
    inlines = [ProductImageInline, StreetPhotoInline]

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        changed = [
            inline.instance.pk
            for formset in formsets
            if formset.model is ProductImage
            for inline in formset.forms
            if inline.instance.pk and "image" in inline.changed_data
        ]
        # A new product, or new photos, need features and an embedding from the workers.
        if not change or changed:
            product_changed(product_id=form.instance.pk, changed_image_ids=changed)

    def get_queryset(self, request: HttpRequest):
        queryset = super().get_queryset(request).prefetch_related("images")
        version = selectors.active_version()
        return queryset.annotate(
            has_features=Exists(Feature.objects.filter(product_image__product=OuterRef("pk"))),
            has_embedding=Exists(ProductEmbedding.objects.filter(product=OuterRef("pk"), version=version))
            if version
            else Exists(ProductEmbedding.objects.none()),
        )

    @admin.display(description="Photo")
    def thumbnail(self, obj: Product) -> str:
        images = list(obj.images.all())
        return _thumb(images[0].image if images else None)

    @admin.display(description="Indexing")
    def indexing_status(self, obj: Product) -> str:
        if obj.has_embedding:
            return "indexed"
        if obj.has_features:
            return "features only (awaiting a model)"
        return "not indexed yet"


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    list_display = ("thumbnail", "product", "s2s_photo_id", "position")
    search_fields = ("product__title", "s2s_photo_id")
    raw_id_fields = ("product",)

    def save_model(self, request: HttpRequest, obj: ProductImage, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change or "image" in form.changed_data:
            product_changed(product_id=obj.product_id, changed_image_ids=[obj.pk] if change else [])

    @admin.display(description="Photo")
    def thumbnail(self, obj: ProductImage) -> str:
        return _thumb(obj.image)


@admin.register(StreetPhoto)
class StreetPhotoAdmin(admin.ModelAdmin):
    list_display = ("thumbnail", "s2s_photo_id", "product", "split", "bbox")
    list_filter = ("split", "product__category")
    search_fields = ("s2s_photo_id", "product__title")
    raw_id_fields = ("product",)

    @admin.display(description="Photo")
    def thumbnail(self, obj: StreetPhoto) -> str:
        return _thumb(obj.image)


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ("id", "weights_id", "product_image", "street_photo", "created_at")
    list_filter = ("weights_id",)
    raw_id_fields = ("product_image", "street_photo")
    readonly_fields = ("vector",)


@admin.register(ProductEmbedding)
class ProductEmbeddingAdmin(admin.ModelAdmin):
    list_display = ("product", "version")
    list_filter = ("version",)
    raw_id_fields = ("product",)
    readonly_fields = ("vector",)


@admin.register(SimilarProduct)
class SimilarProductAdmin(admin.ModelAdmin):
    list_display = ("product", "ranking", "recommendation", "distance", "version")
    list_filter = ("version",)
    raw_id_fields = ("product", "recommendation")


@admin.register(SearchQuery)
class SearchQueryAdmin(admin.ModelAdmin):
    list_display = ("thumbnail", "status", "created_at", "finished_at", "version")
    list_filter = ("status",)
    readonly_fields = ("results", "error")

    @admin.display(description="Photo")
    def thumbnail(self, obj: SearchQuery) -> str:
        return _thumb(obj.image)


def _metrics_table(metrics: dict) -> str:
    test = metrics.get("test") or {}
    rows = []
    for name in ("baseline", "previous", "siamese"):
        if name in test:
            figures = test[name]
            rows.append((name, *(f"{figures.get(k, 0):.3f}" for k in ("top1", "top5", "top10", "top20"))))
    if not rows:
        return "—"
    body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        "<table><tr><th>test ({} queries, {} products)</th><th>top-1</th><th>top-5</th><th>top-10</th>"
        "<th>top-20</th></tr>{}</table>",
        test.get("queries", "?"),
        test.get("gallery", "?"),
        body,
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    change_list_template = "admin/shop/modelversion/change_list.html"
    list_display = ("__str__", "status", "category", "weights_id", "progress_text", "test_top20", "created_at",
                    "duration")
    list_filter = ("status", "category")
    actions = ["activate"]
    readonly_fields = (
        "status", "category", "weights_id", "progress_text", "hyperparameters", "dataset_counts", "metrics_table",
        "loss_table", "artifact_path", "checksum", "error", "gate_overridden", "requested_by", "created_at",
        "started_at", "finished_at", "activated_at",
    )
    exclude = ("history", "metrics", "progress")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are made by training runs, not by hand

    def get_urls(self):
        return [
            path("train/", self.admin_site.admin_view(self.start_training_view), name="shop_modelversion_train"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra = {
            "can_start_training": request.user.has_perm("shop.start_training"),
            "running": selectors.running_version(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def start_training_view(self, request: HttpRequest):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:shop_modelversion_changelist"))
        if not request.user.has_perm("shop.start_training"):
            raise PermissionDenied
        try:
            version = training.request_training(user=request.user)
        except training.TrainingAlreadyRunning as error:
            self.message_user(request, str(error), level=messages.WARNING)
        else:
            self.message_user(request, f"Training run {version} queued: the workers will train, evaluate and embed.")
        return HttpResponseRedirect(reverse("admin:shop_modelversion_changelist"))

    @admin.action(description="Activate the selected ready version (rollback)", permissions=["activate"])
    def activate(self, request: HttpRequest, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", level=messages.ERROR)
            return
        try:
            version = training.activate_version(version_id=queryset.get().pk)
        except training.ActivationRefused as error:
            self.message_user(request, str(error), level=messages.ERROR)
        else:
            self.message_user(request, f"{version} is now serving similar items.")

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("shop.activate_version")

    @admin.display(description="Progress")
    def progress_text(self, obj: ModelVersion) -> str:
        progress = obj.progress or {}
        stage = progress.get("stage", "")
        if stage == "training":
            return f"training: epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"
        if "done" in progress:
            return f"{stage}: {progress['done']}/{progress.get('total', '?')}"
        return stage or obj.get_status_display()

    @admin.display(description="Test top-20")
    def test_top20(self, obj: ModelVersion) -> str:
        test = (obj.metrics or {}).get("test") or {}
        if "siamese" not in test:
            return "—"
        return f"{test['siamese']['top20']:.3f} (baseline {test['baseline']['top20']:.3f})"

    @admin.display(description="Duration")
    def duration(self, obj: ModelVersion) -> str:
        seconds = obj.duration_seconds
        return f"{seconds:.0f} s" if seconds is not None else "—"

    @admin.display(description="Metrics")
    def metrics_table(self, obj: ModelVersion) -> str:
        return _metrics_table(obj.metrics or {})

    @admin.display(description="Per-epoch losses")
    def loss_table(self, obj: ModelVersion) -> str:
        if not obj.history:
            return "—"
        rows = [(row.get("epoch"), f"{row.get('loss', float('nan')):.4f}") for row in obj.history]
        return format_html(
            "<table><tr><th>epoch</th><th>loss</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", rows),
        )
