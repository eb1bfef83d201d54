"""The catalogue at scale: similar-item rebuilds, indexing batches, pages, search lookups, training reads.

Run: .venv/bin/python benchmarks/bench_scale.py [--sizes 1000 10000 100000] [--database postgres|sqlite]
     .venv/bin/python benchmarks/bench_scale.py --million      # the in-memory parts at 1e6, the rest extrapolated

Fills a throwaway database (PostgreSQL database `fashion_bench` on 127.0.0.1, dropped and made anew, or a
SQLite file) with N dresses: 4-5 shop photos each (4.4 on average, as Street2Shop's dresses) with a
synthetic 4096-d backbone vector each, street crops for 5 % of the products (the ones training reads), and
one unit-norm 128-d embedding per product under an active version. Embeddings are clustered (a mixture
around N/20 centres, like real lists of look-alike dresses) or uniform (`--uniform`: the worst case for
candidate search). No TensorFlow runs except to build the small tower the evaluation embeds with: the CNN
is measured by bench_backbone.py. Timings vary with the machine's load; the growth per 10x N is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PG_URL = "postgres://postgres@127.0.0.1:5432/fashion_bench"
EMBEDDING_DIM = 128
FEATURE_DIM = 4096
TRAIN_SHARE = 0.05  # products with street crops (Street2Shop dresses: 4,428 of them have pairs)
K = 10
PRODUCT_COLUMNS = ("title", "category", "price", "description", "s2s_product_id", "created_at", "updated_at")


def setup_django(database_url: str, data_dir: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url,
        DATA_DIR=data_dir,
        DJANGO_SETTINGS_MODULE="shop.settings",
        DEBUG="true",
        ALLOWED_HOSTS="testserver",  # the Django test client measures the product page
        LOG_LEVEL="WARNING",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    import django

    django.setup()


def peak_rss_mb() -> float:
    """This process's peak resident memory since exec (VmHWM; ru_maxrss would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_rows(rng: np.random.Generator, n: int, *, clustered: bool, dim: int = EMBEDDING_DIM) -> np.ndarray:
    if clustered:
        centres = rng.standard_normal((max(1, n // 20), dim)).astype(np.float32)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def feature_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """fc2-like vectors: non-negative (ReLU), about half of them zero."""
    values = rng.standard_normal((n, FEATURE_DIM), dtype=np.float32)
    np.maximum(values, 0, out=values)
    return values


# --- filling the database ---------------------------------------------------------------------------------


def _copy(table: str, columns: tuple[str, ...], rows) -> None:
    """COPY on PostgreSQL, executemany elsewhere: the bench fills millions of rows."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    placeholders = ", ".join("%s" for _ in columns)
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", list(rows))


def fill(n: int, *, clustered: bool, seed: int = 0) -> dict:
    from django.db import connection, transaction
    from django.utils import timezone

    from shop.models import Feature, ModelVersion, Product, ProductEmbedding, ProductImage, StreetPhoto
    from shop.services.indexing import stored_vector
    from similarity.colour import names_from_mask

    rng = np.random.default_rng(seed)
    now = timezone.now()
    started = time.perf_counter()
    with transaction.atomic():
        version = ModelVersion.objects.create(
            status="active", category="dresses", weights_id="bench/random", activated_at=now
        )
        masks = colour_masks(rng, n)
        _copy(
            Product._meta.db_table,
            (*PRODUCT_COLUMNS, "colours", "colour_mask"),
            (
                (f"Dress {i}", "dresses", 49, "", i, now, now, json.dumps(list(names_from_mask(int(m)))), int(m))
                for i, m in enumerate(masks)
            ),
        )
        product_ids = np.array(Product.objects.order_by("id").values_list("id", flat=True))
        # One product in 50 is listed twice (a near-duplicate pair): lists collapse them on request.
        pairs = product_ids[: 2 * (n // 100)].reshape(-1, 2)
        for first, second in pairs.tolist():
            Product.objects.filter(pk__in=[first, second]).update(duplicate_group=first)
        photos = rng.choice([4, 5], size=n, p=[0.6, 0.4])
        image_product = np.repeat(product_ids, photos)
        _copy(
            ProductImage._meta.db_table,
            ("product_id", "image", "thumbnail", "thumbnail_large", "s2s_photo_id", "position", "colours"),
            (
                (int(p), f"products/{i}.jpg", f"thumbnails/{i}.jpg", f"thumbnails/{i}-large.jpg", i, 0, "{}")
                for i, p in enumerate(image_product)
            ),
        )
        trained = product_ids[: max(4, int(n * TRAIN_SHARE))]
        crop_product = np.repeat(trained, 2)
        splits = np.where(np.arange(len(crop_product)) % 10 < 8, "train", "test")
        _copy(
            StreetPhoto._meta.db_table,
            ("product_id", "image", "s2s_photo_id", "bbox_left", "bbox_top", "bbox_width", "bbox_height", "split"),
            ((int(p), f"street/{i}.jpg", i, 0, 0, 100, 200, s) for i, (p, s) in enumerate(zip(crop_product, splits))),
        )
    image_ids = np.array(ProductImage.objects.order_by("id").values_list("id", flat=True))
    street_ids = np.array(StreetPhoto.objects.order_by("id").values_list("id", flat=True))
    columns = ("product_image_id", "street_photo_id", "weights_id", "vector", "dtype", "created_at")
    for kind, ids in (("shop", image_ids), ("street", street_ids)):
        for start in range(0, len(ids), 4096):
            chunk = ids[start : start + 4096]
            stored = [stored_vector(v) for v in feature_rows(rng, len(chunk))]
            with transaction.atomic():
                _copy(
                    Feature._meta.db_table,
                    columns,
                    (
                        (
                            int(i) if kind == "shop" else None,
                            int(i) if kind == "street" else None,
                            "bench/random",
                            s["vector"],
                            s["dtype"],
                            now,
                        )
                        for i, s in zip(chunk, stored)
                    ),
                )
    vectors = unit_rows(rng, n, clustered=clustered)
    with transaction.atomic():
        _copy(
            ProductEmbedding._meta.db_table,
            ("product_id", "version_id", "vector"),
            ((int(p), version.pk, v.tobytes()) for p, v in zip(product_ids, vectors)),
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {"version": version.pk, "products": product_ids, "fill_s": time.perf_counter() - started}


def colour_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Each product's colours as similarity.colour bits: a main colour (some far more common than
    others, as in a shop) and, for 40 %, an accent."""
    from similarity.colour import PALETTE_NAMES

    popularity = 1.0 / np.arange(1, len(PALETTE_NAMES) + 1)
    popularity /= popularity.sum()
    main = rng.choice(len(PALETTE_NAMES), size=n, p=popularity)
    accent = rng.choice(len(PALETTE_NAMES), size=n)
    return (1 << main) | np.where(rng.random(n) < 0.4, 1 << accent, 0)


def measure_refined(version_id: int, samples: int = 200) -> dict:
    """A product page's list narrowed to one colour, ranked on request (the chips' links): the
    rarest of the product's nearby colours and the commonest, as a shopper would choose them."""
    from django.test import Client

    from shop.models import ModelVersion
    from shop.services import embedding_index, similar_lists
    from similarity.colour import PALETTE_NAMES

    version = ModelVersion.objects.get(pk=version_id)
    cached = embedding_index.version_index(version)
    rng = np.random.default_rng(13)
    client = Client()
    times, page_times, short = [], [], 0
    for row in rng.integers(0, len(cached.index), samples).tolist():
        colour = PALETTE_NAMES[int(rng.integers(len(PALETTE_NAMES)))]
        started = time.perf_counter()
        found = similar_lists.ranked_products(
            version, cached.index.vectors[row], colour=colour, exclude=[int(cached.index.ids[row])]
        )
        times.append(time.perf_counter() - started)
        short += found is None or len(found[0]) < K
        started = time.perf_counter()
        response = client.get(f"/products/{int(cached.index.ids[row])}/", {"colour": colour})
        page_times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"refined page: {response.status_code}")
    return {
        "refined_p50_ms": 1000 * np.percentile(times, 50),
        "refined_p95_ms": 1000 * np.percentile(times, 95),
        "refined_page_p50_ms": 1000 * np.percentile(page_times, 50),
        "refined_page_p95_ms": 1000 * np.percentile(page_times, 95),
        "refined_short": short,
    }


def bytes_per_product(n: int) -> dict:
    from django.db import connection

    if connection.vendor != "postgresql":
        path = connection.settings_dict["NAME"]
        return {"total": Path(path).stat().st_size / n}
    sizes = {}
    with connection.cursor() as cursor:
        for table in (
            "shop_feature",
            "shop_productembedding",
            "shop_similarproduct",
            "shop_product",
            "shop_productimage",
            "shop_streetphoto",
        ):
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            sizes[table.removeprefix("shop_")] = cursor.fetchone()[0] / n
    sizes["total"] = sum(sizes.values())
    return sizes


# --- measurements -----------------------------------------------------------------------------------------


def measure_rebuild(version_id: int) -> dict:
    from shop.services import embedding_index
    from shop.services.recommendations import rebuild_recommendations

    embedding_index.forget()
    started = time.perf_counter()
    rows = rebuild_recommendations(version_id=version_id)
    seconds = time.perf_counter() - started
    cached = embedding_index.version_index(version_id)
    return {"rebuild_s": seconds, "rows": rows, "index_mb": cached.index.nbytes / 1e6}


def measure_rebuild_parallel(version_id: int, workers: int, env: dict) -> float:
    """The rebuild's slices shared by N worker processes, each loading its own index (as Celery workers do)."""
    from shop.services.recommendations import slice_bounds

    bounds = slice_bounds(version_id=version_id)
    shares = [bounds[i::workers] for i in range(workers)]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                "slices",
                "--version",
                str(version_id),
                "--slices",
                json.dumps(share),
            ],
            env={**env, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads},
        )
        for share in shares
    ]
    if any(child.wait() for child in children):
        raise RuntimeError("a slice worker failed")
    return time.perf_counter() - started


