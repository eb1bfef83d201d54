"""Past one machine: two workers that share no disk, media and models in an S3 bucket.

The end-to-end path (seed, index, train, a shopper's upload) runs against a real S3 API (moto's
server on 127.0.0.1), PostgreSQL and a Redis database of its own. Every process (two workers, the
web server, the management commands) starts in its own empty folder with its own DATA_DIR and
model cache: the only things they share are the bucket, the database and the broker. Each runs
with tests/hostguard on its path, which makes any connect outside the loopback range raise and
records it; the S3 client gets its endpoint, region and dummy keys explicitly and
AWS_EC2_METADATA_DISABLED, so not even a credentials lookup may leave the machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import LIVE_STACK, REPO, LiveShop, WorkerProcess, free_port, production_env, wait_for

pytestmark = LIVE_STACK

BUCKET = "fashion-similarity-test"
REGION = "eu-west-1"
KEYS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret"}
HOSTS = ("host-a", "host-b")


@pytest.fixture(scope="module")
def postgres(django_db_setup, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip(
                "needs PostgreSQL (set DATABASE_URL, as .ci/run does): hosts that share no disk share no SQLite file"
            )


@pytest.fixture(scope="module")
def bucket():
    """A real S3 API (moto's server) on 127.0.0.1, with an empty bucket; its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **_boto_keys())
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield endpoint
    server.stop()


def _boto_keys() -> dict[str, str]:
    return {"aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture(scope="module")
def hosts_env(postgres, worker_env, redis_url, bucket, tmp_path_factory):
    """What every process of the layout shares: the database, a broker database of its own (the
    session's worker must not take these tasks), the bucket, and the loopback guard."""
    broker = redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(broker).flushdb()
    guard_log = tmp_path_factory.mktemp("guard") / "blocked.log"
    guard_log.touch()
    shared = {key: value for key, value in worker_env.items() if key not in ("TEST_MODEL_STORE", "TEST_RUN_DIR")}
    env = {
        **shared,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "hostguard"), str(REPO)]),
        "LOOPBACK_GUARD_LOG": str(guard_log),
        "CELERY_BROKER_URL": broker,
        "REDIS_URL": broker,
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": bucket,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        **KEYS,
    }
    _prove_the_guard_is_on(env, guard_log)
    return env


def _prove_the_guard_is_on(env: dict, guard_log: Path) -> None:
    """A process started like the hosts' refuses a connect to 192.0.2.1 (TEST-NET-1) before any packet, and records it."""
    probe = "import socket; socket.create_connection(('192.0.2.1', 9), timeout=1)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd="/", capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "host guard: no connects outside" in done.stderr, done.stderr[-2000:]
    assert "192.0.2.1" in guard_log.read_text()
    guard_log.write_text("")


