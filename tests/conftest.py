"""Shared fixtures: a real Redis broker and a real Celery worker process on the test database."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[1]


# Connects the code under test tried outside the loopback range; each test must leave it empty.
BLOCKED_CONNECTS: list[str] = []


def _is_loopback(family: int, address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        infos = socket.getaddrinfo(host, None, family)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%", 1)[0]).is_loopback for info in infos)


@pytest.fixture
def model_storage(settings, tmp_path):
    """The "models" storage in this test's own folder (a folder store, overwriting in place as a bucket does)."""
    from django.core.files.storage import storages

    settings.STORAGES = {
        **settings.STORAGES,
        "models": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "models", "allow_overwrite": True},
        },
    }
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"
    return storages["models"]


@pytest.fixture(scope="session", autouse=True)
def _loopback_only():
    """The suite sends traffic to loopback addresses only: any other connect raises before a packet
    leaves, and is recorded so that the test fails even where the code under test swallows the error."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(sock.family, address):
            BLOCKED_CONNECTS.append(repr(address))
            raise ConnectionRefusedError(f"test guard: no connects outside 127.0.0.0/8 and ::1, not {address!r}")

    def connect(sock, address):
        guard(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock, address):
        guard(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    yield
    socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex


@pytest.fixture(autouse=True)
def _no_blocked_connects():
    BLOCKED_CONNECTS.clear()
    yield
    assert not BLOCKED_CONNECTS, f"the code tried to connect outside the loopback range: {BLOCKED_CONNECTS}"


@pytest.fixture(scope="session", autouse=True)
def _test_run_dir():
    """Remove this run's folder (database file, media) after everything else is torn down."""
    from django.conf import settings

    yield
    run_dir = Path(settings.TEST_RUN_DIR)
    if run_dir.name.startswith("fashion-test-") and not os.environ.get("KEEP_TEST_RUN_DIR"):
        shutil.rmtree(run_dir, ignore_errors=True)


def pytest_sessionfinish(session) -> None:
    """Under xdist the controller runs no test: remove the (empty) folder its settings made."""
    if getattr(session.config.option, "numprocesses", None) and not hasattr(session.config, "workerinput"):
        from django.conf import settings

        with contextlib.suppress(OSError):
            Path(settings.TEST_RUN_DIR).rmdir()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """REDIS_URL where set (CI points it at a spare database), else an embedded redis-server."""
    from shop.embedded_redis import EmbeddedRedis, ping

    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    server = None
    if url:
        if not ping(url):
            pytest.fail(f"REDIS_URL={url} does not answer")
    else:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
        url = server.url
    redis.Redis.from_url(url).flushdb()  # no stale tasks from an earlier run
    from workers.celery import app

    app.conf.broker_url = url
    yield url
    if server:
        server.stop()


def _database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if engine.endswith("postgresql"):
        user = settings_dict.get("USER") or ""
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        return f"postgres://{auth}{settings_dict.get('HOST') or '127.0.0.1'}:{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}"
    raise RuntimeError(f"no worker database URL for {engine}")


class WorkerProcess:
    """A real `celery -A workers worker` (prefork) subprocess on the test database and broker."""

    def __init__(self, *, env: dict, queues: str, name: str, log, cwd: Path = REPO) -> None:
        self.log = log
        self.name = f"{name}@{socket.gethostname()}"
        self._handle = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool=prefork",
                "--concurrency=1",
                f"--queues={queues}",
                f"--hostname={self.name}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=cwd,
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as an OOM killer or a pulled plug would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        from workers.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the Celery worker {self.name} exited early:\n{self.log.read_text()[-4000:]}")
            if app.control.ping(destination=[self.name], timeout=1.0):
                return self
        self.process.kill()
        pytest.fail(f"the Celery worker {self.name} did not answer:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._handle.close()


@pytest.fixture(scope="session")
def worker_env(redis_url, django_db_setup, django_db_blocker) -> dict:
    """The environment a worker needs to share the test run's database, broker, media and models."""
    from django.conf import settings
    from django.db import connection

    with django_db_blocker.unblock():
        database_url = _database_url(connection.settings_dict)
    name, test_name = str(connection.settings_dict["NAME"]), (connection.settings_dict.get("TEST") or {}).get("NAME")
    if name != str(test_name) and not name.startswith("test_"):
        pytest.fail(
            "the worker would open the development database: mark tests that use the live stack "
            "with tests.conftest.LIVE_STACK, so pytest-django sets up the test database"
        )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "TEST_MODEL_STORE": str(settings.MODEL_STORE),
        "TEST_RUN_DIR": str(settings.TEST_RUN_DIR),
    }


@pytest.fixture(scope="session")
def celery_worker_process(worker_env, tmp_path_factory):
    """The session's worker for the default and search queues."""
    worker = WorkerProcess(
        env=worker_env, queues="celery,search", name="tests", log=tmp_path_factory.mktemp("worker") / "worker.log"
    ).wait_ready()
    yield worker.process
    worker.stop()
    print(f"worker log: {worker.log}")


