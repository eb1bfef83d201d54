"""Django settings. Every environment variable read here is listed in the README."""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from shop.env import envbool, envfloat, envint, envpath, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

# All generated state (database file, media, model store) lives under DATA_DIR so a
# second catalogue can live beside the first with another DATA_DIR.
DATA_DIR = envpath("DATA_DIR", BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives here

SECRET_KEY = envstr("SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = envbool("DEBUG", True)
ALLOWED_HOSTS = [h for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop.context_processors.backbone_status",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so the Celery worker a test starts sees the test database;
    # WAL and a timeout so the worker and the web server can write side by side.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = envpath("MEDIA_ROOT", DATA_DIR / "media")
SERVE_MEDIA = envbool("SERVE_MEDIA", True)

LOGIN_URL = "admin:login"

# --- Similarity -----------------------------------------------------------------------
# Where trained siamese versions and the saved random backbone live.
MODEL_STORE = envpath("MODEL_STORE", DATA_DIR / "models")
# "auto" (ImageNet where obtainable, else seeded random with a warning), "imagenet",
# "random", or a path to a local VGG19 weights file.
BACKBONE_WEIGHTS = envstr("BACKBONE_WEIGHTS", "auto")
BACKBONE_SEED = envint("BACKBONE_SEED", 1234)
FEATURE_BATCH_SIZE = envint("FEATURE_BATCH_SIZE", 16, minimum=1)
SIMILAR_ITEMS = envint("SIMILAR_ITEMS", 10, minimum=1)

# --- Uploads --------------------------------------------------------------------------
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
IMAGE_MAX_PIXELS = envint("IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
# Django refuses larger bodies before our form sees them; leave room for the form fields.
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Celery ---------------------------------------------------------------------------
REDIS_URL = envstr("REDIS_URL", "")
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL or "redis://127.0.0.1:6379/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Tasks are idempotent, so a worker killed mid-task may safely have its task redelivered.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_WORKER_CONCURRENCY = envint("CELERY_WORKER_CONCURRENCY", 1, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "shop": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
        "similarity": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
        "workers": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    },
}

# Siamese training defaults; an admin's run records the values it used.
SIAMESE_EPOCHS = envint("SIAMESE_EPOCHS", 20, minimum=1)
SIAMESE_BATCH_SIZE = envint("SIAMESE_BATCH_SIZE", 64, minimum=1)
SIAMESE_LEARNING_RATE = envfloat("SIAMESE_LEARNING_RATE", 1e-3)
SIAMESE_MARGIN = envfloat("SIAMESE_MARGIN", 1.0)
SIAMESE_EMBEDDING_DIM = envint("SIAMESE_EMBEDDING_DIM", 128, minimum=2)
SIAMESE_HIDDEN_DIM = envint("SIAMESE_HIDDEN_DIM", 512, minimum=2)
SIAMESE_NEGATIVES = envint("SIAMESE_NEGATIVES", 3, minimum=1)
SIAMESE_SEED = envint("SIAMESE_SEED", 0)
