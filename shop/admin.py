"""Admin for every model, with thumbnails, indexing status and the retraining trigger."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from shop import selectors
from shop.charts import line_chart
from shop.forms import CataloguePhotoForm
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
        queryset = super().get_queryset(request).prefetch_related("images")
        return queryset.annotate(
            has_features=Exists(Feature.objects.filter(product_image__product=OuterRef("pk"))),
            # Each product is served by the active version of its own category.
            has_embedding=Exists(
                ProductEmbedding.objects.filter(
                    product=OuterRef("pk"),
                    version__status=ModelVersion.Status.ACTIVE,
                    version__category=OuterRef("category"),
                )
            ),
        )

    @admin.display(description="Photo")
    def photo(self, obj: Product) -> str:
        images = list(obj.images.all())
        return _shop_thumb(images[0] if images else None)

    @admin.display(description="Indexing")
    def indexing_status(self, obj: Product) -> str:
        if obj.has_embedding:
            return "indexed"
        if obj.has_features:
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


METRIC_ROWS = (("baseline", "raw backbone (cosine)"), ("previous", "previous active"), ("siamese", "this version"))
NO_VALIDATION = "no validation split (too few products)"


def _metrics_table(metrics: dict, part: str, label: str) -> SafeString:
    figures = metrics.get(part) or {}
    rows = [
        (name, *(f"{figures[key].get(k, 0):.3f}" for k in ("top1", "top5", "top10", "top20")))
        for key, name in METRIC_ROWS
        if key in figures
    ]
    if not rows:
        # Safe, so that concatenating it with a real table keeps the result safe.
        return mark_safe("")
    body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="metrics"><tr><th>{} ({} queries, {} products)</th><th>top-1</th><th>top-5</th>'
        "<th>top-10</th><th>top-20</th></tr>{}</table>",
        label,
        figures.get("queries", "?"),
        figures.get("gallery", "?"),
        body,
    )


def _gate_passed(version: ModelVersion) -> bool:
    return bool((version.metrics or {}).get("gate", {}).get("passed"))


def _activate_button(version: ModelVersion, request: HttpRequest) -> str:
    """One-click activate or roll back for a ready version; a link to review one the gate refused."""
    if version.status != ModelVersion.Status.READY:
        return ""
    if not _gate_passed(version) and version.activated_at is None:
        return format_html(
            '<a href="{}">gate refused: review</a>', reverse("admin:shop_modelversion_change", args=[version.pk])
        )
    label = "Roll back to this" if version.activated_at else "Activate"
    return format_html(
        '<form method="post" action="{}" class="inline-form"><input type="hidden" name="csrfmiddlewaretoken" '
        'value="{}"><button type="submit" class="button">{}</button></form>',
        reverse("admin:shop_modelversion_activate", args=[version.pk]),
        get_token(request),
        label,
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-only records of training runs; activation and rollback go through their own POST views."""

    change_list_template = "admin/shop/modelversion/change_list.html"
    change_form_template = "admin/shop/modelversion/change_form.html"
    # get_list_display adds the activate/rollback column, bound to the request being served.
    list_display = (
        "__str__",
        "status_badge",
        "category",
        "progress_text",
        "val_top20",
        "test_top20",
        "gate_text",
        "created_at",
        "duration",
    )
    list_filter = ("status", "category")
    readonly_fields = (
        "status",
        "category",
        "weights_id",
        "progress_text",
        "gate_text",
        "metrics_tables",
        "curves",
        "hyperparameters",
        "dataset_counts",
        "loss_table",
        "artifact_path",
        "checksum",
        "error",
        "gate_overridden",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "activated_at",
    )
    exclude = ("history", "metrics", "progress")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are made by training runs, not by hand

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a run's record is what it produced; only the activate view changes its status

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # The active version serves the shop and a running one is being written by a worker.
        if obj is not None and (obj.status == ModelVersion.Status.ACTIVE or obj.is_running):
            return False
        return super().has_delete_permission(request, obj)

    def get_list_display(self, request: HttpRequest):
        # The admin instance is shared by every request and thread: the button column gets this
        # request through a closure instead of through state on `self`.
        can_activate = request.user.has_perm("shop.activate_version")

        @admin.display(description="")
        def activate_button(obj: ModelVersion) -> str:
            return _activate_button(obj, request) if can_activate else ""

        return [*self.list_display, activate_button]

    def get_urls(self):
        return [
            path("train/", self.admin_site.admin_view(self.start_training_view), name="shop_modelversion_train"),
            path(
                "<int:pk>/activate/", self.admin_site.admin_view(self.activate_view), name="shop_modelversion_activate"
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
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
            "can_override": request.user.has_perm("shop.override_gate"),
            "needs_override": bool(
                version
                and version.status == ModelVersion.Status.READY
                and not _gate_passed(version)
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
        if override and not request.user.has_perm("shop.override_gate"):
            raise PermissionDenied  # activating what the gate refused is a separate, rarer right
        try:
            version = training.activate_version(version_id=pk, override=override, user=request.user)
        except training.ActivationRefused as error:
            self.message_user(request, str(error), level=messages.ERROR)
        except ModelVersion.DoesNotExist:
            raise Http404("No such model version") from None
        else:
            note = " (gate overridden, recorded)" if override and version.gate_overridden else ""
            self.message_user(request, f"{version} now serves similar items{note}.")
        # Back to the list where the user may see it; activating needs no view permission.
        can_view = self.has_view_permission(request)
        return HttpResponseRedirect(reverse("admin:shop_modelversion_changelist" if can_view else "admin:index"))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: ModelVersion) -> str:
        text = "● active (serving)" if obj.status == ModelVersion.Status.ACTIVE else obj.get_status_display()
        return format_html('<strong class="status status-{}">{}</strong>', obj.status, text)

    @admin.display(description="Progress")
    def progress_text(self, obj: ModelVersion) -> str:
        if obj.status in (ModelVersion.Status.READY, ModelVersion.Status.ACTIVE):
            return "done"
        progress = obj.progress or {}
        stage = progress.get("stage", "")
        if obj.status == ModelVersion.Status.FAILED:
            return f"failed during {stage}" if stage else "failed"
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
        text = f"{figures['siamese']['top20']:.3f}"
        if "baseline" in figures:
            text += f" (baseline {figures['baseline']['top20']:.3f})"
        return text

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
        validation = _metrics_table(metrics, "validation", "validation (gate)")
        test = _metrics_table(metrics, "test", "test")
        if not validation and test:
            validation = format_html("<p>Validation: {}.</p>", NO_VALIDATION)
        html = validation + test
        cost = metrics.get("backbone") or {}
        if "ms_per_image" in cost:
            html += format_html(
                "<p>Backbone {} ({}-d{}): {} ms per image on this machine.</p>",
                cost["name"],
                cost["dim"],
                ", random fallback" if cost.get("fallback") else "",
                cost["ms_per_image"],
            )
        return html or "—"

    @admin.display(description="Curves")
    def curves(self, obj: ModelVersion) -> str:
        history = obj.history or []
        if not history:
            return "—"
        losses = {"training loss": [(row["epoch"], row.get("loss")) for row in history]}
        validation = {
            f"validation {k}": [(row["epoch"], row.get(f"val_{k}")) for row in history] for k in ("top1", "top20")
        }
        validation_chart = line_chart(validation, title="validation accuracy per epoch", y_range=(0.0, 1.0))
        if not validation_chart:
            validation_chart = format_html('<p class="help">Validation accuracy: {}.</p>', NO_VALIDATION)
        return line_chart(losses, title="loss per epoch") + validation_chart

    @admin.display(description="Per-epoch history")
    def loss_table(self, obj: ModelVersion) -> str:
        if not obj.history:
            return "—"

        def cell(value) -> str:
            return "—" if value is None else f"{value:.4f}"

        rows = [
            (row.get("epoch"), cell(row.get("loss")), cell(row.get("val_top1")), cell(row.get("val_top20")))
            for row in obj.history
        ]
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