def measure_batches(
    version_id: int, product_ids: np.ndarray, *, batch: int = 8, batches: int = 10, clustered: bool
) -> dict:
    """New products arriving in indexing batches (their CNN work excluded), in one warm worker process."""
    from django.utils import timezone

    from shop.models import Product, ProductEmbedding
    from shop.services import embedding_index
    from shop.services.recommendations import update_recommendations

    embedding_index.forget()
    rng = np.random.default_rng(99)
    started = time.perf_counter()
    embedding_index.version_index(version_id)
    cold = time.perf_counter() - started
    times = []
    now = timezone.now()
    for number in range(batches):
        new = Product.objects.bulk_create([Product(title=f"New {number}-{i}", created_at=now) for i in range(batch)])
        vectors = unit_rows(rng, batch, clustered=clustered)
        ProductEmbedding.objects.bulk_create(
            [ProductEmbedding(product=p, version_id=version_id, vector=v.tobytes()) for p, v in zip(new, vectors)]
        )
        started = time.perf_counter()
        update_recommendations(version_id=version_id, product_ids=[p.pk for p in new])
        times.append(time.perf_counter() - started)
    return {"batch_ms": 1000 * statistics.median(times), "batch_cold_s": cold}


def measure_page(product_ids: np.ndarray, samples: int = 200) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    rng = np.random.default_rng(5)
    times, queries = [], set()
    for product_id in rng.choice(product_ids, size=samples):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(f"/products/{product_id}/")
            times.append(time.perf_counter() - started)
        if response.status_code != 200 or response.content.count(b'class="card"') != K:
            raise RuntimeError(f"product page {product_id}: {response.status_code}, not {K} similar items")
        queries.add(len(captured))
    return {
        "page_p50_ms": 1000 * np.percentile(times, 50),
        "page_p95_ms": 1000 * np.percentile(times, 95),
        "page_queries": "/".join(map(str, sorted(queries))),
    }


