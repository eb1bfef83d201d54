"""Indexing one catalogue with 1 and with 2 Celery worker processes: images/s and each worker's share.

Not a test. Run: .venv/bin/python benchmarks/bench_workers.py --products 120 --skirts 0 [--threads-per-worker 1]

Makes a demo dataset once (the demo's generator, dresses only are seeded and indexed), saves the seeded random
backbone to a model store shared by every worker, then for each worker count: a fresh database (SQLite under a
temporary DATA_DIR, or a new database on the PostgreSQL server DATABASE_URL names, created and dropped here), the
dresses seeded, N separate `celery -A workers worker --concurrency=1` processes started, each in an empty folder of
its own with only PYTHONPATH pointing at the repository (as a worker on another host would be; they share the
database, the broker, DATA_DIR's photos and MODEL_STORE), and `index_catalogue --category dresses --wait` timed from
enqueue to done. Each worker's log says which tasks it ran and how many images each stored.

The broker is a dedicated database of REDIS_URL's server (--redis-db, flushed first and last), else an embedded
redis-server. Each worker loads the backbone before the clock starts (a long-running worker pays that once), so
the figure is indexing throughput. VGG19 already keeps both cores of a 2-core machine busy from one process:
expect little gain here; the point is that the work splits across hosts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CATEGORY = "dresses"
# Long enough for a worker to finish the task it holds (a warm shutdown) on a busy machine.
STOP_TIMEOUT = 120.0
READY_TIMEOUT = 180.0
CELERY_TIME = "%Y-%m-%d %H:%M:%S,%f"
# Celery's line for a finished task; the index tasks return how many images they stored.
SUCCEEDED = re.compile(
    r"^\[(?P<at>[\d-]+ [\d:,]+): INFO/[^\]]*\] Task (?P<task>[\w.]+)\[(?P<id>[\w-]+)\] "
    r"succeeded in (?P<seconds>[\d.e+-]+)s: (?P<value>.*)$"
)
# shop.runtime's line once a worker has its backbone.
LOADED = re.compile(r"loaded backbone (?P<weights>\S+) in (?P<precision>\w+) \((?P<reason>.*)\)")
PROBLEM = re.compile(r"ERROR|CRITICAL|Traceback|database is locked|WorkerLostError")


# --- what a round measures ----------------------------------------------------------------------------------


@dataclass
class WorkerShare:
    """One worker's part of a timed pass, read from its log."""

    name: str
    tasks: int = 0
    images: int = 0
    busy_s: float = 0.0
    last_done: str | None = None  # Celery's timestamp of its last finished task
    problems: list[str] = field(default_factory=list)


@dataclass
class Round:
    """A timed pass of index_catalogue with `workers` worker processes."""

    workers: int
    images: int
    seconds: float
    last_task_s: float
    load_s: list[float]
    backbone: str
    shares: list[WorkerShare]

    @property
    def images_per_s(self) -> float:
        return self.images / self.last_task_s

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Round:
        return cls(**{**data, "shares": [WorkerShare(**share) for share in data["shares"]]})


# --- the parent: machine, broker, databases, dataset ---------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def machine() -> str:
    """lscpu's model name, CPUs and cores, and the load average (the figures depend on both)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{os.cpu_count()} CPUs (no lscpu)"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}
    cores = int(fields.get("Core(s) per socket", "0")) * int(fields.get("Socket(s)", "0"))
    return f"{fields.get('Model name', 'unknown CPU')}, {fields.get('CPU(s)', '?')} CPUs, {cores} cores"


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def postgres_admin(server_url: str, statement: str) -> None:
    """Run a CREATE or DROP DATABASE on the server's maintenance database (outside a transaction)."""
    import psycopg

    with psycopg.connect(with_path(server_url, "/postgres"), autocommit=True) as admin:
        admin.execute(statement)


def fresh_database(server_url: str | None, round_dir: Path, name: str) -> str:
    """A new empty database for one round: a SQLite file, or a database made on the PostgreSQL server."""
    if server_url is None:
        return f"sqlite:///{round_dir / 'db.sqlite3'}"
    postgres_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres_admin(server_url, f'CREATE DATABASE "{name}"')
    return with_path(server_url, f"/{name}")


