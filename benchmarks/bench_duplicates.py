"""Choosing the near-duplicate thresholds on data: relisted copies against distinct products.

Not a test. Generates a demo dataset with relisted copies (re-encoded, resized, re-cropped shop
photos under new product ids), reads each product's first shop photo the way the worker does
(perceptual hash + colour descriptor), groups with each candidate rule and counts, per category:
true copies grouped with their original, and distinct products wrongly grouped together.

    python benchmarks/bench_duplicates.py --products 400 --skirts 160 --duplicates 0.15
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shop.street2shop import metadata as street2shop  # noqa: E402  (Django-free modules)
from shop.street2shop.demo.dataset import CATEGORIES, generate_dataset  # noqa: E402
from similarity.colour import garment_colours  # noqa: E402
from similarity.duplicates import DuplicateRule, group_labels  # noqa: E402
from similarity.images import open_image  # noqa: E402
from similarity.photohash import perceptual_hash  # noqa: E402

HAMMING = (4, 6, 8, 10, 12, 14, 16)
COLOUR = (0.2, 0.35, 0.5, 0.8, 2.0)


def _first_photos(root: Path, category: str) -> tuple[list[int], dict[int, int], np.ndarray, np.ndarray]:
    """(product ids, copy -> original, hashes, colour descriptors) of a category's first shop photos."""
    retrieval = street2shop.load_retrieval(root / "meta" / "json" / f"retrieval_{category}.json")
    demo = street2shop.load_demo_products(root, category)
    ids = sorted(retrieval)
    hashes, descriptors = [], []
    for product in ids:
        photo = min(retrieval[product])
        with (root / "photos" / street2shop.photo_filename(photo)).open("rb") as handle:
            image = open_image(io.BytesIO(handle.read()), max_pixels=50_000_000, upright=True)
        hashes.append(perceptual_hash(image))
        descriptors.append(garment_colours(image).descriptor)
    copies = {p: demo[p].duplicate_of for p in ids if demo[p].duplicate_of is not None}
    return ids, copies, np.array(hashes, dtype=np.int64), np.stack(descriptors)


def _score(ids: list[int], copies: dict[int, int], labels: list[int | None]) -> tuple[int, int, int]:
    """(copies grouped with their original, copies in all, distinct products wrongly grouped)."""
    label_of = dict(zip(ids, labels))
    grouped = sum(
        1 for copy, original in copies.items() if label_of[copy] is not None and label_of[copy] == label_of[original]
    )
    garment = {p: copies.get(p, p) for p in ids}
    members: dict[int, set[int]] = {}
    for p, label in label_of.items():
        if label is not None:
            members.setdefault(label, set()).add(garment[p])
    # Each group should hold one garment; every garment beyond the group's largest is wrongly grouped.
    wrong = sum(len(garments) - 1 for garments in members.values())
    return grouped, len(copies), wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=400)
    parser.add_argument("--skirts", type=int, default=160)
    parser.add_argument("--duplicates", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        generate_dataset(
            root, n_products=args.products, n_skirts=args.skirts, duplicates=args.duplicates, seed=args.seed, workers=2
        )
        print(f"generated in {time.perf_counter() - started:.0f} s (seed {args.seed})")
        for category in CATEGORIES:
            ids, copies, hashes, descriptors = _first_photos(root, category)
            originals = {p: copies.get(p, p) for p in ids}
            distances = [
                bin((int(hashes[ids.index(c)]) ^ int(hashes[ids.index(o)])) & (2**64 - 1)).count("1")
                for c, o in copies.items()
            ]
            print(
                f"\n{category}: {len(ids)} listings, {len(copies)} copies of {len(set(copies.values()))} originals; "
                f"copy-to-original hash distance median {np.median(distances):.0f}, p95 {np.percentile(distances, 95):.0f}, max {max(distances)}"
            )
            print(f"{'max bits':>9}{'max colour':>11}{'copies grouped':>16}{'wrongly grouped':>17}")
            for bits in HAMMING:
                for colour in COLOUR:
                    labels = group_labels(ids, hashes, descriptors, DuplicateRule(bits, colour))
                    grouped, total, wrong = _score(ids, copies, labels)
                    print(f"{bits:>9}{colour:>11.2f}{grouped:>9}/{total:<6}{wrong:>17}")
            del originals


if __name__ == "__main__":
    main()
