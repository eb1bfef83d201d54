"""Top-k of the Street2Shop evaluation with backbone features stored as float32 and as float16.

Run: .venv/bin/python benchmarks/bench_feature_dtype.py DATA_DIR

DATA_DIR holds an indexed catalogue with an active model (what `make demo` leaves in ./var). Its SQLite
database is copied to a temporary folder; the copy's features are evaluated as stored, then rewritten
in the other precision and evaluated again. The original is never changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--category", default="dresses")
    args = parser.parse_args()
    copy = Path(tempfile.mkdtemp(prefix="bench-dtype-"))
    shutil.copy(args.data_dir / "db.sqlite3", copy / "db.sqlite3")
    for suffix in ("-wal", "-shm"):
        if (args.data_dir / f"db.sqlite3{suffix}").exists():
            shutil.copy(args.data_dir / f"db.sqlite3{suffix}", copy / f"db.sqlite3{suffix}")
    os.environ.update(
        DATA_DIR=str(copy),
        DATABASE_URL=f"sqlite:///{copy / 'db.sqlite3'}",
        MODEL_STORE=str(args.data_dir / "models"),
        DJANGO_SETTINGS_MODULE="shop.settings",
        DEBUG="true",
        LOG_LEVEL="WARNING",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    import django

    django.setup()
    import numpy as np

    from shop import selectors
    from shop.models import Feature, vector_from_bytes, vector_to_bytes
    from shop.services.evaluation import evaluate_category

    version = selectors.active_version(category=args.category)
    if version is None:
        sys.exit(f"{args.data_dir} has no active {args.category} model")
    results, sizes = {}, {}
    dtypes = ["float32", "float16"]
    stored = Feature.objects.values_list("dtype", flat=True).first()
    if stored == "float16":
        dtypes.reverse()
    for dtype in dtypes:
        rows = list(Feature.objects.filter(weights_id=version.weights_id))
        cosines = []
        for row in rows:
            before = vector_from_bytes(row.vector, row.dtype)
            row.vector, row.dtype = vector_to_bytes(before, dtype), dtype
            after = vector_from_bytes(row.vector, dtype)
            cosines.append(float(before @ after / max(np.linalg.norm(before) * np.linalg.norm(after), 1e-12)))
        Feature.objects.bulk_update(rows, ["vector", "dtype"], batch_size=500)
        sizes[dtype] = sum(len(row.vector) for row in rows) / len(rows)
        result = evaluate_category(category=args.category, split="test", version=version)
        results[dtype] = {
            "baseline": result["baseline"],
            "siamese": result["siamese"],
            "bytes_per_feature": sizes[dtype],
            "min_cosine_to_previous": min(cosines),
        }
    print(json.dumps(results, indent=1))
    print("\n| stored as | bytes per feature | baseline top-1/5/10/20 | siamese top-1/5/10/20 |")
    print("| --- | --- | --- | --- |")
    for dtype in ("float32", "float16"):
        r = results[dtype]
        row = [f"{r[m][f'top{k}']:.3f}" for m in ("baseline", "siamese") for k in (1, 5, 10, 20)]
        print(f"| {dtype} | {r['bytes_per_feature']:,.0f} | {' / '.join(row[:4])} | {' / '.join(row[4:])} |")
    shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    main()
