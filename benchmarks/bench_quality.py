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

from shop.street2shop import metadata as street2shop  # noqa: E402  (Django-free modules)
from shop.street2shop.demo import dataset as demodata  # noqa: E402
from similarity.evaluation import EvaluationData  # noqa: E402
from similarity.images import backbone_input, open_image  # noqa: E402
from similarity.train_config import TrainConfig  # noqa: E402
from similarity.training_data import split_training_data  # noqa: E402

# Each variant is TrainConfig's defaults (the shop's) with these changes.
VARIANTS = {
    # epochs=0: the residual tower's start, i.e. centred principal directions of the features.
    "principal directions only (untrained)": dict(epochs=0),
    "mlp contrastive (seed design)": dict(
        architecture="mlp", epochs=20, patience=0, weight_decay=0.0, hard_negative_share=0.0
    ),
    "residual contrastive": dict(hard_negative_share=0.0),
    "residual contrastive + hard negatives": dict(),  # the shop's default
    "residual triplet + hard negatives": dict(loss="triplet", margin=0.3),
}


def dataset_features(root: Path, *, products: int, seed: int, backbone_name: str, store: Path) -> dict:
    """Street-crop and shop-photo features of one generated dataset, cached as .npz."""
    # "-grid": street crops cut as the shop cuts them (stored pixel grid, then resized to the input).
    cache = REPO / "var" / "bench" / f"features-{backbone_name}-{products}-s{seed}-grid.npz"
    if cache.exists():
        return dict(np.load(cache, allow_pickle=False))
    from similarity.backbone import load_backbone

    if not (root / "meta" / "json" / "train_pairs_dresses.json").exists():
        demodata.generate_dataset(root, n_products=products, seed=seed, workers=2)
    files = street2shop.category_files(root, "dresses")
    backbone = load_backbone(backbone_name, weights="random", store_dir=store)
    crops, labels, splits = [], [], []
    size = backbone.input_size
    for split, path in (("train", files.train_pairs), ("test", files.test_pairs)):
        for pair in street2shop.load_pairs(path).pairs:
            # As the shop's indexing does: boxes are drawn on the stored pixel grid, so no EXIF turn first.
            image = open_image(street2shop.photo_path(root, pair.photo_id), upright=False)
            crops.append(backbone_input(image, bbox=pair.bbox, size=size))
            labels.append(pair.product_id)
            splits.append(split)
    shops, shop_labels = [], []
    for product, photo_ids in street2shop.load_retrieval(files.retrieval).items():
        for photo_id in photo_ids:
            shops.append(backbone_input(open_image(street2shop.photo_path(root, photo_id)), size=size))
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
    """Train one variant on the training products (split as the shop splits them); score it on the test set."""
    from similarity.siamese import train_siamese

    train = data["split"] == "train"
    fit = split_training_data(
        data["street"][train], data["street_labels"][train], data["shop"], data["shop_labels"], seed=seed
    )
    config = TrainConfig.from_mapping({**variant, "seed": seed})
    result = train_siamese(fit.street, fit.street_labels, fit.shop, fit.shop_labels, config, validation=fit.validation)
    scores = on_test_products(data).score({"siamese": result.tower})["siamese"]
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    return scores, best, result.best_epoch


def on_test_products(data: dict) -> EvaluationData:
    """Test crops (products never trained on) against every product's shop photos."""
    test = data["split"] == "test"
    return EvaluationData(data["street"][test], data["street_labels"][test], data["shop"], data["shop_labels"])


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
        baseline = on_test_products(data).score({"baseline": None})["baseline"]
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
