"""Test settings: the shop's own, with state in a per-run folder and the labelled random backbone."""

import os
import tempfile
from pathlib import Path

# Development defaults for the suite and the workers it starts; the browser tests start their
# server with DEBUG=false and a key of their own to exercise the production headers.
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("SECRET_KEY", "test-only-" + "k" * 50)

from shop.env import envpath
from shop.settings import *
from shop.settings import DATA_DIR, DATABASES

# One folder per test run, inherited by the worker processes the run starts (through the
# environment), so two runs on one machine never share a database file or media.
_WORKER_PREFIX = f"fashion-test-{os.environ.get('PYTEST_XDIST_WORKER')}-"
if os.environ.get("PYTEST_XDIST_WORKER") and not Path(os.environ.get("TEST_RUN_DIR", "")).name.startswith(
    _WORKER_PREFIX
):
    # The fast lane's xdist workers: one folder each (their subprocesses inherit it), or each
    # would delete the others' at its end.
    TEST_RUN_DIR = Path(tempfile.mkdtemp(prefix=_WORKER_PREFIX))
    os.environ["TEST_RUN_DIR"] = str(TEST_RUN_DIR)
else:
    TEST_RUN_DIR = Path(os.environ.setdefault("TEST_RUN_DIR", tempfile.mkdtemp(prefix="fashion-test-")))
MEDIA_ROOT = TEST_RUN_DIR / "media"
SEARCH_UPLOAD_ROOT = TEST_RUN_DIR / "searches"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_RUN_DIR / "test-db.sqlite3")}
# The ~550 MB random VGG19 is saved once per machine and reused by every run and worker.
MODEL_STORE = envpath("TEST_MODEL_STORE", DATA_DIR / "test-models")
# A worker started with its own TEST_MODEL_CACHE_DIR stands for a worker on another host.
MODEL_CACHE_DIR = envpath("TEST_MODEL_CACHE_DIR", MODEL_STORE)
if not AWS_STORAGE_BUCKET_NAME:  # a bucket (the many-hosts test) keeps every file in it
    STORAGES = {
        **STORAGES,
        "searches": {**STORAGES["searches"], "OPTIONS": {"location": SEARCH_UPLOAD_ROOT, "base_url": None}},
        "models": {**STORAGES["models"], "OPTIONS": {**STORAGES["models"]["OPTIONS"], "location": MODEL_STORE}},
    }
BACKBONE = "vgg19-fc2"
BACKBONE_WEIGHTS = "random"
BACKBONE_ALLOW_DOWNLOAD = False
# Bit-exact features on every CI machine; tests/similarity/test_precision.py covers bfloat16.
BACKBONE_PRECISION = "float32"
SIAMESE_EPOCHS = 8
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# One process: counters in memory. The live server of the browser and abuse tests is given
# CACHE_URL, so its processes share their counters on Redis as a shop's would.
if not os.environ.get("CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Enough for every upload the suite makes; tests of the limit lower it.
SEARCH_RATE_LIMIT = os.environ.get("SEARCH_RATE_LIMIT", "1000/m")
# The download tests' photo servers listen on 127.0.0.1; the SSRF tests narrow this to one port.
DOWNLOAD_ALLOWED_HOSTS = frozenset({"127.0.0.1"})
