"""Street2Shop retrieval accuracy of the raw backbone and the active siamese model."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from shop import selectors
from shop.models import Category, ModelVersion, Split
from shop.services.evaluation import evaluate_category

KEYS = ("top1", "top5", "top10", "top20")


class Command(BaseCommand):
    help = "Each street crop of the split ranks every product of the category; prints top-1/5/10/20."

    def add_arguments(self, parser):
        parser.add_argument("--category", default=Category.DRESSES, choices=Category.values)
        parser.add_argument("--split", default=Split.TEST, choices=Split.values)
        parser.add_argument(
            "--model-version", dest="model_version", type=int, help="a model version id (default: the active one)"
        )
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, category: str, split: str, model_version: int | None, as_json: bool, **options):
        model = (
            ModelVersion.objects.filter(pk=model_version).first()
            if model_version
            else selectors.active_version(category=category)
        )
        if model_version and model is None:
            raise CommandError(f"no model version {model_version}")
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
        recorded = (model.metrics or {}).get("validation") if model else None
        if recorded:
            gate = model.metrics.get("gate", {})
            self.stdout.write(
                f"validation (gate, recorded when v{model.pk} was trained): {recorded['queries']} queries, "
                f"{recorded['gallery']} products"
            )
            names = {
                "baseline": "baseline",
                "previous": f"previous v{model.metrics.get('previous_version')}",
                "siamese": f"siamese v{model.pk}",
            }
            for key, name in names.items():
                if key in recorded:
                    self.stdout.write(f"{name:<28}" + "".join(f"{recorded[key][k]:>8.3f}" for k in KEYS))
            self.stdout.write(
                f"gate: {'passed' if gate.get('passed') else 'refused'}: {gate.get('reason', '')}"
                + (" (overridden)" if model.gate_overridden else "")
            )
        cost = (model.metrics or {}).get("backbone", {}) if model else {}
        if "ms_per_image" in cost:
            self.stdout.write(
                f"backbone {cost['name']} ({cost['dim']}-d{', random fallback' if cost.get('fallback') else ''}): "
                f"{cost['ms_per_image']:.0f} ms per image on this machine"
            )
