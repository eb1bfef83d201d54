"""Catalogue, features, model versions and ranked recommendations."""

from __future__ import annotations

import uuid

import numpy as np
from django.conf import settings
from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models import Q

from similarity.metrics import RunMetrics

# How a stored vector's bytes are laid out; a Feature row records which one it uses.
VECTOR_DTYPES = {"float32": np.float32, "float16": np.float16}


def vector_to_bytes(vector: np.ndarray, dtype: str = "float32") -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPES[dtype]).tobytes()


def vector_from_bytes(blob: bytes | memoryview, dtype: str = "float32") -> np.ndarray:
    """The stored vector as float32, whatever it is stored as."""
    vector = np.frombuffer(blob, dtype=VECTOR_DTYPES[dtype])
    return vector.astype(np.float32) if dtype != "float32" else vector


class Category(models.TextChoices):
    DRESSES = "dresses", "Dresses"
    SKIRTS = "skirts", "Skirts"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test"


class Product(models.Model):
    title = models.CharField(max_length=200)
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.DRESSES)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    description = models.TextField(blank=True)
    # Street2Shop ids repeat across categories (533 ids are both a dress and a skirt).
    s2s_product_id = models.PositiveBigIntegerField("Street2Shop product id", null=True, blank=True)
    # The garment's colours, read by the worker from its first shop photo (similarity.colour):
    # names dominant first, a bit per palette name for filtering, and the descriptor vector.
    colours = models.JSONField(default=list, blank=True, editable=False)
    colour_mask = models.PositiveIntegerField(default=0, editable=False)
    colour_descriptor = models.BinaryField(null=True, blank=True, editable=False)
    # Listings of one garment (near-identical shop photos) share the smallest product id among
    # them; null for a product listed once. Lists show one member of a group.
    duplicate_group = models.PositiveBigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["category", "id"]),
            models.Index(fields=["duplicate_group"], name="product_duplicate_group"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["category", "s2s_product_id"], name="unique_category_s2s_product"),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("product-detail", args=[self.pk])


class ProductImage(models.Model):
    """A shop photo of a product, stored whole."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    image = models.ImageField(upload_to="products/")
    # Small JPEGs for grids (320 px, and 640 px for 2x screens: the cards' srcset) and the product
    # page (640 px), made by the worker that reads the photo anyway.
    thumbnail = models.ImageField(upload_to="thumbnails/", blank=True)
    thumbnail_large = models.ImageField(upload_to="thumbnails/", blank=True)
    s2s_photo_id = models.PositiveBigIntegerField("Street2Shop photo id", null=True, blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    # Made by the worker that reads the photo (similarity.garment): the garment's signature, which
    # finds other listings of the same photo (float16), and its colours (GarmentColours.to_json).
    signature = models.BinaryField(null=True, blank=True, editable=False)
    colours = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["product_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "s2s_photo_id"], name="unique_product_photo"),
        ]

    def __str__(self) -> str:
        return f"{self.product} #{self.position}"


class StreetPhoto(models.Model):
    """One garment boxed in a street photo; a photo with several boxes gives several rows."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="street_photos")
    image = models.ImageField(upload_to="street/")
    s2s_photo_id = models.PositiveBigIntegerField("Street2Shop photo id", null=True, blank=True)
    bbox_left = models.PositiveIntegerField()
    bbox_top = models.PositiveIntegerField()
    bbox_width = models.PositiveIntegerField()
    bbox_height = models.PositiveIntegerField()
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TRAIN)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["s2s_photo_id", "product"], name="unique_street_photo_product"),
            models.CheckConstraint(
                condition=Q(bbox_width__gt=0) & Q(bbox_height__gt=0), name="street_photo_bbox_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"street photo {self.s2s_photo_id or self.pk} of {self.product_id}"

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.bbox_left, self.bbox_top, self.bbox_width, self.bbox_height)


class Feature(models.Model):
    """A backbone vector of one image, tagged with the backbone and weights that made it."""

    product_image = models.ForeignKey(
        ProductImage, on_delete=models.CASCADE, null=True, blank=True, related_name="features"
    )
    street_photo = models.ForeignKey(
        StreetPhoto, on_delete=models.CASCADE, null=True, blank=True, related_name="features"
    )
    weights_id = models.CharField(max_length=120, db_index=True)
    vector = models.BinaryField()
    # float16 halves the bulk of the table (4096-d fc2: 8 KB instead of 16 KB) at no loss of top-k.
    dtype = models.CharField(max_length=8, default="float32", choices=[(d, d) for d in VECTOR_DTYPES])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product_image", "weights_id"], name="unique_product_image_feature"),
            models.UniqueConstraint(fields=["street_photo", "weights_id"], name="unique_street_photo_feature"),
            models.CheckConstraint(
                condition=(Q(product_image__isnull=False) & Q(street_photo__isnull=True))
                | (Q(product_image__isnull=True) & Q(street_photo__isnull=False)),
                name="feature_has_one_image",
            ),
        ]

    def as_array(self) -> np.ndarray:
        return vector_from_bytes(self.vector, self.dtype)


class ModelVersionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    EMBEDDING = "embedding", "Embedding"
    READY = "ready", "Ready"
    ACTIVE = "active", "Active"
    FAILED = "failed", "Failed"


# A run still going: the single-flight constraint and every query for running versions use this one list.
RUNNING_STATUSES = (
    ModelVersionStatus.QUEUED,
    ModelVersionStatus.TRAINING,
    ModelVersionStatus.EVALUATING,
    ModelVersionStatus.EMBEDDING,
)


