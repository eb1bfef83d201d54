"""The training runs' admin: progress, figures, curves, and the train / activate / roll back buttons."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from shop import selectors
from shop.charts import line_chart
from shop.models import Category, ModelVersion
from shop.services import model_versions, training
from similarity.metrics import Scores
from similarity.train_config import InvalidTrainConfig

METRIC_ROWS = {"baseline": "raw backbone (cosine)", "previous": "previous active", "siamese": "this version"}
NO_VALIDATION = "no validation split (too few products)"


def _metrics_table(scores: Scores, label: str) -> dict[str, Any]:
    """One split's figures as the metrics template lays them out."""
    return {
        "label": label,
        "queries": "?" if scores.queries is None else scores.queries,
        "gallery": "?" if scores.gallery is None else scores.gallery,
        "rows": [
            {"name": METRIC_ROWS[key], "values": [f"{value:.3f}" for value in figures.figures().values()]}
            for key, figures in scores.rows()
        ],
    }


def _posted_category(request: HttpRequest) -> str | None:
    """The category the train button posted: dresses when none (forms from before categories), None if unknown."""
    value = request.POST.get("category") or Category.DRESSES
    return value if value in Category.values else None


def _category_versions() -> list[dict[str, Any]]:
    """Each category's active and running version, for the changelist's line and train form."""
    return [
        {
            "value": value,
            "label": label,
            "active": selectors.active_version(category=value),
            "running": selectors.running_version_of(category=value),
        }
        for value, label in Category.choices
    ]


def _activate_button(version: ModelVersion, request: HttpRequest) -> str:
    """One-click activate or roll back for a ready version; a link to review one the gate refused."""
    if version.status != ModelVersion.Status.READY:
        return ""
    if version.needs_override:
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
        "artifact_name",
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

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False  # a run's record is what it produced; only the activate view changes its status

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        # The active version serves the shop and a running one is being written by a worker.
        if obj is not None and (obj.status == ModelVersion.Status.ACTIVE or obj.is_running):
            return False
        return super().has_delete_permission(request, obj)

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        # The admin instance is shared by every request and thread: the button column gets this
        # request through a closure instead of through state on `self`.
        can_activate = request.user.has_perm("shop.activate_version")

        @admin.display(description="")
        def activate_button(obj: ModelVersion) -> str:
            return _activate_button(obj, request) if can_activate else ""

        return [*self.list_display, activate_button]

    def get_urls(self) -> list[URLPattern]:
        return [
            path("train/", self.admin_site.admin_view(self.start_training_view), name="shop_modelversion_train"),
            path(
                "<int:pk>/activate/", self.admin_site.admin_view(self.activate_view), name="shop_modelversion_activate"
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        categories = _category_versions()
        extra = {
            "can_start_training": request.user.has_perm("shop.start_training"),
            "categories": categories,
            # Each category runs one training at a time: the button waits only when all of them are busy.
            "all_running": all(category["running"] for category in categories),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        version = self.get_object(request, object_id)
        extra = {
            "is_running": bool(version and version.is_running),
            "can_activate": request.user.has_perm("shop.activate_version"),
            "can_override": request.user.has_perm("shop.override_gate"),
            "needs_override": bool(version and version.status == ModelVersion.Status.READY and version.needs_override),
            "is_ready": bool(version and version.status == ModelVersion.Status.READY),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def start_training_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:shop_modelversion_changelist"))
        if not request.user.has_perm("shop.start_training"):
            raise PermissionDenied
        changelist = HttpResponseRedirect(reverse("admin:shop_modelversion_changelist"))
        category = _posted_category(request)
        if category is None:
            choices = ", ".join(Category.values)
            self.message_user(request, f"Unknown category: choose one of {choices}. Nothing queued.", messages.ERROR)
            return changelist
        try:
            version = training.request_training(category=category, user=request.user)
        except training.TrainingAlreadyRunning as error:
            self.message_user(request, f"{category}: {error}", level=messages.WARNING)
        except InvalidTrainConfig as error:
            self.message_user(request, f"Training settings refused: {error}", level=messages.ERROR)
        else:
            self.message_user(
                request, f"Training run {version} for {category} queued: the workers will train, evaluate and embed."
            )
        return changelist

    def activate_view(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:shop_modelversion_change", args=[pk]))
        if not request.user.has_perm("shop.activate_version"):
            raise PermissionDenied
        override = request.POST.get("override") == "1"
        if override and not request.user.has_perm("shop.override_gate"):
            raise PermissionDenied  # activating what the gate refused is a separate, rarer right
        try:
            version = model_versions.activate_version(version_id=pk, override=override, user=request.user)
        except model_versions.ActivationRefused as error:
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
        metrics = obj.run_metrics
        scores = metrics.validation if part == "validation" else metrics.test
        if scores is None or scores.siamese is None:
            return "—"
        text = f"{scores.siamese.top20:.3f}"
        if scores.baseline is not None:
            text += f" (baseline {scores.baseline.top20:.3f})"
        return text

    @admin.display(description="Validation top-20")
    def val_top20(self, obj: ModelVersion) -> str:
        return self._top20(obj, "validation")

    @admin.display(description="Test top-20")
    def test_top20(self, obj: ModelVersion) -> str:
        return self._top20(obj, "test")

    @admin.display(description="Gate")
    def gate_text(self, obj: ModelVersion) -> str:
        gate = obj.run_metrics.gate
        if gate is None:
            return "—"
        verdict = "passed" if gate.passed else "refused"
        if obj.gate_overridden:
            verdict = f"refused, overridden by {gate.overridden_by or '?'}"
        return f"{verdict}: {gate.reason}"

    @admin.display(description="Duration")
    def duration(self, obj: ModelVersion) -> str:
        seconds = obj.duration_seconds
        return f"{seconds:.0f} s" if seconds is not None else "—"

    @admin.display(description="Metrics")
    def metrics_tables(self, obj: ModelVersion) -> str:
        metrics = obj.run_metrics
        validation, test = metrics.validation, metrics.test
        tables = []
        if validation is not None and validation.rows():
            tables.append(_metrics_table(validation, "validation (gate)"))
        if test is not None and test.rows():
            if not tables:
                tables.append({"missing": NO_VALIDATION})
            tables.append(_metrics_table(test, "test"))
        cost = metrics.backbone
        backbone = None
        if cost is not None and cost.ms_per_image is not None:
            backbone = {
                "name": cost.name,
                "dim": cost.dim,
                "fallback": cost.fallback,
                "ms_per_image": str(cost.ms_per_image),
            }
        if not tables and backbone is None:
            return "—"
        context = {"tables": tables, "backbone": backbone}
        return render_to_string("admin/shop/modelversion/metrics_tables.html", context)

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

        def cell(value: float | None) -> str:
            return "—" if value is None else f"{value:.4f}"

        rows = [
            (row.get("epoch"), cell(row.get("loss")), cell(row.get("val_top1")), cell(row.get("val_top20")))
            for row in obj.history
        ]
        return render_to_string("admin/shop/modelversion/history_table.html", {"rows": rows})