def postgres_server() -> str | None:
    """DATABASE_URL's server, where set; the database it names is never touched."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return None
    if urlsplit(url).scheme not in ("postgres", "postgresql", "pgsql"):
        raise SystemExit(f"DATABASE_URL={url}: this benchmark needs a PostgreSQL server (or no DATABASE_URL: SQLite)")
    return url


def broker_url(root: Path, redis_db: int) -> tuple[str, Any]:
    """REDIS_URL's server with database `redis_db`, flushed; else an embedded redis-server (returned to stop)."""
    import redis

    from shop.embedded_redis import EmbeddedRedis, ping

    configured = os.environ.get("REDIS_URL", "")
    if not configured:
        server = EmbeddedRedis(root / "redis").start()
        return server.url, server
    url = with_path(configured, f"/{redis_db}")
    if not ping(url):
        raise SystemExit(f"REDIS_URL is set but {url} does not answer")
    redis.Redis.from_url(url).flushdb()  # no stale tasks from an earlier run
    return url, None


def make_dataset(out_dir: Path, args: argparse.Namespace) -> str:
    from shop.street2shop.demo.dataset import generate_dataset

    started = time.perf_counter()
    summary = generate_dataset(
        out_dir,
        n_products=args.products,
        n_skirts=args.skirts,
        seed=args.seed,
        duplicates=args.duplicates,
        workers=min(4, os.cpu_count() or 1),
    )
    return (
        f"demo dataset: {summary.products} dresses, {summary.duplicates} relisted copies, {summary.shop_photos} shop "
        f"and {summary.street_photos} street photos, made in {time.perf_counter() - started:.0f} s"
    )


def base_env(root: Path, broker: str, args: argparse.Namespace) -> dict[str, str]:
    """What every child and worker shares: settings, broker, the model store, the backbone and its threads."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "DEBUG": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "CELERY_BROKER_URL": broker,
        "REDIS_URL": broker,
        "CACHE_URL": broker,
        "MODEL_STORE": str(root / "models"),
        # The seeded random backbone unless told otherwise: no download attempt on an offline machine.
        "BACKBONE_WEIGHTS": os.environ.get("BACKBONE_WEIGHTS", "random"),
        "BACKBONE_ALLOW_DOWNLOAD": "false",
        "BACKBONE_PRECISION": args.precision,
        "LOG_LEVEL": "INFO",  # the workers' per-batch lines; shop.runtime names the precision at INFO
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if args.threads_per_worker:
        # The project sets no TensorFlow thread count; these are TensorFlow's and OpenMP's own variables.
        threads = str(args.threads_per_worker)
        env |= {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads}
    return env


def run_child(kind: str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    """This script again as `--child kind`, in a fresh process (own settings, no TensorFlow kept in the parent)."""
    result = Path(env["DATA_DIR"]) / f"{kind}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--result", str(result), *extra]
    process = subprocess.Popen(command, env=env)
    try:
        if process.wait():
            raise SystemExit(f"the {kind} child failed with exit code {process.returncode}")
    except KeyboardInterrupt:
        # Not subprocess.run's SIGKILL: the child must stop its workers, which live in sessions of their own.
        process.terminate()
        process.wait(timeout=STOP_TIMEOUT + 30)
        raise
    data: dict[str, Any] = json.loads(result.read_text())
    return data


# --- the children: Django set up on the round's DATA_DIR and database ----------------------------------------


def setup_django() -> None:
    import django

    django.setup()


def warm_backbone() -> dict[str, Any]:
    """Load the backbone once so the weights file exists in MODEL_STORE before any worker starts."""
    from django.conf import settings

    from shop import runtime

    started = time.perf_counter()
    backbone = runtime.get_backbone()
    return {
        "weights_id": backbone.weights_id,
        "precision": backbone.precision,
        "setting": settings.BACKBONE_PRECISION,
        "seconds": time.perf_counter() - started,
    }


@dataclass
class Worker:
    """One `celery worker` process, started in an empty folder of its own."""

    number: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return f"w{self.number}@{socket.gethostname()}"

    @property
    def warm_queue(self) -> str:
        return f"warm.w{self.number}"


def start_worker(number: int, *, env: dict[str, str], round_dir: Path) -> Worker:
    cwd = Path(tempfile.mkdtemp(prefix=f"w{number}-cwd-", dir=round_dir))
    log = round_dir / f"w{number}.log"
    # A queue of its own besides `celery`, only for the warm-up task: the shared queue cannot aim one at each.
    command = [
        *(sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel=INFO", "--concurrency=1"),
        f"--queues=celery,warm.w{number}",
        f"--hostname=w{number}@{socket.gethostname()}",  # %h, expanded here so a ping can name it
    ]
    # Its own model cache too, as on a host of its own (a local MODEL_STORE is read in place all the same).
    own = {**env, "MODEL_CACHE_DIR": str(cwd / "model-cache")}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=cwd, env=own, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Worker(number, log, process)


def log_tail(worker: Worker, chars: int = 3000) -> str:
    return worker.log.read_text(errors="replace")[-chars:]


def wait_ready(worker: Worker) -> None:
    from workers.celery import app

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker {worker.name} exited early:\n{log_tail(worker)}")
        if app.control.ping(destination=[worker.name], timeout=1.0):
            return
    raise RuntimeError(f"worker {worker.name} did not answer:\n{log_tail(worker)}")


def warm_workers(workers: list[Worker]) -> list[float]:
    """Each worker loads its backbone (an index task with no ids does only that); seconds each took."""
    from shop.services.enqueue import INDEX_PRODUCTS
    from workers.celery import app

    sent = {w.number: app.send_task(INDEX_PRODUCTS, args=[[]], queue=w.warm_queue).id for w in workers}
    seconds: dict[int, float] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    while len(seconds) < len(workers) and time.monotonic() < deadline:
        for worker in workers:
            for match in succeeded_lines(worker.log.read_text(errors="replace")):
                if match["id"] == sent[worker.number]:
                    seconds[worker.number] = float(match["seconds"])
        time.sleep(0.2)
    if len(seconds) < len(workers):
        raise RuntimeError("a worker did not finish its warm-up task")
    return [seconds[w.number] for w in workers]


def succeeded_lines(text: str) -> list[re.Match[str]]:
    return [match for line in text.splitlines() if (match := SUCCEEDED.match(line))]


def stop_workers(workers: list[Worker]) -> None:
    """SIGTERM (a warm shutdown: the running task finishes), then SIGKILL to the group of one still there."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        try:
            worker.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()


