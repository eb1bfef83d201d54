"""Test settings: the shop's own, with state in a per-run folder and the labelled random backbone."""

import os
import tempfile
from pathlib import Path

from shop.settings import *  # noqa: F403
from shop.settings import DATA_DIR, DATABASES
from shop.env import envpath

# One folder per test run, inherited by the worker processes the run starts (through the
# environment), so two runs on one machine never share a database file or media.
TEST_RUN_DIR = Path(os.environ.setdefault("TEST_RUN_DIR", tempfile.mkdtemp(prefix="fashion-test-")))
MEDIA_ROOT = TEST_RUN_DIR / "media"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_RUN_DIR / "test-db.sqlite3")}
# The ~550 MB random VGG19 is saved once per machine and reused by every run and worker.
MODEL_STORE = envpath("TEST_MODEL_STORE", DATA_DIR / "test-models")
BACKBONE = "vgg19-fc2"
BACKBONE_WEIGHTS = "random"
BACKBONE_ALLOW_DOWNLOAD = False
# Bit-exact features on every CI machine; tests/similarity/test_precision.py covers bfloat16.
BACKBONE_PRECISION = "float32"
SIAMESE_EPOCHS = 8
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