def host_env(shared: dict, root: Path) -> dict:
    """One host's environment: its own empty working folder, DATA_DIR and model cache."""
    for folder in ("data", "run", "model-cache"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return {
        **shared,
        "DATA_DIR": str(root / "data"),
        "TEST_RUN_DIR": str(root / "run"),
        "TEST_MODEL_CACHE_DIR": str(root / "model-cache"),
        # A model store folder that does not exist: nothing may be read from or written to it.
        "TEST_MODEL_STORE": str(root / "no-such-model-store"),
    }


@pytest.fixture(scope="module")
def layout(hosts_env, tmp_path_factory, demo_root, django_db_blocker):
    """Two workers on two "hosts", a web server on a third, the catalogue seeded, indexed and trained
    by commands run from a fourth; yields the hosts' folders, workers and the shop."""
    roots = {name: tmp_path_factory.mktemp(name) for name in (*HOSTS, "web", "admin")}
    workers = {
        name: WorkerProcess(
            env=host_env(hosts_env, roots[name]),
            # Each also listens on a queue of its own, so the test can hand one search to each.
            queues=f"celery,search,{name}",
            name=name,
            log=roots[name] / "worker.log",
            cwd=roots[name],
        )
        for name in HOSTS
    }
    shop = None
    try:
        for worker in workers.values():
            _wait_ready(worker, hosts_env["CELERY_BROKER_URL"])
        admin = host_env(hosts_env, roots["admin"])
        for command in (
            ["seed_street2shop", "--root", str(demo_root), "--category", "dresses"],
            ["index_catalogue", "--category", "dresses", "--wait", "--stall-timeout", "240"],
            ["train_model", "--category", "dresses", "--wait"],
        ):
            _manage(command, env=admin, cwd=roots["admin"])
        shop = LiveShop(
            env=production_env(host_env(hosts_env, roots["web"]), hosts_env["REDIS_URL"]),
            log=roots["web"] / "web.log",
            cwd=roots["web"],
        ).wait_ready()
        yield roots, workers, shop
    finally:
        if shop:
            shop.stop()
        for worker in workers.values():
            worker.stop()
            print(f"{worker.name} log: {worker.log}")
        with django_db_blocker.unblock():
            from django.core.management import call_command

            call_command("flush", interactive=False, verbosity=0)


def _wait_ready(worker: WorkerProcess, broker: str, timeout: float = 120) -> None:

    app = _broker_app(broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"{worker.name} exited early:\n{worker.log.read_text()[-4000:]}")
        if app.control.ping(destination=[worker.name], timeout=1.0):
            return
    pytest.fail(f"{worker.name} did not answer:\n{worker.log.read_text()[-4000:]}")


def _broker_app(broker: str):
    """A Celery client on the hosts' broker. Not the current app: the shop's tasks are shared tasks,
    and would otherwise send every later test's messages to this broker."""
    from celery import Celery

    return Celery("many-hosts-client", broker=broker, set_as_current=False)


def _manage(command: list[str], *, env: dict, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _objects(endpoint: str, prefix: str) -> dict[str, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **_boto_keys())
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def _search(shop: LiveShop, photo: bytes) -> dict:
    session = requests.Session()
    assert session.get(f"{shop.url}/search/", timeout=10).status_code == 200
    response = session.post(
        f"{shop.url}/search/",
        data={"csrfmiddlewaretoken": session.cookies["csrftoken"], "category": "dresses"},
        files={"image": ("street.jpg", photo, "image/jpeg")},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:2000]
    wait_url = f"{shop.url}{response.headers['Location']}wait/"
    return wait_for(
        lambda: (lambda body: body if body["status"] != "pending" else None)(session.get(wait_url, timeout=30).json()),
        timeout=300,
        message="the search",
    )


def test_it_runs_the_shop_on_a_bucket_with_two_workers_that_share_no_disk(
    layout, bucket, demo_root, hosts_env, django_db_blocker
):
    from shop.models import Feature, ModelVersion, Product, ProductImage

    roots, workers, shop = layout
    with django_db_blocker.unblock():
        version = ModelVersion.objects.get(category="dresses", status="active")
        images = list(ProductImage.objects.filter(product__category="dresses"))
        assert images and Feature.objects.filter(product_image__in=images).count() == len(images)
        product = Product.objects.filter(category="dresses").order_by("id").first()
    assert product is not None

    media, models = _objects(bucket, "media/"), _objects(bucket, "models/")
    # Every shop photo and its thumbnails are in the bucket, not on a host.
    assert {f"media/{image.image.name}" for image in images} <= set(media)
    assert {f"media/{image.thumbnail.name}" for image in images} <= set(media)
    assert f"models/{version.artifact_name}" in models
    assert any(key.endswith(".weights.h5") for key in models) and any(key.endswith(".sha256") for key in models)

    # Both hosts worked: each logged indexing batches it ran.
    for worker in workers.values():
        assert "workers.index_products" in worker.log.read_text(), f"{worker.name} indexed nothing"

    # Each host copied the backbone and the tower from the bucket once and keeps them, named by sha256.
    for name in HOSTS:
        cache = roots[name] / "model-cache"
        cached = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
        assert any(p.endswith(".weights.h5") for p in cached), (name, cached)
        log = workers[name].log.read_text()
        # Distinct times: the worker writes each line twice (the shop's handler and Celery's).
        fetches = set(re.findall(r"(\d\d:\d\d:\d\d,\d{3})\S* .*cached model file backbones/", log))
        assert len(fetches) <= 1, f"{name} fetched the backbone {len(fetches)} times"
        assert not (roots[name] / "no-such-model-store").exists()

    page = requests.get(f"{shop.url}/products/{product.pk}/", timeout=30)
    assert page.status_code == 200 and page.text.count('class="card"') >= 10
    # The photos are the bucket's signed URLs, and the page's policy lets the browser load them.
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page.text)
    assert sources and all(src.startswith(f"{bucket}/{BUCKET}/media/") for src in sources), sources[:3]
    assert f"img-src 'self' {bucket} " in page.headers["Content-Security-Policy"]

    outcome = _search(shop, _street_photo(demo_root))
    assert outcome["status"] == "done", outcome
    _assert_nothing_left_the_machine(hosts_env)


def test_it_ranks_the_same_on_either_host(layout, demo_root, hosts_env, django_db_blocker):
    """One photo searched on each host: the same products in the same order, distances within 1e-5."""

    from shop.models import ModelVersion, SearchQuery

    roots, workers, shop = layout
    first = _search(shop, _street_photo(demo_root))
    assert first["status"] == "done", first
    with django_db_blocker.unblock():
        done = SearchQuery.objects.filter(status="done").latest("finished_at")
        clones = []
        for _ in HOSTS:
            clone = SearchQuery.objects.get(pk=done.pk)
            clone.pk = None
            clone.id = None
            clones.append(clone)
        for clone in clones:
            clone.__dict__.update(status="pending", results=[], started_at=None, finished_at=None, vector=None)
            clone.save(force_insert=True)
    sender = _broker_app(hosts_env["CELERY_BROKER_URL"])
    sent = [
        sender.send_task("workers.run_search", args=[str(clone.pk)], queue=host) for clone, host in zip(clones, HOSTS)
    ]
    with django_db_blocker.unblock():
        finished = [
            wait_for(
                lambda pk=clone.pk: SearchQuery.objects.filter(pk=pk).exclude(status="pending").first(),
                timeout=300,
                message="a pinned search",
            )
            for clone in clones
        ]
    assert [query.status for query in finished] == ["done", "done"], [query.error for query in finished]
    a, b = (query.results for query in finished)
    assert [row["product_id"] for row in a] == [row["product_id"] for row in b]
    assert max(abs(x["distance"] - y["distance"]) for x, y in zip(a, b)) <= 1e-5
    with django_db_blocker.unblock():
        checksum = ModelVersion.objects.get(category="dresses", status="active").checksum
    for task, host in zip(sent, HOSTS):
        assert f"workers.run_search[{task.id}] succeeded" in workers[host].log.read_text()
        # Whichever host trained, both now hold the live tower, checked and named by its sha256.
        assert (roots[host] / "model-cache" / f"{checksum}.keras").is_file(), host
    _assert_nothing_left_the_machine(hosts_env)


def _assert_nothing_left_the_machine(env: dict) -> None:
    blocked = Path(env["LOOPBACK_GUARD_LOG"]).read_text()
    assert not blocked, f"a process tried to connect outside the loopback range:\n{blocked}"


def _street_photo(demo_root: Path) -> bytes:
    """A test street photo of the demo set (a person wearing one of the catalogue's dresses)."""
    pairs = json.loads((demo_root / "meta" / "json" / "test_pairs_dresses.json").read_text())
    return next((demo_root / "photos").glob(f"{pairs[0]['photo']:09d}.*")).read_bytes()


def test_it_refuses_a_corrupted_model_file_in_the_bucket_and_the_live_version_keeps_serving(
    layout, bucket, demo_root, hosts_env, django_db_blocker
):
    import boto3
    from django.test import override_settings

    from shop.models import ModelVersion
    from shop.services import model_versions

    _, _, shop = layout
    client = boto3.client("s3", endpoint_url=bucket, region_name=REGION, **_boto_keys())
    with django_db_blocker.unblock():
        live = ModelVersion.objects.get(category="dresses", status="active")
        # A second version whose tower was damaged in the bucket after it was recorded.
        tower = client.get_object(Bucket=BUCKET, Key=f"models/{live.artifact_name}")["Body"].read()
        candidate = ModelVersion.objects.create(
            category="dresses",
            status="ready",
            weights_id=live.weights_id,
            artifact_name="siamese/v-damaged-dresses.keras",
            checksum=live.checksum,
            progress={"stage": "ready"},
        )
        client.put_object(Bucket=BUCKET, Key="models/siamese/v-damaged-dresses.keras", Body=tower[: len(tower) // 2])
        refused = pytest.raises(
            model_versions.ActivationRefused, match="v-damaged-dresses.keras.*replaced or corrupted"
        )
        with override_settings(STORAGES=_bucket_storages(bucket)), refused:
            model_versions.activate_version(version_id=candidate.pk, override=True)
        live.refresh_from_db()
        candidate.refresh_from_db()
        assert (live.status, candidate.status) == ("active", "ready")

    outcome = _search(shop, _street_photo(demo_root))
    assert outcome["status"] == "done", outcome
    _assert_nothing_left_the_machine(hosts_env)


def _bucket_storages(endpoint: str) -> dict:
    """This process's storages on the test's bucket, as the hosts' settings make them."""
    from django.conf import settings

    options = {
        "bucket_name": BUCKET,
        "endpoint_url": endpoint,
        "region_name": REGION,
        "access_key": KEYS["AWS_ACCESS_KEY_ID"],
        "secret_key": KEYS["AWS_SECRET_ACCESS_KEY"],
    }
    s3 = "storages.backends.s3.S3Storage"
    return {
        **settings.STORAGES,
        "default": {"BACKEND": s3, "OPTIONS": {**options, "location": "media"}},
        "models": {"BACKEND": s3, "OPTIONS": {**options, "location": "models", "file_overwrite": True}},
    }
