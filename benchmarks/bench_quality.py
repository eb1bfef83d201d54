"""Retrieval quality of the raw backbone and of trained towers on generated street-to-shop sets.

Not a test: prints top-1/5/10/20 on the test products (never seen in training) for each
dataset seed and training variant, plus the validation top-20 the shop's gate uses.

    python benchmarks/bench_quality.py --products 300 --seeds 7 8

Features are extracted once per dataset (the slow part: ~0.2 s per image on 2 cores) and
cached under var/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shop import demodata, street2shop  # noqa: E402  (Django-free modules)
from similarity.evaluation import top_k_accuracy  # noqa: E402
from similarity.images import crop_box, open_image  # noqa: E402

VARIANTS = {
    # epochs=0: the residual tower's start, i.e. centred principal directions of the features.
    "principal directions only (untrained)": dict(architecture="residual", epochs=0),
    "mlp contrastive (seed design)": dict(architecture="mlp", epochs=20, patience=0),
    "residual contrastive": dict(architecture="residual", weight_decay=1e-4, epochs=30, patience=6),
    "residual contrastive + hard negatives": dict(
        architecture="residual", weight_decay=1e-4, epochs=30, patience=6, hard_negative_share=0.5
    ),
    "residual triplet + hard negatives": dict(
        architecture="residual",
        weight_decay=1e-4,
        epochs=30,
        patience=6,
        hard_negative_share=0.5,
        loss="triplet",
        margin=0.3,
    ),
}


def dataset_features(root: Path, *, products: int, seed: int, backbone_name: str, store: Path) -> dict:
    """Street-crop and shop-photo features of one generated dataset, cached as .npz."""
    cache = REPO / "var" / "bench" / f"features-{backbone_name}-{products}-s{seed}.npz"
    if cache.exists():
        return dict(np.load(cache, allow_pickle=False))
    from similarity.backbone import load_backbone

    if not (root / "meta" / "json" / "train_pairs_dresses.json").exists():
        demodata.generate_dataset(root, n_products=products, seed=seed, workers=2)
    files = street2shop.category_files(root, "dresses")
    backbone = load_backbone(backbone_name, weights="random", store_dir=store)
    crops, labels, splits = [], [], []
    for split, path in (("train", files.train_pairs), ("test", files.test_pairs)):
        for pair in street2shop.load_pairs(path).pairs:
            image = open_image(street2shop.photo_path(root, pair.photo_id))
            crops.append(crop_box(image, pair.bbox))
            labels.append(pair.product_id)
            splits.append(split)
    shops, shop_labels = [], []
    for product, photo_ids in street2shop.load_retrieval(files.retrieval).items():
        for photo_id in photo_ids:
            shops.append(open_image(street2shop.photo_path(root, photo_id)))
            shop_labels.append(product)
    started = time.perf_counter()
    street = backbone.extract_images(crops, batch_size=16)
    shop = backbone.extract_images(shops, batch_size=16)
    seconds = time.perf_counter() - started
    print(
        f"  extracted {len(crops) + len(shops)} images in {seconds:.0f} s "
        f"({(len(crops) + len(shops)) / seconds:.1f} images/s) with {backbone.weights_id}"
    )
    data = {
        "street": street,
        "street_labels": np.array(labels),
        "split": np.array(splits),
        "shop": shop,
        "shop_labels": np.array(shop_labels),
        "weights_id": np.array(backbone.weights_id),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    return data


def run(data: dict, variant: dict, *, seed: int) -> tuple[dict, dict, int | None]:
    from similarity.siamese import TrainConfig, ValidationSet, embed, train_siamese

    train = data["split"] == "train"
    train_products = np.unique(data["street_labels"][train])
    rng = np.random.default_rng(seed)
    held = set(rng.choice(train_products, size=max(1, round(len(train_products) * 0.15)), replace=False).tolist())
    fit_products = set(train_products.tolist()) - held
    fit = train & np.isin(data["street_labels"], list(fit_products))
    val = train & np.isin(data["street_labels"], list(held))
    shop_fit = np.isin(data["shop_labels"], list(fit_products))
    shop_val = np.isin(data["shop_labels"], list(fit_products | held))
    validation = ValidationSet(
        data["street"][val], data["street_labels"][val], data["shop"][shop_val], data["shop_labels"][shop_val]
    )
    config = TrainConfig(**variant, seed=seed)
    result = train_siamese(
        data["street"][fit],
        data["street_labels"][fit],
        data["shop"][shop_fit],
        data["shop_labels"][shop_fit],
        config,
        validation=validation,
    )
    test = data["split"] == "test"
    scores = top_k_accuracy(
        embed(result.tower, data["street"][test]),
        data["street_labels"][test],
        embed(result.tower, data["shop"]),
        data["shop_labels"],
        metric="euclidean",
    )
    best = [row for row in result.history if row["epoch"] == result.best_epoch][0]
    return scores, best, result.best_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--backbone", default="vgg19-fc2")
    parser.add_argument("--store", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--variants", nargs="*", help="names from VARIANTS (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    keys = ("top1", "top5", "top10", "top20")
    report = []
    for seed in args.seeds:
        root = REPO / "var" / "bench" / f"demo-{args.products}-s{seed}"
        print(f"dataset: {args.products} products, seed {seed}")
        data = dataset_features(root, products=args.products, seed=seed, backbone_name=args.backbone, store=args.store)
        test = data["split"] == "test"
        print(
            f"  {int((data['split'] == 'train').sum())} train crops, {int(test.sum())} test queries, "
            f"{len(np.unique(data['shop_labels']))} products in the gallery; weights {data['weights_id']}"
        )
        baseline = top_k_accuracy(
            data["street"][test], data["street_labels"][test], data["shop"], data["shop_labels"], metric="cosine"
        )
        print(f"  {'method':<40}" + "".join(f"{k:>7}" for k in keys) + "  val-top20  best-epoch   Δtop20")
        print(f"  {'baseline (raw features, cosine)':<40}" + "".join(f"{baseline[k]:>7.3f}" for k in keys))
        row = {"seed": seed, "products": args.products, "baseline": baseline}
        for name, variant in VARIANTS.items():
            if args.variants and name not in args.variants:
                continue
            started = time.perf_counter()
            scores, best, epoch = run(data, variant, seed=seed)
            delta = scores["top20"] - baseline["top20"]
            print(
                f"  {name:<40}"
                + "".join(f"{scores[k]:>7.3f}" for k in keys)
                + f"  {best['val_top20']:>9.3f}  {epoch!s:>10}  {delta:+7.3f}  ({time.perf_counter() - started:.0f} s)"
            )
            row[name] = {**{k: scores[k] for k in keys}, "val_top20": best["val_top20"], "best_epoch": epoch}
        report.append(row)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
