"""Seed products, shop images and street photos from a folder in Street2Shop layout."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.models import Category
from shop.services.seeding import MetadataError, SeedingError, SeedReport, seed_street2shop

# Enough to see what went wrong without burying the summary under 10,000 missing photos.
SHOW_SKIPPED = 20


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Create the catalogue from Street2Shop metadata and the photos present under ROOT/photos/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--root", type=Path, required=True, help="Dataset folder holding meta/json/ and photos/.")
        parser.add_argument("--category", choices=Category.values, default=Category.DRESSES)
        parser.add_argument("--limit", type=positive_int, default=None, help="Seed at most N products.")
        # Issue 3 adds --download/--workers/--retry-failed here.

    def handle(self, *args, root: Path, category: str, limit: int | None, verbosity: int, **options) -> None:
        try:
            report = seed_street2shop(
                root=root, category=category, limit=limit, stdout=self.stdout if verbosity > 0 else None
            )
        except (MetadataError, SeedingError) as error:
            raise CommandError(str(error)) from error
        self.print_report(report, verbose=verbosity > 1)

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
