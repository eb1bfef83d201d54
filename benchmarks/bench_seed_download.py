"""`seed_street2shop --download` on the real dresses metadata, against local servers with broken routes.

Run: .venv/bin/python benchmarks/bench_seed_download.py [--limit 500] [--workers 8] [--latency 0.02]
     .venv/bin/python benchmarks/bench_seed_download.py --scenario one-host --limit 60 [--timeout 900]

The real metadata in ../shared/street2shop/meta/json is symlinked into a throwaway dataset folder (never
copied into the repository). Every photo id of the dresses (and skirts) files gets a URL in photos.txt on one
of four "retailers" (127.0.0.1-4, one server each, in a separate process so they do not compete with the
downloader for the GIL). Generated JPEGs are big enough to hold each street photo's boxes. About 10 % of
photos get a broken route (404, 500, a web page, a truncated or empty body, a pixel bomb, a redirect loop, an
answer slower than the read timeout), 5 % a route that recovers (500 then 200, 429 with Retry-After, a
redirect chain), 0.5 % no line in photos.txt, and 8 % of products a dead retailer for all their shop photos.

The script migrates a SQLite database under a temporary DATA_DIR, runs the command twice with the indexing
tasks queued into an embedded Redis (no worker), and checks that exactly the first LIMIT products (in
seeding order) with a good shop photo were seeded, that skirt photos were never requested, and that the
second run made no request.

``--scenario one-host`` is the retailer of issue #9: every photo on one host (127.0.0.1, allowed by
DOWNLOAD_ALLOWED_HOSTS), the default download settings, and one photo in twelve answering only after 40 s
(past the 20 s read timeout). It prints the time to the first product, to LIMIT products and to the end of
the run; ``--timeout`` interrupts a run that takes longer (as Ctrl-C would), for measuring old code.
"""

from __future__ import annotations

import _thread
import argparse
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import httpserver  # noqa: E402  (the repository's test photo server)

META = REPO.parent / "shared" / "street2shop" / "meta" / "json"
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
DEAD_HOST = "127.0.0.9"  # nothing listens: connection refused, like a retailer that is gone
BROKEN = ("e404", "e500", "html", "truncated", "empty", "bomb", "loop", "slow")
RECOVERING = ("flaky", "busy", "moved")
GOOD = frozenset({"ok", *RECOVERING})
SLOW_SECONDS = 3.0
SILENT_SECONDS = 40.0  # one-host scenario: answers only after the default 20 s read timeout
SILENT_SHARE = 1 / 12
READ_TIMEOUT = 1.0
BUCKET = 256  # street photos are generated at their boxes' extent rounded up to this
MAX_SIDE = 4096
PHOTO_PATH = re.compile(r"/(\w+)/(\d+)\.jpg(?:/hop(\d+))?")


# --- the servers (child process) ------------------------------------------------------------------


def make_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A cheap photo stand-in: flat colour with a few shapes (fast to encode at 4 megapixels)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse((x, y, x + size[0] // 3, y + size[1] // 3), fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def serve(
    sizes: dict[int, tuple[int, int]], latency: float, ready: multiprocessing.Queue, hosts: tuple[str, ...] = HOSTS
) -> None:
    """Serve /<route>/<photo id>.jpg on every HOSTS address (a PhotoServer each); /_stats answers the request counts."""
    from PIL import Image

    shop = [make_jpeg((640, 480), seed) for seed in range(16)]
    buckets = {size: make_jpeg(size, hash(size) % 1000) for size in set(sizes.values())}
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000), 128).save(buffer, format="PNG")
    bomb = buffer.getvalue()  # 64 megapixels in ~60 KB
    servers = [httpserver.PhotoServer(host) for host in hosts]

    def photo(photo_id: int) -> bytes:
        size = sizes.get(photo_id)
        return buckets[size] if size else shop[photo_id % len(shop)]

    def stats(handler: BaseHTTPRequestHandler, seen: int) -> None:
        photos: Counter[int] = Counter()
        for server in servers:
            with server.lock:
                for path, count in server.requests.items():
                    if match := PHOTO_PATH.fullmatch(path):
                        photos[int(match.group(2))] += count
        body = json.dumps({"total": sum(photos.values()), "photos": dict(photos)}).encode()
        httpserver.send(handler, 200, body, "application/json")

    for server in servers:
        for name, route in photo_routes(photo, bomb).items():
            server.add_prefix(f"/{name}/", httpserver.after(latency, route))
        server.start()
    servers[0].add("/_stats", stats)
    ready.put([server.port for server in servers])
    threading.Event().wait()  # until the benchmark terminates this process