def read_share(worker: Worker, offset: int) -> WorkerShare:
    """The tasks a worker finished after `offset` in its log, the images they stored, their run time."""
    text = worker.log.read_text(errors="replace")[offset:]
    share = WorkerShare(worker.name)
    for match in succeeded_lines(text):
        share.tasks += 1
        share.images += int(match["value"]) if match["value"].isdigit() else 0
        share.busy_s += float(match["seconds"])
        share.last_done = max(share.last_done or "", match["at"])
    share.problems = [line for line in text.splitlines() if PROBLEM.search(line)][:5]
    return share


def backbone_line(workers: list[Worker]) -> str:
    """What the first worker said it loaded: weights, precision and why."""
    match = LOADED.search(workers[0].log.read_text(errors="replace"))
    return f"{match['weights']} in {match['precision']} ({match['reason']})" if match else "unknown (no log line)"


def timed_index(workers: list[Worker]) -> tuple[float, float, list[WorkerShare]]:
    """index_catalogue --wait timed from enqueue to done; also until the last task ended (read once stopped)."""
    from django.core.management import call_command

    offsets = [len(w.log.read_text(errors="replace")) for w in workers]
    started_at = datetime.now()  # Celery's log times are local and naive too
    started = time.perf_counter()
    call_command("index_catalogue", category=CATEGORY, wait=True, stdout=io.StringIO())
    seconds = time.perf_counter() - started
    # The command stops once every feature is stored; the last product task still updates colours and
    # duplicate groups, and its log line comes after. A warm shutdown lets it finish first.
    stop_workers(workers)
    shares = [read_share(w, offset) for w, offset in zip(workers, offsets)]
    ends = [datetime.strptime(s.last_done, CELERY_TIME) for s in shares if s.last_done]
    last_task_s = (max(ends) - started_at).total_seconds() if ends else seconds
    return seconds, last_task_s, shares


def index_round(count: int, dataset: Path) -> Round:
    """Migrate, seed, start `count` workers, warm them, time the indexing pass, stop them."""
    from django.core.management import call_command

    from shop import selectors
    from workers.celery import app

    round_dir = Path(os.environ["DATA_DIR"])
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_street2shop", root=dataset, category=CATEGORY, quiet=True, stdout=io.StringIO())
    # Seeding queued its own index tasks; index_catalogue queues everything again, and that pass is the one timed.
    app.control.purge()
    env = {**os.environ}
    workers: list[Worker] = []
    try:
        workers = [start_worker(number, env=env, round_dir=round_dir) for number in range(1, count + 1)]
        for worker in workers:
            wait_ready(worker)
        load_s = warm_workers(workers)
        seconds, last_task_s, shares = timed_index(workers)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the workers' shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_workers(workers)
    progress = selectors.indexing_progress(category=CATEGORY)
    images = progress["shop_images_done"] + progress["street_photos_done"]
    return Round(count, images, seconds, last_task_s, load_s, backbone_line(workers), shares)


