"""VGG19 fc2 in float32 and in bfloat16 (Keras mixed_bfloat16): speed and whether they rank the same.

Prints whether this CPU computes bf16 natively (avx512_bf16 / amx_bf16; elsewhere TensorFlow
emulates it and bf16 is labelled "emulated"), then for each precision: indexing throughput
(img/s over the demo images in batches of 16, preprocessing included, as a worker runs it) and
single-photo search latency (batch 1), the bf16/float32 ratios, the cosine of the features
between the two, each image's top-10 neighbours, and the demo evaluation's top-k (street crops
against shop photos, raw fc2, cosine) in float32, bf16 and mixed (bf16 queries, float32 gallery).
Runs alternate between the precisions so machine load hits both alike. Seeded random weights:
the FLOPs are ImageNet's, and they need no download.

    .venv/bin/python benchmarks/bench_precision.py [--store var/test-models] [--products 24] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shop.street2shop.demo.photos import labelled_photos  # noqa: E402  (Django-free)
from similarity.backbone import Backbone, load_backbone  # noqa: E402
from similarity.evaluation import top_k_accuracy  # noqa: E402
from similarity.neighbours import all_top_k  # noqa: E402
from similarity.precision import cpu_bf16_flags  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def demo_images(products: int, seed: int) -> tuple[list, list, list, list]:
    """Shop photos (the gallery) and boxed street crops (the queries) of demo products."""
    return labelled_photos(seed=seed, n_products=products)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def timed_index(backbone: Backbone, images: list, batch_size: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    features = backbone.extract_images(images, batch_size=batch_size)
    return features, len(images) / (time.perf_counter() - started)


def single_photo_ms(backbone: Backbone, batch: np.ndarray) -> float:
    started = time.perf_counter()
    backbone.extract(batch)
    return (time.perf_counter() - started) * 1000


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "var" / "test-models")
    parser.add_argument("--products", type=int, default=24, help="demo products (each: a shop photo + a street crop)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed indexing passes per precision")
    parser.add_argument("--single", type=int, default=5, help="timed single-photo searches per precision")
    args = parser.parse_args()

    flags = cpu_bf16_flags()
    native = bool(flags)
    bf16_label = "bfloat16" if native else "bfloat16 (emulated)"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.2f}")
    if native:
        print(f"native bf16: yes ({', '.join(flags)})")
    else:
        print("native bf16: NO (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): bf16 is emulated here and its")
        print("  speed says nothing about a bf16 CPU; only the float32 figures and the accuracy comparison count")

    shop, shop_labels, street, street_labels = demo_images(args.products, args.seed)
    images = shop + street
    backbones = {
        precision: load_backbone(
            "vgg19-fc2", weights="random", store_dir=args.store, allow_download=False, precision=precision
        )
        for precision in PRECISIONS
    }
    assert len({b.weights_id for b in backbones.values()}) == 1
    print(
        f"{backbones['float32'].weights_id}; {len(images)} demo images ({len(shop)} shop photos, "
        f"{len(street)} street crops), batch {args.batch_size}, {args.repeats} passes each, alternating"
    )

    # Warm-up: tracing and oneDNN kernel selection for both batch shapes.
    single = np.stack([backbones["float32"].spec.preprocess(street[0], 224)])
    for backbone in backbones.values():
        backbone.extract_images(images[: args.batch_size], batch_size=args.batch_size)
        backbone.extract(single)

    rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    features: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for precision, backbone in backbones.items():
            features[precision], rate = timed_index(backbone, images, args.batch_size)
            rates[precision].append(rate)
    latencies: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.single):
        for precision, backbone in backbones.items():
            latencies[precision].append(single_photo_ms(backbone, single))

    index = {p: statistics.median(r) for p, r in rates.items()}
    search = {p: statistics.median(r) for p, r in latencies.items()}
    print()
    print(f"{'':22}{'indexing img/s (b16)':>22}{'single photo ms (b1)':>22}")
    for precision in PRECISIONS:
        label = bf16_label if precision == "bfloat16" else precision
        print(f"{label:22}{index[precision]:>22.2f}{search[precision]:>22.0f}")
    print(
        f"{'bf16 / float32':22}{index['bfloat16'] / index['float32']:>21.2f}x"
        f"{search['float32'] / search['bfloat16']:>21.2f}x  (speed-up; >1 = bf16 faster)"
    )

    f32, bf16 = features["float32"], features["bfloat16"]
    similarity = cosines(f32, bf16)
    print()
    print(f"cosine bf16 vs float32 per image: min {similarity.min():.6f}, mean {similarity.mean():.6f}")
    f32_lists, _ = all_top_k(f32, 10)
    bf16_lists, _ = all_top_k(bf16, 10)
    identical = sum(list(a) == list(b) for a, b in zip(f32_lists, bf16_lists))
    shared = [len(set(a) & set(b)) for a, b in zip(f32_lists, bf16_lists)]
    print(
        f"top-10 neighbours (cdist euclidean, within the {len(images)} images): identical lists "
        f"{identical}/{len(images)}, same sets {shared.count(10)}/{len(images)}, fewest shared {min(shared)}/10"
    )

    split = len(shop)
    ks = (1, 5, 10, 20)

    def score(queries: np.ndarray, gallery: np.ndarray) -> dict:
        return top_k_accuracy(queries[split:], street_labels, gallery[:split], shop_labels, ks=ks)

    print(f"demo evaluation ({len(street)} street crops vs {len(shop)} shop photos, raw fc2, cosine):")
    rows = {
        "float32": score(f32, f32),
        bf16_label: score(bf16, bf16),
        "mixed: bf16 q, f32 gallery": score(bf16, f32),
    }
    print(f"{'':28}" + "".join(f"{f'top{k}':>8}" for k in ks))
    for name, result in rows.items():
        print(f"{name:28}" + "".join(f"{result[f'top{k}']:>8.3f}" for k in ks))
    worst = max(abs(result[f"top{k}"] - rows["float32"][f"top{k}"]) for result in rows.values() for k in ks)
    print(f"largest top-k difference to float32: {worst:.3f}")


if __name__ == "__main__":
    main()
