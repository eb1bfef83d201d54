"""Admin for every model, with thumbnails, indexing status and the retraining trigger."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from shop import selectors
from shop.charts import line_chart
from shop.models import (
    Feature,
    ModelVersion,
    PhotoDownload,
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


METRIC_ROWS = (("baseline", "raw backbone (cosine)"), ("previous", "previous active"), ("siamese", "this version"))


def _metrics_table(metrics: dict, part: str, label: str) -> str:
    figures = metrics.get(part) or {}
    rows = [
        (name, *(f"{figures[key].get(k, 0):.3f}" for k in ("top1", "top5", "top10", "top20")))
        for key, name in METRIC_ROWS
        if key in figures
    ]
    if not rows:
        return ""
    body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table style="margin-bottom:8px"><tr><th>{} ({} queries, {} products)</th><th>top-1</th><th>top-5</th>'
        "<th>top-10</th><th>top-20</th></tr>{}</table>",
        label,
        figures.get("queries", "?"),
        figures.get("gallery", "?"),
        body,
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    change_list_template = "admin/shop/modelversion/change_list.html"
    change_form_template = "admin/shop/modelversion/change_form.html"
    list_display = ("__str__", "status_badge", "category", "weights_id", "progress_text", "val_top20", "test_top20",
                    "gate_text", "created_at", "duration", "activate_button")
    list_filter = ("status", "category")
    readonly_fields = (
        "status", "category", "weights_id", "progress_text", "gate_text", "metrics_tables", "curves",
        "hyperparameters", "dataset_counts", "loss_table", "artifact_path", "checksum", "error", "gate_overridden",
        "requested_by", "created_at", "started_at", "finished_at", "activated_at",
    )
    exclude = ("history", "metrics", "progress")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are made by training runs, not by hand

    def get_urls(self):
        return [
            path("train/", self.admin_site.admin_view(self.start_training_view), name="shop_modelversion_train"),
            path("<int:pk>/activate/", self.admin_site.admin_view(self.activate_view),
                 name="shop_modelversion_activate"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        self._request = request
        running = selectors.running_version()
        extra = {
            "can_start_training": request.user.has_perm("shop.start_training"),
            "running": running,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)
        extra = {
            "is_running": bool(version and version.is_running),
            "can_activate": request.user.has_perm("shop.activate_version"),
            "needs_override": bool(
                version
                and version.status == ModelVersion.Status.READY
                and not (version.metrics or {}).get("gate", {}).get("passed")
                and version.activated_at is None
            ),
            "is_ready": bool(version and version.status == ModelVersion.Status.READY),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

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

    def activate_view(self, request: HttpRequest, pk: int):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:shop_modelversion_change", args=[pk]))
        if not request.user.has_perm("shop.activate_version"):
            raise PermissionDenied
        override = request.POST.get("override") == "1"
        try:
            version = training.activate_version(version_id=pk, override=override, user=request.user)
        except training.ActivationRefused as error:
            self.message_user(request, str(error), level=messages.ERROR)
        except ModelVersion.DoesNotExist:
            raise Http404("No such model version") from None
        else:
            note = " (gate overridden, recorded)" if override and version.gate_overridden else ""
            self.message_user(request, f"{version} now serves similar items{note}.")
        return HttpResponseRedirect(reverse("admin:shop_modelversion_changelist"))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: ModelVersion) -> str:
        colour = {"active": "#2e7d32", "failed": "#b00020", "ready": "#2f6f9f"}.get(obj.status, "#8a5a00")
        text = "● active (serving)" if obj.status == ModelVersion.Status.ACTIVE else obj.get_status_display()
        return format_html('<strong style="color:{}">{}</strong>', colour, text)

    @admin.display(description="")
    def activate_button(self, obj: ModelVersion) -> str:
        request = getattr(self, "_request", None)
        if obj.status != ModelVersion.Status.READY or request is None:
            return ""
        if not request.user.has_perm("shop.activate_version"):
            return ""
        gate_passed = (obj.metrics or {}).get("gate", {}).get("passed")
        if not gate_passed and obj.activated_at is None:
            return format_html('<a href="{}">gate refused: review</a>',
                               reverse("admin:shop_modelversion_change", args=[obj.pk]))
        label = "Roll back to this" if obj.activated_at else "Activate"
        return format_html(
            '<form method="post" action="{}" style="margin:0"><input type="hidden" name="csrfmiddlewaretoken" '
            'value="{}"><button type="submit" class="button">{}</button></form>',
            reverse("admin:shop_modelversion_activate", args=[obj.pk]),
            get_token(request),
            label,
        )

    @admin.display(description="Progress")
    def progress_text(self, obj: ModelVersion) -> str:
        progress = obj.progress or {}
        stage = progress.get("stage", "")
        if stage == "training":
            return f"training: epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"
        if "done" in progress:
            return f"{stage}: {progress['done']}/{progress.get('total', '?')}"
        return stage or obj.get_status_display()

    @staticmethod
    def _top20(obj: ModelVersion, part: str) -> str:
        figures = (obj.metrics or {}).get(part) or {}
        if "siamese" not in figures:
            return "—"
        return f"{figures['siamese']['top20']:.3f} (raw {figures['baseline']['top20']:.3f})"

    @admin.display(description="Validation top-20")
    def val_top20(self, obj: ModelVersion) -> str:
        return self._top20(obj, "validation")

    @admin.display(description="Test top-20")
    def test_top20(self, obj: ModelVersion) -> str:
        return self._top20(obj, "test")

    @admin.display(description="Gate")
    def gate_text(self, obj: ModelVersion) -> str:
        gate = (obj.metrics or {}).get("gate")
        if not gate:
            return "—"
        verdict = "passed" if gate.get("passed") else "refused"
        if obj.gate_overridden:
            verdict = f"refused, overridden by {gate.get('overridden_by', '?')}"
        return f"{verdict}: {gate.get('reason', '')}"

    @admin.display(description="Duration")
    def duration(self, obj: ModelVersion) -> str:
        seconds = obj.duration_seconds
        return f"{seconds:.0f} s" if seconds is not None else "—"

    @admin.display(description="Metrics")
    def metrics_tables(self, obj: ModelVersion) -> str:
        metrics = obj.metrics or {}
        html = _metrics_table(metrics, "validation", "validation (gate)") + _metrics_table(metrics, "test", "test")
        cost = metrics.get("backbone") or {}
        if "ms_per_image" in cost:
            html += format_html(
                "<p>Backbone {} ({}-d{}): {} ms per image on this machine.</p>",
                cost["name"], cost["dim"], ", random fallback" if cost.get("fallback") else "", cost["ms_per_image"],
            )
        return format_html("{}", html) if html else "—"

    @admin.display(description="Curves")
    def curves(self, obj: ModelVersion) -> str:
        history = obj.history or []
        if not history:
            return "—"
        losses = {"training loss": [(row["epoch"], row.get("loss")) for row in history]}
        validation = {
            f"validation {k}": [(row["epoch"], row.get(f"val_{k}")) for row in history] for k in ("top1", "top20")
        }
        return line_chart(losses, title="loss per epoch") + line_chart(
            validation, title="validation accuracy per epoch", y_range=(0.0, 1.0)
        )

    @admin.display(description="Per-epoch history")
    def loss_table(self, obj: ModelVersion) -> str:
        if not obj.history:
            return "—"

        def cell(value) -> str:
            return "—" if value is None else f"{value:.4f}"

        rows = [(row.get("epoch"), cell(row.get("loss")), cell(row.get("val_top1")), cell(row.get("val_top20")))
                for row in obj.history]
        return format_html(
            "<table><tr><th>epoch</th><th>loss</th><th>val top-1</th><th>val top-20</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )


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
