"""Seed products, shop images and street photos from a folder in Street2Shop layout."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.management.progress import Unbuffered
from shop.models import Category
from shop.services.photo_downloads import (
    DownloadSeedReport,
    default_failures_csv,
    download_and_seed,
    download_config,
    write_failures,
)
from shop.services.seeding import MetadataError, SeedingError, SeedReport, seed_street2shop
from shop.street2shop.download import DownloadDirBusy
from shop.street2shop.jobs import OUTCOMES

# Enough to see what went wrong without burying the summary under 10,000 missing photos.
SHOW_SKIPPED = 20


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Create the catalogue from Street2Shop metadata and the photos under ROOT/photos/; with --download, "
        "first fetch the photos the category lacks from ROOT/photos.txt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--root", type=Path, required=True, help="Dataset folder holding meta/json/ and photos/.")
        parser.add_argument("--category", choices=Category.values, default=Category.DRESSES)
        parser.add_argument(
            "--limit",
            type=positive_int,
            default=None,
            help="Seed at most N products; with --download, go on until N products exist or none are left.",
        )
        parser.add_argument(
            "--download",
            action="store_true",
            help="Fetch the category's missing photos from ROOT/photos.txt, seeding products as they arrive.",
        )
        parser.add_argument(
            "--workers", type=positive_int, default=None, help="Parallel downloads (default: DOWNLOAD_WORKERS)."
        )
        parser.add_argument(
            "--retry-failed", action="store_true", help="Request again the photos whose last download failed."
        )
        parser.add_argument(
            "--failures-csv",
            type=Path,
            default=None,
            help="Where to list the photos that could not be used (default: DATA_DIR/street2shop/failures-CATEGORY.csv).",
        )
        parser.add_argument("--quiet", action="store_true", help="Print only the summary (for CI).")

    def handle(
        self,
        *args,
        root: Path,
        category: str,
        limit: int | None,
        download: bool,
        workers: int | None,
        retry_failed: bool,
        failures_csv: Path | None,
        quiet: bool,
        verbosity: int,
        **options,
    ) -> None:
        if not download and (workers is not None or retry_failed or failures_csv is not None):
            raise CommandError("--workers, --retry-failed and --failures-csv only apply with --download.")
        try:
            if download:
                result = download_and_seed(
                    root=root,
                    category=category,
                    limit=limit,
                    config=download_config(workers=workers),
                    retry_failed=retry_failed,
                    progress=Unbuffered(self.stdout) if verbosity > 0 else None,
                    quiet=quiet,
                )
            else:
                report = seed_street2shop(
                    root=root,
                    category=category,
                    limit=limit,
                    stdout=None if quiet or verbosity == 0 else Unbuffered(self.stdout),
                )
        except (MetadataError, SeedingError, DownloadDirBusy) as error:
            raise CommandError(str(error)) from error
        if not download:
            self.print_report(report, verbose=verbosity > 1)
            return
        self.print_downloads(result)
        self.print_report(result.seed, verbose=verbosity > 1)
        path = failures_csv or default_failures_csv(category=category)
        rows = write_failures(failures=result.failures, path=path)
        self.stdout.write(f"{rows:,} photos that could not be used are listed in {path}")

    def print_downloads(self, result: DownloadSeedReport) -> None:
        failures = [
            (f"failed: {o.replace('_', ' ')}", result.outcomes[o]) for o in OUTCOMES if o not in ("ok", "exists")
        ]
        rows = [
            (f"photos needed by {result.seed.candidates:,} products", result.photos_needed),
            ("already on disk", result.photos_present),
            ("downloaded", result.outcomes["ok"]),
            *failures,
            ("not in photos.txt", result.not_listed),
            ("failed before, not requested again", sum(result.failed_earlier.values())),
            ("requests made", result.requests),
        ]
        width = max(len(label) for label, _ in rows)
        self.stdout.write(self.style.MIGRATE_HEADING(f"Street2Shop {result.category} photos"))
        for label, count in rows:
            self.stdout.write(f"  {label:<{width}}  {count:>7,}")
        if result.downloaded:
            self.stdout.write(
                f"  {result.downloaded:,} photos in {result.download_seconds:.1f} s: "
                f"{result.photos_per_second:.1f} photos/s with {result.workers} workers"
            )
        if result.failed_earlier:
            self.stdout.write("  (--retry-failed requests the photos that failed before again)")

    def print_report(self, report: SeedReport, *, verbose: bool) -> None:
        rows = [
            ("products created", report.products_created),
            ("products already there", report.products_existing),
            ("products skipped", report.products_skipped),
            ("shop photos created", report.shop_photos_created),
            ("street photos created", report.street_photos_created),
            ("boxes clamped to the photo", report.clamped_bbox),
            *((f"skipped: {reason.replace('_', ' ')}", count) for reason, count in report.skipped_counts.items()),
        ]
        width = max(len(label) for label, _ in rows)
        self.stdout.write(self.style.MIGRATE_HEADING(f"Street2Shop {report.category}"))
        if not report.candidates:
            self.stdout.write(self.style.WARNING("  No product has a shop photo in the photos folder yet."))
        for label, count in rows:
            self.stdout.write(f"  {label:<{width}}  {count:>7,}")

        shown = report.skipped if verbose else report.skipped[:SHOW_SKIPPED]
        if shown:
            self.stdout.write(f"Skipped photos ({len(shown)} of {len(report.skipped)}; -v 2 lists all):")
            for item in shown:
                detail = f"  {item.detail}" if item.detail else ""
                self.stdout.write(
                    f"  {item.kind:<6} {item.photo_id:>9}  product {item.product_id:<7} {item.reason}{detail}"
                )
        if report.skipped_products:
            self.stdout.write(f"Skipped products ({len(report.skipped_products)}):")
        for product_id, reason in report.skipped_products[: None if verbose else SHOW_SKIPPED]:
            self.stdout.write(f"  product {product_id}: {reason}")
        if report.queued_product_ids:
            self.stdout.write(self.style.SUCCESS(f"Queued {len(report.queued_product_ids)} products for indexing."))
