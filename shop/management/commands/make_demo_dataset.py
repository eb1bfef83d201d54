"""Write the synthetic demo catalogue (Street2Shop layout) to a directory."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.management.progress import Unbuffered
from shop.street2shop.demo.dataset import Summary, generate_dataset
from shop.street2shop.demo.plan import DemoDatasetError
from shop.street2shop.progress import ProgressPrinter


class Command(BaseCommand):
    help = (
        "Generate the deterministic synthetic dress (and skirt) dataset in Street2Shop's layout (photos/, "
        "photos.txt, meta/json/). Files are overwritten one by one; a non-empty directory that is not an earlier "
        "demo dataset is refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
        parser.add_argument("--products", type=int, default=160, help="number of dresses (default 160)")
        parser.add_argument("--skirts", type=int, default=0, help="number of skirts, in the same folder (default 0)")
        parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
        parser.add_argument(
            "--street-per-product", type=int, default=3, help="street photos per product (default 3, at least 2)"
        )
        parser.add_argument(
            "--duplicates",
            type=float,
            default=0.0,
            metavar="FRACTION",
            help="share of each category listed again under new ids, shop photos re-saved (0 to below 1; default 0)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="processes to draw with; the files are the same for any number (default: CPUs, at most 4)",
        )

    def handle(self, *args: object, **options: object) -> None:
        out_dir: Path = options["out_dir"]  # type: ignore[assignment]
        products: int = options["products"]  # type: ignore[assignment]
        skirts: int = options["skirts"]  # type: ignore[assignment]
        per_product: int = options["street_per_product"]  # type: ignore[assignment]
        duplicates: float = options["duplicates"]  # type: ignore[assignment]
        check_options(products=products, skirts=skirts, per_product=per_product, duplicates=duplicates)
        if options["seed"] < 0:  # type: ignore[operator]
            raise CommandError("--seed must not be negative")
        verbosity: int = options["verbosity"]  # type: ignore[assignment]
        # The photo count is known once drawing starts: update() sets it.
        printer = ProgressPrinter(0, unit="photos", stream=Unbuffered(self.stdout)) if verbosity >= 2 else None
        try:
            summary = generate_dataset(
                out_dir,
                n_products=products,
                n_skirts=skirts,
                seed=options["seed"],  # type: ignore[arg-type]
                street_per_product=per_product,
                duplicates=duplicates,
                workers=options["workers"],  # type: ignore[arg-type]
                on_progress=printer.update if printer is not None else None,
            )
        except DemoDatasetError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if printer is not None and printer.done:
                printer.close()
        self.stdout.write(self.style.SUCCESS(describe(summary)))


def check_options(*, products: int, skirts: int, per_product: int, duplicates: float) -> None:
    if products < 2 and not (products == 0 and skirts >= 2):
        raise CommandError("--products must be at least 2 (train and test products are disjoint), or 0 with --skirts")
    if skirts != 0 and skirts < 2:
        raise CommandError("--skirts must be 0 or at least 2 (train and test products are disjoint)")
    if per_product < 2:
        raise CommandError("--street-per-product must be at least 2")
    if not 0 <= duplicates < 1:
        raise CommandError("--duplicates must be at least 0 and below 1")


def describe(summary: Summary) -> str:
    counts = [f"{n} {name}" for n, name in ((summary.products, "dresses"), (summary.skirts, "skirts")) if n]
    copies = f" plus {summary.duplicates} relisted copies" if summary.duplicates else ""
    return (
        f"Wrote {summary.products + summary.skirts} products ({', '.join(counts)}, {summary.families} families)"
        f"{copies}: {summary.shop_photos} shop and {summary.street_photos} street photos, "
        f"{summary.train_pairs} train and {summary.test_pairs} test pairs, "
        f"seed {summary.seed}, in {summary.seconds:.1f} s to {summary.out_dir}"
    )
