"""What the worker's extras (the garment's colours and signature) cost next to the VGG19 fc2 forward pass.

Demo shop photos (dresses and skirts) are upscaled to a shop's size, saved as JPEG and decoded the way
the worker opens them; then, in one run: (a) read_garment on each photo and its 224×224 backbone input
(median and p90 ms), (b) the backbone's forward pass on preprocessed batches (per image), and their
ratio. Seeded random weights: the FLOPs are ImageNet's, and they need no download.

    .venv/bin/python benchmarks/bench_worker_extras.py [--images 64] [--precision auto] [--store var/test-models]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_backbone import images_per_second  # noqa: E402
from benchmarks.bench_precision import cpu_model  # noqa: E402
from shop.street2shop.demo.photos import encode_jpeg, shop_photo  # noqa: E402  (Django-free)
from shop.street2shop.demo.plan import photo_rng, random_dress, random_skirt  # noqa: E402
from similarity.backbone import load_backbone  # noqa: E402
from similarity.garment import read_garment  # noqa: E402
from similarity.images import backbone_input, open_image  # noqa: E402
from similarity.precision import PRECISION_SETTINGS, resolve_precision  # noqa: E402


def decoded_shop_photos(count: int, size: tuple[int, int], seed: int) -> list[Image.Image]:
    """Demo shop photos (two dresses to a skirt) at ``size``, through JPEG and back as the worker reads them."""
    rng = np.random.default_rng(seed)
    photos = []
    for i in range(count):
        garment = (random_skirt if i % 3 == 2 else random_dress)(rng)
        large = shop_photo(garment, photo_rng(seed, i)).resize(size, Image.Resampling.BICUBIC)
        photos.append(open_image(encode_jpeg(large, 85)))
    return photos


def per_image_ms(work: Callable[[Image.Image], object], images: list[Image.Image]) -> list[float]:
    for image in images[:4]:
        work(image)  # warm-up: lazy tables, first-call allocations
    times = []
    for image in images:
        started = time.perf_counter()
        work(image)
        times.append((time.perf_counter() - started) * 1000)
    return times


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1000), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", choices=PRECISION_SETTINGS, default="auto", help="as BACKBONE_PRECISION")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the images for the backbone")
    parser.add_argument("--store", type=Path, default=REPO / "var" / "test-models")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.2f}")
    images = decoded_shop_photos(args.images, tuple(args.size), args.seed)
    print(f"{len(images)} demo shop photos at {args.size[0]}×{args.size[1]} (JPEG 85, decoded as the worker does)")

    # The worker reads the colours off the photo and the signature off the backbone's input (made anyway).
    pairs = {id(image): backbone_input(image) for image in images}
    extras = per_image_ms(lambda image: read_garment(image, pairs[id(image)]), images)
    print(f"{'per image, ms':44}{'median':>8}{'p90':>8}")
    print(f"{'read_garment (colours + signature)':44}{statistics.median(extras):>8.2f}{p90(extras):>8.2f}")

    precision = resolve_precision(args.precision)
    backbone = load_backbone(
        "vgg19-fc2", weights="random", store_dir=args.store, allow_download=False, precision=precision
    )
    size = backbone.input_size
    pixels = np.stack([backbone.spec.preprocess(backbone_input(image, size=size), size) for image in images])
    batches = [pixels[start : start + args.batch_size] for start in range(0, len(pixels), args.batch_size)]

    def forward_all() -> None:
        for batch in batches:
            backbone.extract(batch)

    forward_ms = 1000 / images_per_second(forward_all, len(pixels), args.repeats)
    print(
        f"{backbone.weights_id} ({precision}), forward pass at batch {args.batch_size}: {forward_ms:.1f} ms per image"
    )
    extras_ms = statistics.median(extras)
    print(f"extras / forward: {extras_ms:.2f} / {forward_ms:.1f} ms = {100 * extras_ms / forward_ms:.2f} %")


if __name__ == "__main__":
    main()
