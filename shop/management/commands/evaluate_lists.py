"""How alike similar lists look, and how well colour refinement works, on the demo catalogue."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from shop.management.versions import chosen_version
from shop.models import Category
from shop.services.list_evaluation import evaluate_lists


class Command(BaseCommand):
    help = (
        "On a demo dataset (its generator knows every product's colours, pattern and cut): the share of each "
        "product's 10 similar items sharing them, the colour weight chosen on validation products, and the colour "
        "refinement's precision and exact-product accuracy."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("dataset", type=Path, help="the demo dataset folder (make_demo_dataset's output)")
        parser.add_argument("--category", default=Category.DRESSES, choices=Category.values)
        parser.add_argument("--model-version", dest="model_version", type=int, help="default: the active one")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(
        self, *args: Any, dataset: Path, category: str, model_version: int | None, as_json: bool, **options: Any
    ) -> None:
        version = chosen_version(category=category, version_id=model_version)
        if version is None:
            raise CommandError(f"no active {category} model: train one first")
        try:
            result = evaluate_lists(root=dataset, category=category, version=version)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if as_json:
            self.stdout.write(json.dumps(result, sort_keys=True))
            return
        self.stdout.write(
            f"{category}, v{version.pk}: {result['products']} products, weight chosen on "
            f"{result['validation_products']} validation products, shown on {result['test_products']} test products"
        )
        self.stdout.write(f"{'10 similar items sharing…':<34}{'colour':>8}{'pattern':>9}{'cut':>7}")
        for name, shares in result["lists"].items():
            self.stdout.write(f"{name:<34}{shares['colour']:>8.1%}{shares['pattern']:>9.1%}{shares['cut']:>7.1%}")
        self.stdout.write(
            f"best min(colour, cut) any list could reach, knowing the true attributes: {result['ceiling']:.1%}"
        )
        refined = result["refined"]
        if refined["mean"] is not None:
            per = ", ".join(f"{c} {s:.0%}" for c, s in sorted(refined["per_colour"].items()))
            self.stdout.write(f"colour chosen: {refined['mean']:.1%} of the 10 shown carry it ({per})")
        street = result["street"]
        if street.get("queries"):
            self.stdout.write(
                f"street photos ({street['queries']}): exact product in top 10 {street['top10']:.1%}, "
                f"with the right colour chosen {street['refined_top10']:.1%}; top 20 {street['top20']:.1%}"
            )
