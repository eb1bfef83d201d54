"""A study, not a feature: can a product's 10 similar items share its colour and its cut?

Not a test. Reads a demo shop built by `manage.py demo` (the generator knows every product's
main colour, pattern and silhouette) and ranks each product's 10 nearest others by:
the trained tower (the shop's default lists); each detected attribute alone (the colour
descriptor the worker stores, a silhouette profile and a texture descriptor read here off each
product's first shop photo's garment mask); and a ranking that keeps the product's detected main
colour first, then orders by truncated silhouette, texture and tower distances, its settings
chosen on the validation products (best min(colour, cut) that keeps the tower's pattern share)
and shown on the test products. Prints the shares of the 10 sharing colour / pattern / cut.

    DEBUG=true DATA_DIR=/tmp/big python manage.py demo --products 800 --no-serve
    DEBUG=true DATA_DIR=/tmp/big python benchmarks/bench_list_looks.py \
        /tmp/big/demo-dataset-800-320-d0.1-s7 --category dresses
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Scores = dict[str, float]
GRID = {
    "silhouette_quantile": (0.1, 0.2, 0.3),
    "texture_quantile": (0.1, 0.3),
    "silhouette_weight": (1.0, 2.0),
    "texture_weight": (0.3, 0.6, 1.0),
    "tower_weight": (0.2, 0.5),
}


def garment_mask(photo: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    from similarity.colour import garment_weights, srgb_to_lab, work_sample
    from similarity.garment import garment_box

    weights = garment_weights(srgb_to_lab(work_sample(photo)))
    height, width = weights.shape
    return weights > 0.5, garment_box(weights, (width, height))


def silhouette(photo: Image.Image) -> np.ndarray:
    """Widths of the garment mask down its lower 70 %, over its narrowest width in the 20-60 % band (the waist)."""
    mask, (x0, y0, x1, y1) = garment_mask(photo)
    widths = mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].sum(axis=1).astype(np.float64)
    n = len(widths)
    if n < 4:
        return np.zeros(16)
    waist = max(float(widths[int(0.2 * n) : max(int(0.6 * n), int(0.2 * n) + 1)].min()), 1.0)
    return np.interp(np.linspace(0.3 * (n - 1), n - 1, 16), np.arange(n), widths) / waist


def texture(photo: Image.Image) -> np.ndarray:
    """Edge energy, its horizontal/vertical balance, edge densities and colour spread inside the garment."""
    from similarity.colour import srgb_to_lab

    mask, _ = garment_mask(photo)
    lab = srgb_to_lab(np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR)))
    inside = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((224, 224), Image.Resampling.NEAREST)) > 0
    inside = np.asarray(ndimage.binary_erosion(inside, iterations=4))[:-1, :-1]
    if inside.sum() < 50:
        return np.zeros(8)
    across = np.abs(np.diff(lab, axis=1))[:-1].sum(axis=2)[inside]
    down = np.abs(np.diff(lab, axis=0))[:, :-1].sum(axis=2)[inside]
    energy = across + down
    balance = (down.sum() - across.sum()) / max(float(energy.sum()), 1e-6)
    densities = [float(np.mean(energy > t)) for t in (4, 12, 30)]
    spread = np.log1p(lab[:-1, :-1][inside].std(axis=0))
    return np.array([np.log1p(energy.mean()), balance, *densities, *spread])


def standardised(rows: np.ndarray) -> np.ndarray:
    rows = (rows - rows.mean(axis=0)) / (rows.std(axis=0) + 1e-6)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def distances(rows: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return np.asarray(cdist(rows, rows))


def truncated(d: np.ndarray, quantile: float) -> np.ndarray:
    """Distances scaled so the nearest ``quantile`` of pairs lie below 1, and all others at 1 (alike or not)."""
    return np.minimum(d / np.quantile(d, quantile), 1.0)


def shares(score: np.ndarray, labels: Mapping[str, np.ndarray], rows: Sequence[int], k: int = 10) -> Scores:
    found: dict[str, list[float]] = {name: [] for name in labels}
    for row in rows:
        order = score[row].copy()
        order[row] = np.inf
        nearest = np.argsort(order, kind="stable")[:k]
        for name, column in labels.items():
            found[name].append(float(np.mean(column[nearest] == column[row])))
    return {name: float(np.mean(values)) for name, values in found.items()}


def line(name: str, scores: Scores) -> str:
    return f"{name:44s} {scores['colour']:7.1%} {scores['pattern']:8.1%} {scores['cut']:6.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--category", default="dresses")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()
    from shop import runtime, selectors
    from shop.models import Product, ProductImage
    from shop.services import colours
    from shop.services.indexing import product_feature_matrix
    from shop.services.list_evaluation import _RGB, _split_rows, _truth, _unit
    from similarity.colour import name_colour
    from similarity.embedding import embed

    version = selectors.active_version(category=args.category)
    if version is None:
        raise SystemExit(f"no active {args.category} model: run manage.py demo first")
    truth = _truth(args.dataset, args.category)
    ids, stacks = product_feature_matrix(product_ids=sorted(truth), weights_id=version.weights_id)
    tower = runtime.tower_for(version)
    rows = _split_rows(ids, category=args.category, seed=int(version.hyperparameters.get("seed", 0)))
    labels = {
        "colour": np.array([name_colour(_RGB[truth[p]["colour"]]) for p in ids], dtype=object),
        "pattern": np.array([truth[p]["pattern"] for p in ids], dtype=object),
        "cut": np.array([truth[p]["silhouette"] for p in ids], dtype=object),
    }
    first_photos = {}
    for image in ProductImage.objects.filter(product_id__in=ids).order_by("product_id", "position", "id"):
        first_photos.setdefault(image.product_id, image)
    cuts, textures = [], []
    for product_id in ids:
        with first_photos[product_id].image.open("rb") as handle, Image.open(handle) as photo:
            rgb = photo.convert("RGB")
            cuts.append(silhouette(rgb))
            textures.append(texture(rgb))
    detected = np.array([(p.colours or ["?"])[0] for p in Product.objects.filter(pk__in=ids).order_by("id")])
    d = {
        "tower": distances(_unit(np.stack([embed(tower, stack).mean(axis=0) for stack in stacks]))),
        "colour descriptor": distances(colours.colour_descriptors(product_ids=ids)),
        "silhouette": distances(_unit(np.stack(cuts) - np.mean(cuts, axis=0))),
        "texture": distances(standardised(np.stack(textures))),
    }
    other_colour = (detected[:, None] != detected[None, :]).astype(np.float64)

    def ranked(p: Mapping[str, float]) -> np.ndarray:
        return (
            10 * other_colour
            + p["silhouette_weight"] * truncated(d["silhouette"], p["silhouette_quantile"])
            + p["texture_weight"] * truncated(d["texture"], p["texture_quantile"])
            + p["tower_weight"] * d["tower"] / d["tower"].max()
        )

    validation, test = rows["validation"], rows["test"]
    floor = shares(d["tower"], labels, validation)["pattern"]
    tried = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    scored = [(p, shares(ranked(p), labels, validation)) for p in tried]
    allowed = [(p, s) for p, s in scored if s["pattern"] >= floor] or scored
    chosen, _ = max(allowed, key=lambda ps: min(ps[1]["colour"], ps[1]["cut"]))
    print(f"{args.category}: {len(ids)} products, {len(validation)} validation, {len(test)} test")
    print(f"detected main colour is the true one for {np.mean(detected == labels['colour']):.1%} of products")
    print(f"{'10 nearest by (test products)':44s}  colour  pattern    cut")
    for name, matrix in d.items():
        print(line(name + (" (the default lists)" if name == "tower" else " alone"), shares(matrix, labels, test)))
    print(line("detected main colour, then cut/texture/tower", shares(ranked(chosen), labels, test)))
    print(f"chosen on validation: {chosen}")


if __name__ == "__main__":
    main()
