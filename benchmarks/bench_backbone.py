"""VGG19 fc2 throughput: Backbone.extract (tf.function) against keras Model.predict.

Uses the seeded random weights: the FLOPs are the same as ImageNet's, and they need no download.

    .venv/bin/python benchmarks/bench_backbone.py [--store var/test-models] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from similarity.backbone import load_backbone  # noqa: E402


def images_per_second(run: Callable[[], object], images: int, repeats: int) -> float:
    run()  # warm-up: tracing, oneDNN kernel selection, predict's function building
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "var" / "test-models")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    backbone = load_backbone("vgg19-fc2", weights="random", store_dir=args.store, allow_download=False)
    rng = np.random.default_rng(0)
    print(f"{backbone.weights_id}, {args.repeats} timed calls per cell after one warm-up")
    print(f"{'batch':>5}  {'extract img/s':>13}  {'predict img/s':>13}  {'ratio':>5}")
    for size in args.batch_sizes:
        batch = rng.normal(0, 60, size=(size, 224, 224, 3)).astype(np.float32)
        extract = images_per_second(lambda batch=batch: backbone.extract(batch), size, args.repeats)
        predict = images_per_second(
            lambda batch=batch, size=size: backbone.model.predict(batch, batch_size=size, verbose=0), size, args.repeats
        )
        print(f"{size:>5}  {extract:>13.2f}  {predict:>13.2f}  {extract / predict:>5.2f}")


if __name__ == "__main__":
    main()