def measure_search(version_id: int, samples: int = 200) -> dict:
    from shop.models import ModelVersion
    from shop.services import embedding_index
    from shop.services.search import nearest_products

    version = ModelVersion.objects.get(pk=version_id)
    cached = embedding_index.version_index(version)
    rng = np.random.default_rng(11)
    queries = cached.index.vectors[rng.integers(0, len(cached.index), samples)] + 0.05 * rng.standard_normal(
        (samples, EMBEDDING_DIM)
    ).astype(np.float32)
    times = []
    for vector in queries:
        started = time.perf_counter()
        nearest_products(version, vector)
        times.append(time.perf_counter() - started)
    return {"search_p50_ms": 1000 * np.percentile(times, 50), "search_p95_ms": 1000 * np.percentile(times, 95)}


def child_measure(kind: str, version_id: int) -> dict:
    """Run in a fresh process so its peak memory is its own."""
    from shop.models import ModelVersion

    version = ModelVersion.objects.get(pk=version_id)
    started = time.perf_counter()
    if kind == "training":
        from shop.services.training_stages import training_data

        data = training_data(category="dresses", weights_id=version.weights_id, seed=0)
        result = {"counts": data.counts}
    elif kind == "evaluation":
        import keras  # noqa: F401  (so the baseline below includes TensorFlow)

        baseline = peak_rss_mb()
        started = time.perf_counter()
        from shop.services.evaluation import evaluate_category

        result = evaluate_category(category="dresses", split="test", version=version)
        result = {"tf_baseline_mb": baseline, "siamese": result.get("siamese")}
    else:
        raise ValueError(kind)
    return {**result, "seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}


def run_child(kind: str, version_id: int, env: dict) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--version", str(version_id)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def make_tower(version_id: int, data_dir: str) -> None:
    """A small random tower for the evaluation to embed with (its quality is not what is measured)."""
    from shop.models import ModelVersion
    from shop.services.training import store_tower
    from similarity.siamese import build_embedding_model

    tower = build_embedding_model(FEATURE_DIM, hidden_dim=256, embedding_dim=EMBEDDING_DIM)
    name, checksum = store_tower(tower, f"siamese/bench-v{version_id}.keras")
    ModelVersion.objects.filter(pk=version_id).update(artifact_name=name, checksum=checksum)


def vacuum() -> None:
    """What autovacuum does soon after a rebuild rewrites a million rows: dead tuples gone, statistics fresh."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE shop_similarproduct")


def reset_database() -> None:
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE shop_similarproduct, shop_productembedding, shop_feature, shop_streetphoto, "
                "shop_productimage, shop_searchquery, shop_modelversion, shop_product RESTART IDENTITY CASCADE"
            )
            cursor.execute("VACUUM FULL")
    else:
        call_command("flush", interactive=False, verbosity=0)


def reuse(n: int) -> dict:
    """The catalogue an earlier run of the same N left (--reuse-db), its similar rows removed."""
    from shop.models import ModelVersion, Product, SimilarProduct

    version = ModelVersion.objects.get(status="active")
    products = np.array(Product.objects.filter(title__startswith="Dress ").order_by("id").values_list("id", flat=True))
    if len(products) != n:
        raise SystemExit(f"--reuse-db: the database holds {len(products):,} products, not {n:,}")
    SimilarProduct.objects.filter(version=version).delete()
    return {"version": version.pk, "products": products, "fill_s": 0.0}


def measure_size(n: int, args, env: dict) -> dict:
    from shop.services import embedding_index

    embedding_index.forget()
    print(f"\n== N = {n:,} ({args.database}, {'uniform' if args.uniform else 'clustered'})", flush=True)
    if args.reuse_db:
        filled = reuse(n)
    else:
        reset_database()
        filled = fill(n, clustered=not args.uniform)
    version_id, product_ids = filled["version"], filled["products"]
    result: dict = {"n": n, "fill_s": filled["fill_s"]}
    print(f"filled in {filled['fill_s']:.0f} s", flush=True)
    result |= measure_rebuild(version_id)
    print(f"rebuild (1 process): {result['rebuild_s']:.1f} s, {result['rows']:,} rows", flush=True)
    if args.parallel:
        result["rebuild_2_s"] = measure_rebuild_parallel(version_id, 2, env)
        print(f"rebuild (2 processes): {result['rebuild_2_s']:.1f} s", flush=True)
    vacuum()
    result |= bytes_per_product(n)
    result |= measure_page(product_ids)
    result |= measure_search(version_id)
    result |= measure_refined(version_id)
    result |= measure_batches(version_id, product_ids, clustered=not args.uniform)
    result["recall"] = recall_at_k(embedding_index.version_index(version_id).index, queries=min(1000, n))
    if not args.skip_training:
        result["training"] = run_child("training", version_id, env)
        make_tower(version_id, env["DATA_DIR"])
        result["evaluation"] = run_child("evaluation", version_id, env)
    print(json.dumps(result, default=float), flush=True)
    return result


def recall_at_k(index, *, queries: int, k: int = K) -> float:
    """Share of the plain-cdist top-k that the index's path returns, for a sample of its own rows."""
    from similarity.neighbours import top_k

    rows = np.random.default_rng(3).choice(len(index), size=min(queries, len(index)), replace=False)
    scaled, _ = index.search_rows(rows, k)
    hits = 0
    for start in range(0, len(rows), 50):
        block = rows[start : start + 50]
        expected, _ = top_k(index.vectors[block].astype(np.float64), index.vectors, k=k, exclude=list(block))
        hits += sum(len(set(e.tolist()) & set(s.tolist())) for e, s in zip(expected, scaled[start : start + 50]))
    return hits / (len(rows) * k)


# --- 1e6: the parts that fit in memory, the rest extrapolated ---------------------------------------------


def million(args) -> None:
    from similarity.neighbours import VectorIndex

    n = 1_000_000
    rng = np.random.default_rng(1)
    for clustered in (True, False):
        label = "clustered" if clustered else "uniform"
        vectors = unit_rows(rng, n, clustered=clustered)
        index = VectorIndex(EMBEDDING_DIM)
        index.add(np.arange(n), vectors)
        queries = vectors[rng.integers(0, n, 200)] + 0.05 * rng.standard_normal((200, EMBEDDING_DIM)).astype(np.float32)
        times = []
        for query in queries:
            started = time.perf_counter()
            index.search(query[None, :], K)
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        sample = np.arange(0, n, n // 4000)[:4000]
        index.search_rows(sample, K)
        per_row = (time.perf_counter() - started) / len(sample)
        recall = recall_at_k(index, queries=args.recall_queries)
        print(
            f"1e6 {label}: search lookup p50 {1000 * np.percentile(times, 50):.1f} ms, "
            f"p95 {1000 * np.percentile(times, 95):.1f} ms; recall@10 vs plain cdist {recall:.4f} "
            f"({args.recall_queries} queries); ranking {1e6 * per_row:.0f} µs/product in one process "
            f"-> full rebuild's ranking ~{per_row * n / 60:.0f} min (extrapolated), index {index.nbytes / 1e6:.0f} MB",
            flush=True,
        )
        if clustered:
            two = parallel_rows(vectors, sample)
            print(
                f"1e6 ranking with 2 processes (1 BLAS thread each): {1e6 * two:.0f} µs/product "
                f"-> ~{two * n / 60:.0f} min; 4 workers (extrapolated, 4 cores or hosts): "
                f"~{per_row * n / 4 / 60:.0f} min",
                flush=True,
            )


def _rank_rows(vectors, rows, queue) -> None:
    from similarity.neighbours import VectorIndex

    index = VectorIndex(vectors.shape[1])
    index.add(np.arange(len(vectors)), vectors)
    started = time.perf_counter()
    index.search_rows(rows, K)
    queue.put(time.perf_counter() - started)


def parallel_rows(vectors: np.ndarray, sample: np.ndarray) -> float:
    import multiprocessing

    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    halves = np.array_split(sample, 2)
    processes = [context.Process(target=_rank_rows, args=(vectors, half, queue)) for half in halves]
    for process in processes:
        process.start()
    seconds = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    # Seconds per product of the pair working together: the slower half's time over all rows.
    return max(seconds) / len(sample)


# --- the table ---------------------------------------------------------------------------------------------


def table(results: list[dict]) -> None:
    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else str(value)

    lines = [
        ("full rebuild, 1 process (s)", "rebuild_s", ".1f"),
        ("full rebuild, 2 processes (s)", "rebuild_2_s", ".1f"),
        ("one indexing batch of 8, warm worker (ms)", "batch_ms", ".1f"),
        ("first batch in a new worker: index load (s)", "batch_cold_s", ".2f"),
        ("product page p50 (ms)", "page_p50_ms", ".1f"),
        ("product page p95 (ms)", "page_p95_ms", ".1f"),
        ("product page queries", "page_queries", ""),
        ("upload-search lookup p50 (ms)", "search_p50_ms", ".2f"),
        ("upload-search lookup p95 (ms)", "search_p95_ms", ".2f"),
        ("list refined by a colour p50 (ms)", "refined_p50_ms", ".2f"),
        ("list refined by a colour p95 (ms)", "refined_p95_ms", ".2f"),
        ("product page with a colour chosen p50 (ms)", "refined_page_p50_ms", ".1f"),
        ("product page with a colour chosen p95 (ms)", "refined_page_p95_ms", ".1f"),
        ("refined lists short of 10", "refined_short", ""),
        ("recall@10 vs plain cdist", "recall", ".4f"),
        ("worker index memory (MB)", "index_mb", ".1f"),
        ("bytes per product, all tables", "total", ",.0f"),
        ("  of which features", "feature", ",.0f"),
        ("  of which similar rows", "similarproduct", ",.0f"),
    ]
    print("\n| N | " + " | ".join(f"{r['n']:,}" for r in results) + " | growth per 10x |")
    print("| --- |" + " --- |" * (len(results) + 1))
    for label, key, spec in lines:
        values = [r.get(key, "—") for r in results]
        growth = ""
        numeric = [v for v in values if isinstance(v, (int, float))]
        if len(numeric) >= 2 and numeric[-2] > 0 and spec:
            steps = np.log10(results[-1]["n"] / results[-2]["n"])
            growth = f"{(numeric[-1] / numeric[-2]) ** (1 / steps):.1f}x"
        print(f"| {label} | " + " | ".join(fmt(v, spec) for v in values) + f" | {growth} |")
    for kind in ("training", "evaluation"):
        cells = [r.get(kind) for r in results]
        if any(cells):
            print(
                f"| {kind}: seconds / peak MB | "
                + " | ".join(f"{c['seconds']:.1f} s / {c['peak_mb']:,.0f} MB" if c else "—" for c in cells)
                + " | |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--uniform", action="store_true", help="uniform random embeddings instead of clustered")
    parser.add_argument("--parallel", action="store_true", help="also time the rebuild split over 2 processes")
    parser.add_argument("--skip-training", action="store_true", help="skip the training-read and evaluation children")
    parser.add_argument("--million", action="store_true", help="the in-memory 1e6 measurements only")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument(
        "--reuse-db",
        action="store_true",
        help="measure the catalogue the last PostgreSQL run left (one size), without refilling",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--version", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slices", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.million:
        million(args)
        return
    if args.child:
        import django

        django.setup()
        if args.child == "slices":
            from shop.services.recommendations import rank_slice

            for low, high in json.loads(args.slices):
                rank_slice(version_id=args.version, low=low, high=high)
            return
        print(json.dumps(child_measure(args.child, args.version), default=float))
        return

    data_dir = tempfile.mkdtemp(prefix="bench-scale-")
    if args.database == "postgres" and args.reuse_db:
        database_url = PG_URL
    elif args.database == "postgres":
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS fashion_bench")
            admin.execute("CREATE DATABASE fashion_bench")
        database_url = PG_URL
    else:
        database_url = f"sqlite:///{data_dir}/bench.sqlite3"
    setup_django(database_url, data_dir)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    env = {**os.environ}
    results = [measure_size(n, args, env) for n in args.sizes]
    table(results)


if __name__ == "__main__":
    main()
