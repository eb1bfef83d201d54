"""Run as `python -m tests.similarity.extract_features`: load a backbone in a fresh process,
extract features for a saved batch and write them out, to compare processes bit for bit."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

    from similarity.backbone import BACKBONES, load_backbone

    from .tiny_backbone import TINY

    BACKBONES.setdefault(TINY.name, TINY)
    backbone = load_backbone(args.name, weights="random", store_dir=args.store, seed=args.seed, allow_download=False)
    np.save(args.out, backbone.extract(np.load(args.batch)))
    print(json.dumps({"weights_id": backbone.weights_id}))


if __name__ == "__main__":
    main()
