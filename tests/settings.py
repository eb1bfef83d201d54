"""Test settings: the shop's own, with state under var/test and the labelled random backbone."""

from shop.settings import *  # noqa: F403
from shop.settings import DATA_DIR
from shop.env import envpath

TEST_DATA_DIR = DATA_DIR / "test"
MEDIA_ROOT = TEST_DATA_DIR / "media"
# The ~550 MB random VGG19 is saved once per machine and reused by every run and worker.
MODEL_STORE = envpath("TEST_MODEL_STORE", DATA_DIR / "test-models")
BACKBONE_WEIGHTS = "random"
SIAMESE_EPOCHS = 8
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
