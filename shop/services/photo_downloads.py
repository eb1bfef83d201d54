"""Downloading the photos a Street2Shop category needs, seeding each product as soon as its photos are in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from shop import selectors
from shop.models import Category
from shop.services.download_pipeline import Pipeline
from shop.services.download_report import DownloadSeedReport, PhotoFailure, record_photo_downloads
from shop.services.seeding import SeedingError, SeedReport
from shop.services.street2shop_dataset import open_dataset
from shop.street2shop.jobs import DownloadConfig
from shop.street2shop.photos_txt import read_photos_txt
from shop.street2shop.progress import Stream
from shop.street2shop.reports import FAILURE_COLUMNS as DOWNLOAD_FAILURE_COLUMNS
from shop.street2shop.reports import failure_row, write_csv

# Products waiting for a shop photo at once: enough queued work for every worker and host, few
# enough that a product is seeded soon after its turn comes.
WINDOW_PRODUCTS = 100
FAILURE_COLUMNS = (*DOWNLOAD_FAILURE_COLUMNS, "kind", "product_ids", "earlier_run")

__all__ = [
    "DownloadSeedReport",
    "PhotoFailure",
    "default_failures_csv",
    "download_and_seed",
    "download_config",
    "record_photo_downloads",
    "write_failures",
]


def download_config(*, workers: int | None = None) -> DownloadConfig:
    """The downloader's limits from the DOWNLOAD_* settings; ``workers`` overrides DOWNLOAD_WORKERS."""
    return DownloadConfig(
        connect_timeout=settings.DOWNLOAD_CONNECT_TIMEOUT,
        read_timeout=settings.DOWNLOAD_READ_TIMEOUT,
        total_timeout=settings.DOWNLOAD_TOTAL_TIMEOUT,
        retries=settings.DOWNLOAD_RETRIES,
        backoff_base=settings.DOWNLOAD_BACKOFF_BASE,
        backoff_max=settings.DOWNLOAD_BACKOFF_MAX,
        max_bytes=settings.DOWNLOAD_MAX_BYTES,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        workers=workers or settings.DOWNLOAD_WORKERS,
        per_host=settings.DOWNLOAD_PER_HOST,
        allowed_hosts=frozenset(settings.DOWNLOAD_ALLOWED_HOSTS),
    )


def default_failures_csv(*, category: str) -> Path:
    return Path(settings.DATA_DIR) / "street2shop" / f"failures-{category}.csv"


def download_and_seed(
    *,
    root: Path,
    category: str,
    limit: int | None = None,
    config: DownloadConfig | None = None,
    retry_failed: bool = False,
    window: int = WINDOW_PRODUCTS,
    progress: Stream | None = None,
    quiet: bool = False,
) -> DownloadSeedReport:
    """Fetch the photos a category's products lack from root/photos.txt, seeding each product as soon as it can be.

    Products are taken in seeding order, a photo listed in photos.txt counting as available, so
    the order is the same on every run; at most ``window`` of them wait for a shop photo at a time.
    A product is seeded (created and queued for indexing) from its first good shop photo; its
    street photos are fetched only then (no product, no use for them) and, like its other shop
    photos, attached as they arrive. Shop photos are fetched before street photos and earlier
    products before later ones. Photos whose last download failed are not requested again unless ``retry_failed``.
    With ``limit``, products are taken until that many exist or none are left: products whose
    photos failed do not count, and no more products are in progress than could still be needed.
    ``progress`` receives a download line with rate and ETA.
    """
    root = Path(root)
    if category not in Category.values:
        raise SeedingError(f"Unknown category {category!r}; choose one of: {', '.join(Category.values)}.")
    if limit is not None and limit < 0:
        raise SeedingError("The limit must be zero or more.")
    if window < 1:
        raise SeedingError("The window must be at least 1 product.")
    if not root.is_dir():
        raise SeedingError(f"The dataset folder {root} does not exist.")
    photos_txt = root / "photos.txt"
    if not photos_txt.is_file():
        raise SeedingError(f"There is no {photos_txt} to download photos from.")
    (root / "photos").mkdir(exist_ok=True)
    dataset = open_dataset(root=root, category=category)
    config = config or download_config()
    report = DownloadSeedReport(
        category=category, seed=SeedReport(category=category), limit=limit, workers=config.workers
    )
    pipeline = Pipeline(
        dataset=dataset,
        photos=read_photos_txt(photos_txt),
        config=config,
        retry_failed=retry_failed,
        failed_before=selectors.failed_photo_ids(),
        report=report,
        limit=limit,
        window=window,
    )
    pipeline.run(progress=progress, quiet=quiet)
    return report


def write_failures(*, failures: Sequence[PhotoFailure], path: Path) -> int:
    """Write the failures to a CSV; return how many rows.

    ``shop.street2shop.reports.FAILURE_COLUMNS`` come first; the extra ones say which products
    lost the photo, so bad boxes and missing URLs fit the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(failures, key=lambda item: (item.photo_id, item.outcome, item.product_ids))
    rows = (
        [*failure_row(item), item.kind, " ".join(map(str, item.product_ids)), "yes" if item.earlier_run else ""]
        for item in ordered
    )
    return write_csv(path, FAILURE_COLUMNS, rows)
