"""Street2Shop retrieval accuracy of the raw backbone and the active siamese model."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from shop.management.versions import chosen_version
from shop.models import Category, ModelVersion, Split
from shop.services.evaluation import evaluate_category
from similarity.metrics import Gate

KEYS = ("top1", "top5", "top10", "top20")


class Command(BaseCommand):
    help = "Each street crop of the split ranks every product of the category; prints top-1/5/10/20."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--category", default=Category.DRESSES, choices=Category.values)
        parser.add_argument("--split", default=Split.TEST, choices=Split.values)
        parser.add_argument(
            "--model-version", dest="model_version", type=int, help="a model version id (default: the active one)"
        )
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(
        self, *args: Any, category: str, split: str, model_version: int | None, as_json: bool, **options: Any
    ) -> None:
        model = chosen_version(category=category, version_id=model_version)
        try:
            result = evaluate_category(category=category, split=split, version=model)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if as_json:
            self.stdout.write(json.dumps(result, sort_keys=True))
            return
        self.stdout.write(
            f"{category} / {split}: {result['queries']} queries, {result['gallery']} products, "
            f"weights {result['weights_id']}"
        )
        self.stdout.write(f"{'method':<28}" + "".join(f"{k:>8}" for k in KEYS))
        rows = [("baseline (VGG19 fc2, cosine)", result["baseline"])]
        if "siamese" in result:
            rows.append((f"siamese v{result['version']}", result["siamese"]))
        else:
            self.stdout.write("(no active siamese model: train one with `manage.py train_model`)")
        for name, figures in rows:
            self.stdout.write(f"{name:<28}" + "".join(f"{figures[k]:>8.3f}" for k in KEYS))
        if model is not None:
            self._print_recorded(model)

    def _print_recorded(self, model: ModelVersion) -> None:
        """The validation figures and gate recorded when the version was trained, and its backbone's cost."""
        metrics = model.run_metrics
        recorded = metrics.validation
        if recorded is not None:
            gate = metrics.gate or Gate()
            self.stdout.write(
                f"validation (gate, recorded when v{model.pk} was trained): {recorded.queries} queries, "
                f"{recorded.gallery} products"
            )
            names = {
                "baseline": "baseline",
                "previous": f"previous v{metrics.previous_version}",
                "siamese": f"siamese v{model.pk}",
            }
            for key, figures in recorded.rows():
                self.stdout.write(
                    f"{names[key]:<28}" + "".join(f"{value:>8.3f}" for value in figures.figures().values())
                )
            self.stdout.write(
                f"gate: {'passed' if gate.passed else 'refused'}: {gate.reason}"
                + (" (overridden)" if model.gate_overridden else "")
            )
        cost = metrics.backbone
        if cost is not None and cost.ms_per_image is not None:
            self.stdout.write(
                f"backbone {cost.name} ({cost.dim}-d{', random fallback' if cost.fallback else ''}): "
                f"{cost.ms_per_image:.0f} ms per image on this machine"
            )