def wait_for(predicate, *, timeout: float = 180.0, interval: float = 0.5, message: str = "condition"):
    """Poll until predicate() is truthy; the worker runs in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


DEMO_PRODUCTS = 40  # dresses; plus relisted copies of some of them
DEMO_SKIRTS = 12
# Relisted copies (near-duplicate listings): 4 dresses and 1 skirt, some twice.
DEMO_DUPLICATES = 0.1

# For tests that use the database only through the live server and the workers, never in their own
# process. The marker makes pytest-django create the test database (it creates none when no collected
# test asks for one, and the worker and server would then open the development database), without a
# test transaction: on SQLite the shop's transactions are IMMEDIATE, so a test wrapped in one would hold
# the write lock for its whole run. transaction=True flushes after each test; available_apps=[] makes
# that flush cover no table, so a module's catalogue stays for its next test.
LIVE_STACK = pytest.mark.django_db(transaction=True, available_apps=[])


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    from django.core.management import call_command

    root = tmp_path_factory.mktemp("demo")
    call_command(
        "make_demo_dataset",
        str(root),
        products=DEMO_PRODUCTS,
        skirts=DEMO_SKIRTS,
        duplicates=DEMO_DUPLICATES,
        seed=11,
        stdout=io.StringIO(),
    )
    return root


def demo_listings(root: Path, category: str) -> int:
    """Products of a category in a demo dataset (relisted copies included)."""
    import json

    return len(
        {row["product"] for row in json.loads((root / "meta" / "json" / f"retrieval_{category}.json").read_text())}
    )


@pytest.fixture(scope="module")
def indexed_catalogue(demo_root, celery_worker_process, django_db_blocker):
    """The demo catalogue seeded, indexed by the worker and trained through the admin's button."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from shop.models import ModelVersion

    with django_db_blocker.unblock():
        for category in ("dresses", "skirts"):
            call_command("seed_street2shop", root=str(demo_root), category=category, stdout=io.StringIO())
            call_command("index_catalogue", category=category, wait=True, stall_timeout=240, stdout=io.StringIO())
        admin = User.objects.create_superuser("root", "root@example.com", "pw")
        client = Client()
        client.force_login(admin)
        # The button with no category (an older form) trains dresses; then the skirts' own run.
        dresses = _train_through_the_admin(client, {})
        before = ModelVersion.objects.values().get(pk=dresses.pk)
        skirts = _train_through_the_admin(client, {"category": "skirts"})
        assert (dresses.category, skirts.category) == ("dresses", "skirts")
        # Each category trains, gates and activates its own model: the dresses' is untouched.
        assert ModelVersion.objects.values().get(pk=dresses.pk) == before
    yield dresses
    with django_db_blocker.unblock():
        # The fixture committed its rows: wipe them so later modules start clean.
        call_command("flush", interactive=False, verbosity=0)


def _train_through_the_admin(client, data: dict):
    from django.urls import reverse

    from shop.models import ModelVersion

    known = set(ModelVersion.objects.values_list("pk", flat=True))
    response = client.post(reverse("admin:shop_modelversion_train"), data)
    assert response.status_code == 302
    version = ModelVersion.objects.exclude(pk__in=known).get()
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status__in=["active", "failed"]).exists(),
        timeout=600,
        message=f"the {version.category} training run",
    )
    version.refresh_from_db()
    assert version.status == "active", version.error
    return version


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveShop:
    """The shop's real web server (gunicorn) on 127.0.0.1, with DEBUG off and production headers."""

    def __init__(self, *, env: dict, log: Path, extra_env: dict | None = None, cwd: Path = REPO) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._handle = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "shop.wsgi:application",
                f"--bind=127.0.0.1:{self.port}",
                "--worker-class=gthread",
                "--workers=2",
                "--threads=4",
                "--timeout=60",
                "--graceful-timeout=5",
                "--no-control-socket",
            ],
            cwd=cwd,
            env={**env, **(extra_env or {})},
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> LiveShop:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the web server exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # still starting, on a busy machine
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the web server did not answer:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._handle.close()


def production_env(worker_env: dict, redis_url: str) -> dict:
    """The live server's environment: DEBUG off, a real key, counters on Redis.

    Plain HTTP on 127.0.0.1 stands in for a shop behind a TLS proxy, so the HTTPS redirect and
    secure-only cookies are relaxed through their variables; every other production default holds.
    """
    return {
        **worker_env,
        "DEBUG": "false",
        "SECRET_KEY": "live-test-" + "s3cr3t-" * 8,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "CACHE_URL": redis_url,
        "CACHE_KEY_PREFIX": f"live-{free_port()}",  # each server its own rate counters
    }


@pytest.fixture(scope="module")
def live_shop(worker_env, redis_url, celery_worker_process, tmp_path_factory):
    """The web server on the test database, broker and session worker; 10 uploads a minute, media served."""
    # SERVE_MEDIA: catalogue photos come from Django here; a shop serves them from its web server or a bucket.
    shop = LiveShop(
        env=production_env(worker_env, redis_url),
        log=tmp_path_factory.mktemp("web") / "web.log",
        extra_env={"SEARCH_RATE_LIMIT": "10/m", "SERVE_MEDIA": "true", "GUNICORN_CMD_ARGS": "--access-logfile=-"},
    ).wait_ready()
    yield shop
    shop.stop()
    print(f"web server log: {shop.log}")


# --- the fast lane ---------------------------------------------------------------------------------

# Fixtures that start a broker, a worker, a web server or the demo catalogue: a test using one is slow.
SLOW_FIXTURES = frozenset({"redis_url", "worker_env", "celery_worker_process", "indexed_catalogue", "live_shop"})
# Modules that build or run Keras models (VGG19, the siamese tower) in the test process.
SLOW_MODULES = frozenset(
    {
        "tests/similarity/test_backbone.py",
        "tests/similarity/test_backbones_extra.py",
        "tests/similarity/test_precision.py",
        "tests/similarity/test_siamese.py",
        "tests/similarity/test_training_design.py",
        "tests/similarity/test_streaming_evaluation.py",
    }
)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark slow what needs a worker, a broker or a Keras model; `pytest -m "not slow"` is the fast lane."""
    root = Path(str(config.rootpath))
    for item in items:
        module = Path(str(item.path)).relative_to(root).as_posix()
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