def photo_routes(photo: Callable[[int], bytes], bomb: bytes) -> dict[str, httpserver.Route]:
    """The route of each kind of photo URL, by the first part of its path."""

    def matched(handler: BaseHTTPRequestHandler) -> re.Match[str]:
        match = PHOTO_PATH.fullmatch(handler.path.split("?", 1)[0])
        assert match is not None, handler.path  # photos.txt lists only such URLs
        return match

    def parts(handler: BaseHTTPRequestHandler) -> tuple[str, int]:
        """The URL of the photo without its hops, and the number of hops so far."""
        match = matched(handler)
        return f"/{match.group(1)}/{match.group(2)}.jpg", int(match.group(3) or 0)

    def photo_of(handler: BaseHTTPRequestHandler) -> bytes:
        return photo(int(matched(handler).group(2)))

    def ok(handler: BaseHTTPRequestHandler, seen: int) -> None:
        httpserver.send(handler, 200, photo_of(handler))

    def truncated(handler: BaseHTTPRequestHandler, seen: int) -> None:
        data = photo_of(handler)
        httpserver.send(handler, 200, data[: len(data) * 6 // 10])

    def loop(handler: BaseHTTPRequestHandler, seen: int) -> None:
        base, hops = parts(handler)
        httpserver.send(handler, 302, headers={"Location": f"{base}/hop{hops + 1}"})

    def first_fails(code: int, headers: dict[str, str] | None = None) -> httpserver.Route:
        def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
            if seen == 1:
                httpserver.send(handler, code, b"try later", "text/plain", headers)
            else:
                ok(handler, seen)

        return route

    def moved(handler: BaseHTTPRequestHandler, seen: int) -> None:
        base, hops = parts(handler)
        if hops < 2:
            httpserver.send(handler, 301, headers={"Location": f"{base}/hop{hops + 1}"})
        else:
            ok(handler, seen)

    return {
        "ok": ok,
        "e404": httpserver.status(404),
        "e500": httpserver.status(500),
        "html": httpserver.html(),
        "truncated": truncated,
        "empty": httpserver.image(b""),
        "bomb": httpserver.image(bomb, "image/png"),
        "loop": loop,
        "slow": httpserver.after(SLOW_SECONDS, ok),
        "silent": httpserver.after(SILENT_SECONDS, ok),
        "flaky": first_fails(500),
        "busy": first_fails(429, {"Retry-After": "1"}),
        "moved": moved,
    }


# --- the dataset and what should happen -----------------------------------------------------------


def load(name: str) -> list[dict]:
    return json.loads((META / name).read_text())


def plan(seed: int, scenario: str = "four-hosts") -> dict:
    """Routes for every photo id, and which products a --limit run must seed, computed independently."""
    rng = random.Random(seed)
    retrieval: dict[int, list[int]] = {}
    for entry in load("retrieval_dresses.json"):
        retrieval.setdefault(entry["product"], [])
        if entry["photo"] not in retrieval[entry["product"]]:
            retrieval[entry["product"]].append(entry["photo"])
    pairs = load("train_pairs_dresses.json") + load("test_pairs_dresses.json")
    extent: dict[int, tuple[int, int]] = {}
    street: dict[int, set[int]] = {}
    for entry in pairs:
        box = {key: round(value) for key, value in entry["bbox"].items()}
        right, bottom = box["left"] + box["width"], box["top"] + box["height"]
        old = extent.get(entry["photo"], (1, 1))
        extent[entry["photo"]] = (max(old[0], right), max(old[1], bottom))
        if box["width"] > 0 and box["height"] > 0:
            street.setdefault(entry["product"], set()).add(entry["photo"])
    sizes = {
        photo: tuple(min(MAX_SIDE, max(BUCKET, -(-side // BUCKET) * BUCKET)) for side in size)
        for photo, size in extent.items()
    }
    skirts = {
        e["photo"]
        for e in load("retrieval_skirts.json") + load("train_pairs_skirts.json") + load("test_pairs_skirts.json")
    }
    dresses = {photo for photos in retrieval.values() for photo in photos} | set(extent)

    route: dict[int, str] = {}
    one_host = scenario == "one-host"
    silent = SILENT_SHARE if one_host else 0.0
    broken = tuple(kind for kind in BROKEN if kind != "slow") if one_host else BROKEN
    for photo in sorted(dresses):
        draw = rng.random()
        if draw < 0.005:
            route[photo] = "unlisted"
        elif draw < 0.005 + silent:
            route[photo] = "silent"
        elif draw < 0.105 + silent:
            route[photo] = rng.choice(broken)
        elif draw < 0.155 + silent:
            route[photo] = rng.choice(RECOVERING)
        else:
            route[photo] = "ok"
    dead_products = set() if one_host else {pid for pid in sorted(retrieval) if rng.random() < 0.08}
    for pid in dead_products:
        for photo in retrieval[pid]:
            if route[photo] != "unlisted":
                route[photo] = "dead"
    for photo in skirts - dresses:
        route[photo] = "ok"

    listed = {photo for photo, kind in route.items() if kind != "unlisted"}
    candidates = [pid for pid, photos in retrieval.items() if any(p in listed for p in photos)]
    order = sorted(candidates, key=lambda pid: (not any(p in listed for p in street.get(pid, ())), pid))
    good = [pid for pid in order if any(route[p] in GOOD for p in retrieval[pid])]
    return {
        "route": route,
        "sizes": sizes,
        "order": order,
        "good": good,
        "retrieval": retrieval,
        "dead_products": dead_products,
        "skirt_only": skirts - dresses,
    }


def write_dataset(
    root: Path, route: dict[int, str], ports: list[int], dead_port: int, hosts: tuple[str, ...] = HOSTS
) -> None:
    (root / "meta" / "json").mkdir(parents=True)
    for category in ("dresses", "skirts"):
        for kind in ("train_pairs", "test_pairs", "retrieval"):
            name = f"{kind}_{category}.json"
            (root / "meta" / "json" / name).symlink_to(META / name)
    lines = []
    for photo, kind in sorted(route.items()):
        if kind == "unlisted":
            continue
        if kind == "dead":
            lines.append(f"{photo:09d},http://{DEAD_HOST}:{dead_port}/ok/{photo}.jpg")
        else:
            index = photo % len(hosts)
            lines.append(f"{photo:09d},http://{hosts[index]}:{ports[index]}/{kind}/{photo}.jpg?v=1")
    (root / "photos.txt").write_text("\n".join(lines) + "\n")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((DEAD_HOST, 0))
        return sock.getsockname()[1]


def stats(port: int) -> dict:
    import requests

    return requests.get(f"http://{HOSTS[0]}:{port}/_stats", timeout=10).json()


class Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


class ProductClock:
    """Polls the database file for the number of seeded products, noting when it first reached each count."""

    def __init__(self, database: Path, category: str, began: float) -> None:
        self.database, self.category, self.began = database, category, began
        self.reached: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ProductClock:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import sqlite3

        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        try:
            while not self._stop.wait(0.2):
                try:
                    (count,) = connection.execute(
                        "SELECT COUNT(*) FROM shop_product WHERE category = ?", (self.category,)
                    ).fetchone()
                except sqlite3.OperationalError:
                    continue  # locked by a writer for longer than the timeout: look again
                for number in range(len(self.reached) + 1, count + 1):
                    self.reached[number] = time.perf_counter() - self.began
        finally:
            connection.close()

    def at(self, count: int) -> str:
        return f"{self.reached[count]:.1f} s" if count in self.reached else "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("four-hosts", "one-host"), default="four-hosts")
    parser.add_argument("--limit", type=int, default=None, help="default: 500 (four-hosts), 60 (one-host)")
    parser.add_argument(
        "--workers", type=int, default=None, help="default: 8 (four-hosts), DOWNLOAD_WORKERS (one-host)"
    )
    parser.add_argument("--latency", type=float, default=0.02, help="seconds each server waits per request")
    parser.add_argument("--seed", type=int, default=2015)
    parser.add_argument("--timeout", type=float, default=None, help="interrupt a run after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not META.is_dir():
        raise SystemExit(f"{META} is absent: this benchmark needs the real Street2Shop metadata")
    one_host = args.scenario == "one-host"
    limit = args.limit or (60 if one_host else 500)
    hosts = HOSTS[:1] if one_host else HOSTS

    work = Path(tempfile.mkdtemp(prefix="bench-seed-download-"))
    started = time.perf_counter()
    expected = plan(args.seed, args.scenario)
    route = expected["route"]
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=serve, args=(expected["sizes"], args.latency, ready, hosts), daemon=True)
    server.start()
    redis_server = None
    try:
        ports = ready.get(timeout=300)
        print(f"servers ready in {time.perf_counter() - started:.0f} s on ports {ports}; work folder {work}")
        write_dataset(work / "s2s", route, ports, closed_port(), hosts)
        kinds = Counter(route.values())
        print(
            f"photos.txt routes: {dict(sorted(kinds.items()))}; dead-retailer products: "
            f"{len(expected['dead_products'])}"
        )

        from shop.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(work / "redis").start()
        database = work / "data" / "db.sqlite3"
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "shop.settings",
                "DEBUG": "true",
                "DATA_DIR": str(work / "data"),
                "DATABASE_URL": f"sqlite:///{database}",
                "CELERY_BROKER_URL": redis_server.url,
                "REDIS_URL": redis_server.url,
                "DOWNLOAD_ALLOWED_HOSTS": ",".join((*hosts, DEAD_HOST)),  # the benchmark's photo servers
                "LOG_LEVEL": "WARNING",
            }
        )
        if not one_host:  # the one-host scenario keeps every default, as a new user would
            os.environ.update(
                {
                    "DOWNLOAD_READ_TIMEOUT": str(READ_TIMEOUT),
                    "DOWNLOAD_RETRIES": "2",
                    "DOWNLOAD_BACKOFF_BASE": "0.1",
                    "DOWNLOAD_BACKOFF_MAX": "1",
                }
            )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        command = [
            "seed_street2shop",
            "--root",
            str(work / "s2s"),
            "--category",
            "dresses",
            "--download",
            "--limit",
            str(limit),
        ]
        if args.workers:
            command += ["--workers", str(args.workers)]
        elif not one_host:
            command += ["--workers", "8"]
        from shop.models import PhotoDownload, Product

        outputs = []
        interrupted = False
        # A shell starts background jobs with SIGINT ignored, which would make interrupt_main do nothing.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for run in (1, 2):
            before = stats(ports[0])["total"]
            out = io.StringIO()
            print(f"\n=== run {run}: {' '.join(command)}")
            began = time.perf_counter()
            timer = threading.Timer(args.timeout, _thread.interrupt_main) if args.timeout else None
            with ProductClock(database, "dresses", began) as clock:
                if timer is not None:
                    timer.start()
                try:
                    call_command(*command, stdout=Tee(sys.stdout, out))
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    if timer is not None:
                        timer.cancel()
                seconds = time.perf_counter() - began
            requests_made = stats(ports[0])["total"] - before
            outputs.append((out.getvalue(), seconds, requests_made))
            print(
                f"run {run}: {seconds:.1f} s wall{' (interrupted)' if interrupted else ''}, "
                f"{requests_made} requests to the servers"
            )
            if run == 1:
                print(
                    f"run 1: first product after {clock.at(1)}, {limit} products after {clock.at(limit)}, "
                    f"end after {seconds:.1f} s; {len(clock.reached)} products seeded"
                )
            if interrupted:
                break

        seeded = set(Product.objects.filter(category="dresses").values_list("s2s_product_id", flat=True))
        want = set(expected["good"][:limit])
        served = stats(ports[0])["photos"]
        skirt_requests = sum(served.get(str(photo), 0) for photo in expected["skirt_only"])
        outcomes = Counter(PhotoDownload.objects.values_list("outcome", flat=True))
        import redis

        queued = redis.Redis.from_url(redis_server.url).llen("celery")
        print("\n=== checks")
        print(
            f"products seeded: {len(seeded)}; expected (first {limit} good in seeding order): {len(want)}; "
            f"identical: {seeded == want}"
        )
        if seeded != want:
            print(f"  unexpected: {sorted(seeded - want)[:20]}  missing: {sorted(want - seeded)[:20]}")
        last = expected["good"][limit - 1]
        processed = expected["order"][: expected["order"].index(last) + 1]
        print(
            f"candidates processed: {len(processed)} (products {processed[0]}..{last} in seeding order), "
            f"{len(processed) - len(want)} of them without a good shop photo"
        )
        print(f"requests for skirt-only photos: {skirt_requests}")
        if len(outputs) > 1:
            print(f"second run requests: {outputs[1][2]}")
        print(f"PhotoDownload rows by outcome: {dict(sorted(outcomes.items()))}")
        print(f"indexing tasks waiting in the embedded Redis: {queued}")
        ok = not interrupted and seeded == want and skirt_requests == 0 and outputs[1][2] == 0
        print("RESULT:", "PASS" if ok else "FAIL")
        if not ok:
            raise SystemExit(1)
    finally:
        if redis_server is not None:
            redis_server.stop()
        server.terminate()
        server.join()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
