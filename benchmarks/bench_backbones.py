"""Cost per image of every registered backbone, through Backbone.extract, against vgg19-fc2.

Uses the seeded random weights: the FLOPs are the same as ImageNet's, and they need no download.
The VGG19 variants share vgg19-fc2's random file in the store; MobileNetV2 makes its own (9 MB).

    .venv/bin/python benchmarks/bench_backbones.py [--store var/test-models] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from similarity.backbone import BACKBONES, load_backbone  # noqa: E402

BASELINE = "vgg19-fc2"


def ms_per_image(backbone, size: int, repeats: int) -> float:
    batch = np.random.default_rng(0).normal(0, 60, size=(size, 224, 224, 3)).astype(np.float32)
    backbone.extract(batch)  # warm-up: oneDNN picks its kernels per batch shape
    started = time.perf_counter()
    for _ in range(repeats):
        backbone.extract(batch)
    return (time.perf_counter() - started) * 1000 / (size * repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "var" / "test-models")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()

    names = [BASELINE] + [name for name in args.backbones if name != BASELINE]
    results: dict[str, dict[int, float]] = {}
    ids: dict[str, str] = {}
    for name in names:
        started = time.perf_counter()
        backbone = load_backbone(name, weights="random", store_dir=args.store, allow_download=False)
        load_s = time.perf_counter() - started
        ids[name] = f"{backbone.weights_id} ({backbone.dim}-d, loaded in {load_s:.1f} s)"
        results[name] = {size: ms_per_image(backbone, size, args.repeats) for size in args.batch_sizes}
        del backbone

    print(f"{os.cpu_count()} CPUs, {args.repeats} timed calls per cell after one warm-up")
    for name in names:
        print(f"  {ids[name]}")
    columns = (f"  {f'ms/img b{s}':>10}  {f'img/s b{s}':>9}  {f'× {BASELINE}':>11}" for s in args.batch_sizes)
    header = "".join(columns)
    print(f"{'backbone':<18}{header}")
    for name in names:
        cells = ""
        for size in args.batch_sizes:
            ms = results[name][size]
            cells += f"  {ms:>10.1f}  {1000 / ms:>9.1f}  {ms / results[BASELINE][size]:>11.3f}"
        print(f"{name:<18}{cells}")


if __name__ == "__main__":
    main()