class ModelVersion(models.Model):
    """One training run of the siamese network and the artifact it produced."""

    Status = ModelVersionStatus

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.DRESSES)
    weights_id = models.CharField(max_length=120, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    dataset_counts = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True, help_text="Per-epoch losses and validation metrics.")
    metrics = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    # The tower's name in the "models" storage (a folder or a bucket) and its sha256, checked by
    # every host that copies it (similarity.artifacts).
    artifact_name = models.CharField(max_length=500, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    gate_overridden = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # Every progress write touches it: a running version whose heartbeat stops had its worker die.
    updated_at = models.DateTimeField(auto_now=True)
    # Bumped whenever products leave this version's lists (deleted, re-embedded): processes that
    # cache the lists' k-th distances reload them when it changes (see recommendations).
    lists_revision = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("start_training", "Can start a training run"),
            ("activate_version", "Can activate or roll back a model version"),
            ("override_gate", "Can activate a version the quality gate refused"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["category"], condition=Q(status="active"), name="one_active_version_per_category"
            ),
            # Single flight enforced by the database, not by a check-then-insert race.
            models.UniqueConstraint(
                fields=["category"],
                # A list of the values, as the migration recorded it.
                condition=Q(status__in=[str(status) for status in RUNNING_STATUSES]),
                name="one_running_version_per_category",
            ),
        ]

    def __str__(self) -> str:
        return f"v{self.pk} ({self.get_status_display()})"

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def run_metrics(self) -> RunMetrics:
        """The metrics JSON in its declared shape (similarity.metrics): the one way to read it."""
        return RunMetrics.from_json(self.metrics)

    @property
    def needs_override(self) -> bool:
        """Going live takes a recorded override: the gate refused it (or never judged it) and it never
        served. A version that was live before is a rollback and needs none."""
        gate = self.run_metrics.gate
        return (gate is None or not gate.passed) and self.activated_at is None


class ProductEmbedding(models.Model):
    """A product's siamese embedding under one model version."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="embeddings")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="embeddings")
    vector = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "version"], name="unique_product_embedding")]

    def as_array(self) -> np.ndarray:
        return vector_from_bytes(self.vector)


class SimilarProduct(models.Model):
    """A ranked recommendation row: `recommendation` is the `ranking`-th nearest to `product`.

    Derived data, rewritten by the thousand: a rebuild writes ten rows per product. So no
    database foreign keys (their checks cost PostgreSQL 20 of the 30 s of writing 1e6 rows)
    and no second unique index; Django still deletes the rows of a deleted product or version
    (on_delete), and the writers check that every product they reference still exists.
    """

    # No index of its own: the (version, product, ranking) constraint's index starts with it.
    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="similar_rows", db_constraint=False)
    recommendation = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    ranking = models.PositiveSmallIntegerField()
    distance = models.FloatField()

    class Meta:
        ordering = ["ranking"]
        constraints = [
            models.UniqueConstraint(fields=["version", "product", "ranking"], name="unique_similar_ranking"),
        ]


def search_storage() -> Storage:
    """Where shoppers' photos live: STORAGES["searches"], outside MEDIA_ROOT and never served by URL."""
    return storages["searches"]


class SearchQuery(models.Model):
    """A shopper's uploaded photo and the products found for it.

    `image` is the upload as sent until the worker replaces it with a re-encoded copy without
    metadata (`photo_ready`); only that copy is ever shown, and only to the session that searched.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Searching"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.DRESSES)
    image = models.ImageField(upload_to="%Y/%m/%d/", storage=search_storage)
    photo_ready = models.BooleanField(default=False)
    # The upload's upright size from its header, so the searched box can be drawn over any copy.
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    bbox_left = models.PositiveIntegerField(null=True, blank=True)
    bbox_top = models.PositiveIntegerField(null=True, blank=True)
    bbox_width = models.PositiveIntegerField(null=True, blank=True)
    bbox_height = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    version = models.ForeignKey(ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    results = models.JSONField(default=list, blank=True, help_text="[{product_id, distance}] nearest first.")
    # The photo's vector in the version's index space: a colour refinement ranks it again on request.
    vector = models.BinaryField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When a worker took it: finished_at - started_at is the worker's own time, the rest is waiting.
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "search queries"
        # The busy check counts pending searches; the purge deletes old ones.
        indexes = [models.Index(fields=["status", "created_at"], name="search_status_created")]

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        if self.bbox_width is None:
            return None
        return (self.bbox_left or 0, self.bbox_top or 0, self.bbox_width, self.bbox_height or 0)


class PhotoDownload(models.Model):
    """The last download attempt of one Street2Shop photo, so a rerun skips what failed before."""

    class Outcome(models.TextChoices):
        # The outcomes of shop.downloads, plus photos.txt having no URL for the photo at all.
        OK = "ok", "OK"
        HTTP_ERROR = "http_error", "HTTP error"
        TIMEOUT = "timeout", "Timeout"
        CONNECTION_ERROR = "connection_error", "Connection error"
        TOO_LARGE = "too_large", "Too large"
        NOT_AN_IMAGE = "not_an_image", "Not an image"
        TRUNCATED = "truncated", "Truncated"
        TOO_MANY_REDIRECTS = "too_many_redirects", "Too many redirects"
        INVALID_URL = "invalid_url", "Invalid URL"
        REFUSED_ADDRESS = "refused_address", "Refused: not a public address"
        NOT_LISTED = "not_listed", "Not in photos.txt"

    # Photo ids are global across categories: one street photo can show a dress and a skirt.
    photo_id = models.PositiveBigIntegerField("Street2Shop photo id", unique=True)
    url = models.TextField(blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, db_index=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Requests made by the last run.")
    error = models.TextField(blank=True)
    bytes = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["photo_id"]

    def __str__(self) -> str:
        return f"photo {self.photo_id}: {self.outcome}"
