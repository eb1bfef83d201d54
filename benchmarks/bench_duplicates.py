"""Choosing the near-duplicate threshold on data: relisted copies against distinct products.

Not a test. Generates a demo dataset with relisted copies (re-encoded, resized, re-cropped shop
photos under new product ids), reads every shop photo the way the worker does (similarity.garment: the garment's
box found on the photo, its signature read off the backbone's 224×224 input), groups the listings with each
candidate threshold and counts, per category: copies grouped with their original, and distinct
garments wrongly grouped together (each group holding k garments counts k - 1).

    python benchmarks/bench_duplicates.py --products 300 --skirts 120 --duplicates 0.15
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
from similarity.duplicates import DuplicateRule, group_labels  # noqa: E402
from similarity.garment import read_garment  # noqa: E402
from similarity.images import backbone_input, open_image  # noqa: E402

THRESHOLDS = (2.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0)


def read_category(root: Path, category: str) -> tuple[list[int], dict[int, int], np.ndarray, np.ndarray]:
    """(product ids, copy -> original, photo owners as rows of the ids, photo signatures)."""
    retrieval = street2shop.load_retrieval(root / "meta" / "json" / f"retrieval_{category}.json")
    demo = street2shop.load_demo_products(root, category)
    ids = sorted(retrieval)
    owners, signatures = [], []
    for row, product in enumerate(ids):
        for photo in retrieval[product]:
            data = (root / "photos" / street2shop.photo_filename(photo)).read_bytes()
            image = open_image(io.BytesIO(data), max_pixels=50_000_000, upright=True)
            owners.append(row)
            signatures.append(read_garment(image, backbone_input(image)).signature)
    copies = {p: demo[p].duplicate_of for p in ids if demo[p].duplicate_of is not None}
    return ids, {c: o for c, o in copies.items() if o is not None}, np.array(owners), np.stack(signatures)


def score(ids: list[int], copies: dict[int, int], labels: list[int | None]) -> tuple[int, int]:
    """(copies grouped with their original, distinct garments wrongly grouped)."""
    label_of = dict(zip(ids, labels))
    grouped = sum(1 for c, o in copies.items() if label_of[c] is not None and label_of[c] == label_of[o])
    garments: dict[int, set[int]] = {}
    for product, label in label_of.items():
        if label is not None:
            garments.setdefault(label, set()).add(copies.get(product, product))
    return grouped, sum(len(found) - 1 for found in garments.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--skirts", type=int, default=120)
    parser.add_argument("--duplicates", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        generate_dataset(
            root, n_products=args.products, n_skirts=args.skirts, duplicates=args.duplicates, seed=args.seed
        )
        print(f"generated in {time.perf_counter() - started:.0f} s (seed {args.seed})")
        for category in CATEGORIES:
            ids, copies, owners, signatures = read_category(root, category)
            print(
                f"\n{category}: {len(ids)} listings, {len(copies)} of them copies of {len(set(copies.values()))} originals"
            )
            print(f"{'max distance':>13}{'copies grouped':>16}{'wrongly grouped':>17}")
            for threshold in THRESHOLDS:
                grouped, wrong = score(ids, copies, group_labels(ids, owners, signatures, DuplicateRule(threshold)))
                print(f"{threshold:>13.1f}{grouped:>9}/{len(copies):<6}{wrong:>17}")


if __name__ == "__main__":
    main()
