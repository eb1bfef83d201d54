"""Throughput of shop.street2shop.download against a local server with a fixed latency per request.

Run: .venv/bin/python benchmarks/bench_downloads.py [--count 500] [--latency 0.02] [--workers 1,4,8]

The server runs in its own process so that it does not compete with the downloader for the GIL;
each worker count downloads every photo into a fresh folder (no "exists" shortcuts).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shop.street2shop.download import download_photos
from shop.street2shop.jobs import OUTCOMES, DownloadConfig, DownloadJob, DownloadResult
from tests import httpserver


def make_photos(count: int, seed: int) -> list[bytes]:
    """Photo-like 640×480 JPEGs of about 50–150 KB: a gradient under noise of varying strength."""
    from PIL import Image

    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((640, 480))
    photos = []
    for _ in range(count):
        sigma = rng.uniform(15, 55)
        channels = [Image.blend(base, Image.effect_noise((640, 480), sigma), 0.5) for _ in range(3)]
        buffer = io.BytesIO()
        Image.merge("RGB", channels).save(buffer, format="JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos


def serve(count: int, latency: float, ready: multiprocessing.Queue) -> None:
    """Serve /photo/<n>.jpg after ``latency`` seconds; report (port, sizes) on ``ready``."""
    photos = make_photos(count, seed=2015)

    def photo(handler: BaseHTTPRequestHandler, seen: int) -> None:
        httpserver.send(handler, 200, photos[int(handler.path.rsplit("/", 1)[1].split(".")[0])])

    with httpserver.PhotoServer() as server:
        server.add_prefix("/photo/", httpserver.after(latency, photo))
        ready.put((server.port, [len(photo) for photo in photos]))
        threading.Event().wait()  # until the benchmark terminates this process


def summarize(results: Iterable[DownloadResult]) -> dict[str, int]:
    """Count results per outcome, in the order of ``OUTCOMES``; absent outcomes are left out."""
    counts = Counter(result.outcome for result in results)
    return {outcome: counts[outcome] for outcome in OUTCOMES if counts[outcome]}


def run(jobs: list[DownloadJob], workers: int) -> tuple[float, dict[str, int]]:
    config = DownloadConfig(workers=workers, per_host=workers, retries=0, allowed_hosts=frozenset({"127.0.0.1"}))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        results = download_photos(jobs, Path(folder), config=config)
        return time.perf_counter() - started, summarize(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server waits per request")
    parser.add_argument("--workers", default="1,4,8", help="comma-separated worker counts")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]

    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=serve, args=(args.count, args.latency, ready), daemon=True)
    server.start()
    try:
        port, sizes = ready.get(timeout=120)
        jobs = [DownloadJob(n, f"http://127.0.0.1:{port}/photo/{n}.jpg") for n in range(args.count)]
        print(
            f"{args.count} JPEGs, {min(sizes) // 1000}–{max(sizes) // 1000} KB "
            f"(mean {sum(sizes) // len(sizes) // 1000} KB), "
            f"{args.latency * 1000:g} ms latency per request"
        )
        rates: dict[int, float] = {}
        for workers in worker_counts:
            elapsed, counts = run(jobs, workers)
            if counts != {"ok": args.count}:
                raise SystemExit(f"unexpected outcomes with {workers} workers: {counts}")
            rates[workers] = args.count / elapsed
            print(f"workers={workers:<3} {elapsed:6.2f} s  {rates[workers]:7.1f} photos/s")
        baseline = rates[worker_counts[0]]
        for workers in worker_counts[1:]:
            print(f"speedup {workers} vs {worker_counts[0]} workers: {rates[workers] / baseline:.2f}×")
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