def child(kind: str, result: Path, args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    setup_django()
    data = warm_backbone() if kind == "warm" else asdict(index_round(args.round, args.dataset))
    result.write_text(json.dumps(data))


# --- the report -----------------------------------------------------------------------------------------------


def print_round(result: Round) -> None:
    print(
        f"\n{result.workers} worker(s): {result.images} images indexed in {result.last_task_s:.1f} s "
        f"(index_catalogue returned after {result.seconds:.1f} s; it polls once a second): "
        f"{result.images_per_s:.2f} images/s"
    )
    print(f"  workers' backbone: {result.backbone}")
    print("  backbone load before the clock: " + ", ".join(f"{s:.1f} s" for s in result.load_s))
    total_tasks = sum(s.tasks for s in result.shares) or 1
    total_images = sum(s.images for s in result.shares) or 1
    for share in result.shares:
        print(
            f"  {share.name}: {share.tasks} tasks ({100 * share.tasks / total_tasks:.0f} %), "
            f"{share.images} images ({100 * share.images / total_images:.0f} %), busy {share.busy_s:.1f} s"
        )
        for line in share.problems:
            print(f"    problem: {line.strip()[:200]}")


def print_summary(rounds: list[Round]) -> None:
    print("\n| workers | images | seconds | images/s | vs 1 worker |")
    print("| --- | --- | --- | --- | --- |")
    single = next((r for r in rounds if r.workers == 1), None)
    for result in rounds:
        ratio = f"{result.images_per_s / single.images_per_s:.2f}x" if single else "—"
        print(
            f"| {result.workers} | {result.images} | {result.last_task_s:.1f} | {result.images_per_s:.2f} | {ratio} |"
        )


# --- main -----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    from similarity.precision import PRECISION_SETTINGS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=120, help="dresses in the demo dataset")
    parser.add_argument("--skirts", type=int, default=0, help="skirts written to the dataset (not indexed here)")
    parser.add_argument("--duplicates", type=float, default=0.1, help="relisted share, as the demo (0.1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=0,
        help="TF_NUM_INTRAOP_THREADS and OMP_NUM_THREADS of each worker (default: TensorFlow's, one per core)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        default=os.environ.get("BACKBONE_PRECISION", "auto"),
        help="BACKBONE_PRECISION for the workers",
    )
    parser.add_argument("--redis-db", type=int, default=14, help="database of REDIS_URL's server to use (flushed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs) for a look")
    parser.add_argument("--child", choices=["warm", "round"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(root: Path, args: argparse.Namespace, server: str | None, databases: list[str]) -> list[Round]:
    """The dataset and the warm model store once, then one round per worker count."""
    broker, embedded = broker_url(root, args.redis_db)
    try:
        print(f"broker: {broker} ({'embedded redis-server' if embedded else 'REDIS_URL'})", flush=True)
        print(make_dataset(root / "dataset", args), flush=True)
        env = base_env(root, broker, args)
        (root / "warm").mkdir()
        warm = run_child("warm", {**env, "DATA_DIR": str(root / "warm"), "DATABASE_URL": "sqlite:///:memory:"})
        print(
            f"backbone: {warm['weights_id']}, {warm['precision']} (BACKBONE_PRECISION={warm['setting']}); "
            f"weights saved to MODEL_STORE in {warm['seconds']:.0f} s",
            flush=True,
        )
        rounds = []
        # Counts may repeat (1 2 1 2): alternating rounds show how much of a difference is the machine's noise.
        for number, count in enumerate(args.workers):
            round_dir = root / f"round-{number}-{count}"
            round_dir.mkdir()
            name = f"bench_workers_{os.getpid()}_{number}_{count}"
            database = fresh_database(server, round_dir, name)
            if server:
                databases.append(name)
            round_env = {**env, "DATA_DIR": str(round_dir), "DATABASE_URL": database}
            print(f"\nround with {count} worker(s) ({load()})…", flush=True)
            data = run_child("round", round_env, "--round", str(count), "--dataset", str(root / "dataset"))
            rounds.append(Round.from_json(data))
            print_round(rounds[-1])
        return rounds
    finally:
        if embedded:
            embedded.stop()
        else:
            import redis

            redis.Redis.from_url(broker).flushdb()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.result, args)
        return
    signal.signal(signal.SIGTERM, _interrupt)
    server = postgres_server()
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    databases: list[str] = []
    print(f"CPU: {machine()}; {load()}")
    threads = args.threads_per_worker or "TensorFlow's default (one per core)"
    print(f"TF intra-op threads per worker: {threads}; database: {'PostgreSQL' if server else 'SQLite'}")
    try:
        rounds = measure(root, args, server, databases)
        print_summary(rounds)
        print(f"\n{load()} at the end")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        for name in databases:
            assert server is not None
            postgres_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
