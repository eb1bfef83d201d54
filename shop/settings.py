"""Django settings. Every environment variable read here is listed in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from shop.env import bucket_origins, envbool, envfloat, envint, envpath, envstr, required_unless

BASE_DIR = Path(__file__).resolve().parent.parent

# All generated state (database file, media, model store) lives under DATA_DIR so a
# second catalogue can live beside the first with another DATA_DIR.
DATA_DIR = envpath("DATA_DIR", BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives here

# Off unless set: a forgotten variable must not put a debug page in front of the public.
# `manage.py demo` and the test settings turn it on for themselves.
DEBUG = envbool("DEBUG", False)
DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = required_unless(
    DEBUG,
    "SECRET_KEY",
    DEV_SECRET_KEY,
    "a long random string, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(50))'`",
)
ALLOWED_HOSTS = [h for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]

# --- Production safety (on whenever DEBUG is off; each can be relaxed from the environment) ---
# A shop behind a TLS-terminating proxy sets SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO.
_proxy_header = envstr("SECURE_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers' health checks speak plain HTTP
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent by shop.middleware.ContentSecurityPolicy: scripts and styles come from our own static
# files only (no inline code), photos from our media and the previews the upload page makes.
_DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CONTENT_SECURITY_POLICY = envstr("CONTENT_SECURITY_POLICY", _DEFAULT_CSP)

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
    "shop.middleware.ContentSecurityPolicy",
    # Serves the static files (admin CSS, our scripts) from the app itself, DEBUG or not.
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
STATIC_ROOT = envpath("STATIC_ROOT", DATA_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns at every start without it
# Without a `collectstatic` run (the demo, the tests) WhiteNoise finds files where they are.
WHITENOISE_USE_FINDERS = envbool("WHITENOISE_USE_FINDERS", True)
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_URL = "/media/"
MEDIA_ROOT = envpath("MEDIA_ROOT", DATA_DIR / "media")
# Catalogue photos and thumbnails; a production shop serves MEDIA_ROOT from its web server or a bucket.
SERVE_MEDIA = envbool("SERVE_MEDIA", DEBUG)
# Shoppers' uploaded photos live outside MEDIA_ROOT: no URL maps to them, and the shop hands
# a search's photo only to the browser session that made the search.
SEARCH_UPLOAD_ROOT = envpath("SEARCH_UPLOAD_ROOT", DATA_DIR / "searches")
# The purge deletes every stray file in it: it must be a folder of its own, outside MEDIA_ROOT (served).
for _name, _other in (("DATA_DIR", DATA_DIR), ("MEDIA_ROOT", MEDIA_ROOT), ("STATIC_ROOT", STATIC_ROOT)):
    if _other.is_relative_to(SEARCH_UPLOAD_ROOT) or (
        _name == "MEDIA_ROOT" and SEARCH_UPLOAD_ROOT.is_relative_to(_other)
    ):
        raise ImproperlyConfigured(
            f"SEARCH_UPLOAD_ROOT={SEARCH_UPLOAD_ROOT} must be a folder of its own, not {_name} or around or inside it"
        )
# Where trained siamese versions and the saved random backbone live (a folder, unless a bucket is set).
MODEL_STORE = envpath("MODEL_STORE", DATA_DIR / "models")
# Each host's copies of the model files it loads, named by their sha256 (checked when copied).
MODEL_CACHE_DIR = envpath("MODEL_CACHE_DIR", DATA_DIR / "model-cache")

# Every file the shop keeps goes through these storages, never a local path, so web servers and
# workers on hosts that share no disk see the same files. Local folders by default; an
# S3-compatible bucket when AWS_STORAGE_BUCKET_NAME is set (photos under media/, shoppers' uploads
# under searches/, models under models/).
AWS_STORAGE_BUCKET_NAME = envstr("AWS_STORAGE_BUCKET_NAME", "")
if AWS_STORAGE_BUCKET_NAME:
    _bucket: dict[str, Any] = {
        "bucket_name": AWS_STORAGE_BUCKET_NAME,
        # Empty: AWS itself; set it for MinIO, Ceph, R2 or a test server.
        "endpoint_url": envstr("AWS_S3_ENDPOINT_URL", "") or None,
        "region_name": envstr("AWS_S3_REGION_NAME", "") or None,
        # Empty: boto3's own chain (an instance role, ~/.aws); set both for keys.
        "access_key": envstr("AWS_ACCESS_KEY_ID", "") or None,
        "secret_key": envstr("AWS_SECRET_ACCESS_KEY", "") or None,
        # Private objects: pages link photos by short-lived signed URLs.
        "default_acl": None,
        "querystring_auth": True,
    }
    _s3 = "storages.backends.s3.S3Storage"
    STORAGES: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": _s3, "OPTIONS": {**_bucket, "location": "media", "file_overwrite": False}},
        "searches": {"BACKEND": _s3, "OPTIONS": {**_bucket, "location": "searches", "file_overwrite": False}},
        # Model files are written once under a name their row records; a retry rewrites the same name.
        # A download over 64 MB spills to a temporary file instead of memory (the backbone is 575 MB).
        "models": {
            "BACKEND": _s3,
            "OPTIONS": {**_bucket, "location": "models", "file_overwrite": True, "max_memory_size": 64 << 20},
        },
    }
else:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "searches": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": SEARCH_UPLOAD_ROOT, "base_url": None},
        },
        "models": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": MODEL_STORE, "base_url": None, "allow_overwrite": True},
        },
    }
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
if AWS_STORAGE_BUCKET_NAME and CONTENT_SECURITY_POLICY == _DEFAULT_CSP:
    # Photos then come from the bucket's signed URLs: the default policy would block every one.
    CONTENT_SECURITY_POLICY = _DEFAULT_CSP.replace("img-src 'self'", f"img-src 'self' {bucket_origins()}", 1)

LOGIN_URL = "admin:login"

# --- Similarity -----------------------------------------------------------------------
# "auto" (ImageNet where obtainable, else seeded random with a warning), "imagenet",
# "random", or a path to a local VGG19 weights file.
BACKBONE_WEIGHTS = envstr("BACKBONE_WEIGHTS", "auto")
# vgg19-fc2 (4096-d, the default), vgg19-block5-gem / vgg19-block5-max (512-d) or mobilenetv2 (1280-d).
BACKBONE = envstr("BACKBONE", "vgg19-fc2")
BACKBONE_SEED = envint("BACKBONE_SEED", 1234)
# "auto" (bfloat16 where the CPU has avx512_bf16/amx_bf16, else float32), "float32" or "bfloat16".
BACKBONE_PRECISION = envstr("BACKBONE_PRECISION", "auto")
if BACKBONE_PRECISION not in ("auto", "float32", "bfloat16"):
    raise ImproperlyConfigured(f"BACKBONE_PRECISION={BACKBONE_PRECISION!r}: use auto, float32 or bfloat16")
# Offline machines can skip the download attempt that "auto" makes before falling back.
BACKBONE_ALLOW_DOWNLOAD = envbool("BACKBONE_ALLOW_DOWNLOAD", True)
FEATURE_BATCH_SIZE = envint("FEATURE_BATCH_SIZE", 16, minimum=1)
# How backbone vectors are stored: float16 halves the Feature table at no measured loss of top-k.
FEATURE_DTYPE = envstr("FEATURE_DTYPE", "float16")
if FEATURE_DTYPE not in ("float16", "float32"):
    raise ImproperlyConfigured(f"FEATURE_DTYPE={FEATURE_DTYPE!r}: use float16 or float32")
SIMILAR_ITEMS = envint("SIMILAR_ITEMS", 10, minimum=1)
if SIMILAR_ITEMS > 100:
    raise ImproperlyConfigured(f"SIMILAR_ITEMS={SIMILAR_ITEMS}: at most 100 similar items are ranked per product")
# Products per similar-items ranking task of a training run: the rebuild fans out over the workers.
RANKING_SLICE_SIZE = envint("RANKING_SLICE_SIZE", 5000, minimum=1)
# Catalogues up to this many products rank with plain cdist over all of them (the reference);
# larger ones take candidates from float32 BLAS blocks and re-rank them with cdist.
CDIST_MAX_ROWS = envint("CDIST_MAX_ROWS", 5000, minimum=0)

# --- Uploads --------------------------------------------------------------------------
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
# Dataset and admin photos; shoppers' uploads have their own, smaller cap below.
IMAGE_MAX_PIXELS = envint("IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
# A phone's main camera is 12 MP (16 MP on some): more is refused from the header alone.
UPLOAD_MAX_PIXELS = envint("UPLOAD_MAX_PIXELS", 16_000_000, minimum=1)
# Uploads per client address; "10/m" is ten a minute (also /s, /h, /d). Behind a proxy, set
# SEARCH_RATE_LIMIT_IP_HEADER (e.g. HTTP_X_FORWARDED_FOR) to the header carrying the client's address.
SEARCH_RATE_LIMIT = envstr("SEARCH_RATE_LIMIT", "10/m")
SEARCH_RATE_LIMIT_IP_HEADER = envstr("SEARCH_RATE_LIMIT_IP_HEADER", "REMOTE_ADDR")
RATELIMIT_IP_META_KEY = "shop.uploads.client_ip"  # django-ratelimit's "ip" key reads the address here
# Past this many searches waiting for a worker, uploads get "busy, try again" (503).
SEARCH_MAX_PENDING = envint("SEARCH_MAX_PENDING", 50, minimum=1)
# A search still pending after this long is ended as failed (a lost message, a dead worker).
SEARCH_TIMEOUT_SECONDS = envint("SEARCH_TIMEOUT_SECONDS", 60, minimum=5)
# Searches and their photos are deleted after this many hours (`manage.py purge_searches`, hourly in the demo).
SEARCH_RETENTION_HOURS = envfloat("SEARCH_RETENTION_HOURS", 24.0)
if SEARCH_RETENTION_HOURS * 3600 <= SEARCH_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        "SEARCH_RETENTION_HOURS must be longer than SEARCH_TIMEOUT_SECONDS: "
        "the purge would delete searches still running"
    )
# Non-file form data; the search view's upload handler caps the whole body at UPLOAD_MAX_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Longest a results page's wait request (/search/<id>/wait/) holds a web thread, or a sync
# worker, before answering "pending"; the page then asks again. Keep it under the server's timeout.
SEARCH_WAIT_SECONDS = envfloat("SEARCH_WAIT_SECONDS", 10.0)
if not 0 <= SEARCH_WAIT_SECONDS <= 60:
    raise ImproperlyConfigured(f"SEARCH_WAIT_SECONDS={SEARCH_WAIT_SECONDS} must be between 0 and 60 seconds")

# --- Street2Shop downloads (seed_street2shop --download) ---------------------------------
DOWNLOAD_WORKERS = envint("DOWNLOAD_WORKERS", 8, minimum=1)
DOWNLOAD_PER_HOST = envint("DOWNLOAD_PER_HOST", 2, minimum=1)
DOWNLOAD_CONNECT_TIMEOUT = envfloat("DOWNLOAD_CONNECT_TIMEOUT", 5.0)
DOWNLOAD_READ_TIMEOUT = envfloat("DOWNLOAD_READ_TIMEOUT", 20.0)
# One budget per photo across its attempts, redirects and waits for a retry: a server dripping one
# byte per read timeout, or one that never answers, would otherwise hold a worker for long.
DOWNLOAD_TOTAL_TIMEOUT = envfloat("DOWNLOAD_TOTAL_TIMEOUT", 120.0)
DOWNLOAD_RETRIES = envint("DOWNLOAD_RETRIES", 3, minimum=0)
DOWNLOAD_BACKOFF_BASE = envfloat("DOWNLOAD_BACKOFF_BASE", 0.5)
DOWNLOAD_BACKOFF_MAX = envfloat("DOWNLOAD_BACKOFF_MAX", 30.0)
DOWNLOAD_MAX_BYTES = envint("DOWNLOAD_MAX_BYTES", 15 * 1024 * 1024, minimum=1)
# "host" or "host:port" entries photo downloads may reach although they resolve to loopback,
# private or link-local addresses (an internal photo mirror); every other destination must be public.
DOWNLOAD_ALLOWED_HOSTS = frozenset(
    h.strip().lower() for h in envstr("DOWNLOAD_ALLOWED_HOSTS", "").split(",") if h.strip()
)
for _name in ("DOWNLOAD_CONNECT_TIMEOUT", "DOWNLOAD_READ_TIMEOUT", "DOWNLOAD_TOTAL_TIMEOUT"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be more than 0 seconds")
if DOWNLOAD_BACKOFF_BASE < 0 or DOWNLOAD_BACKOFF_MAX < 0:
    raise ImproperlyConfigured("DOWNLOAD_BACKOFF_BASE and DOWNLOAD_BACKOFF_MAX must be 0 or more")

# --- Celery ---------------------------------------------------------------------------
REDIS_URL = envstr("REDIS_URL", "")
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL or "redis://127.0.0.1:6379/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Tasks are idempotent, so a worker killed mid-task may safely have its task redelivered.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per pool process on both queues: a search reserved behind another search on a busy host
# would wait while another host's process is idle, and a message reserved behind a training run for hours.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# And none fetched while every pool process is busy (Redis only): training is acked on receipt
# (workers/tasks.py), which frees its prefetch slot, so the `worker` process would otherwise hold the
# next indexing batch through the whole run, or hand it to a second host after the visibility timeout.
CELERY_WORKER_DISABLE_PREFETCH = envbool("CELERY_WORKER_DISABLE_PREFETCH", True)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
    # How often a worker looks for tasks of a dead worker whose visibility timeout ran out.
    "unacked_restore_interval": envint("CELERY_RESTORE_INTERVAL", 10, minimum=1),
    "unacked_restore_throttle": 1,
}
CELERY_WORKER_CONCURRENCY = envint("CELERY_WORKER_CONCURRENCY", 1, minimum=1)
# KiB. A pool process whose peak memory (billiard reads ru_maxrss) passed this is replaced after its task.
# Loading VGG19 fc2 in float32 peaks at 2.9 GB (2.1 GB after), so 4 GiB is passed only by growth:
# TensorFlow's allocator over many batches, or a training run's data, given back once the run ends.
# The next task on the new process reloads the backbone (~5 s). 0 turns it off.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = envint("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 4 * 1024 * 1024, minimum=0)
# No CELERY_WORKER_MAX_TASKS_PER_CHILD: every new process reloads VGG19, and memory, not age, is what grows.

# Time limits in seconds. The soft one raises celery.exceptions.SoftTimeLimitExceeded inside the task, so
# it records why it stopped; the hard one, a grace period later, kills the pool process where the soft one
# cannot land (deep inside one TensorFlow call). Each group's soft limit can be set from the environment.
# Batches (the default: indexing 32 products' photos, a slice of the lists, the hourly purge) take
# minutes at most. Keep them under CELERY_VISIBILITY_TIMEOUT: Redis hands a late-acked task still
# running past it to a second worker. What a stopped batch stored stays; `index_catalogue` queues the rest.
_batch_soft = envint("CELERY_BATCH_TIME_LIMIT", 15 * 60, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = _batch_soft
CELERY_TASK_TIME_LIMIT = _batch_soft + 60
# Searches stop well before SEARCH_TIMEOUT_SECONDS would end them anyway, failed with the "took too long"
# message; half the timeout leaves a fresh pool process time to load VGG19 first.
_search_soft = envint("CELERY_SEARCH_TIME_LIMIT", max(1, SEARCH_TIMEOUT_SECONDS // 2), minimum=1)
_search_grace = max(1, SEARCH_TIMEOUT_SECONDS // 4)
_search_limits = {"soft_time_limit": _search_soft, "time_limit": _search_soft + _search_grace}
if _search_soft + _search_grace > SEARCH_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        f"CELERY_SEARCH_TIME_LIMIT={_search_soft}: with its grace of {_search_grace} s a search would "
        f"outlive SEARCH_TIMEOUT_SECONDS={SEARCH_TIMEOUT_SECONDS}"
    )
# Training takes hours on a large catalogue; acked on receipt, it is not bound by the visibility timeout.
# A run stopped at its soft limit is marked failed with the error, and the live model keeps serving.
_training_soft = envint("CELERY_TRAINING_TIME_LIMIT", 6 * 3600, minimum=1)
CELERY_TASK_ANNOTATIONS = {
    "workers.run_search": _search_limits,
    "workers.end_overdue_searches": _search_limits,  # one UPDATE every 30 s on the search worker
    "workers.train_model_version": {"soft_time_limit": _training_soft, "time_limit": _training_soft + 10 * 60},
}
# Shoppers' searches get their own queue (and their own `search` process in the Procfile) so they
# never wait behind a training run or a catalogue's worth of indexing.
CELERY_TASK_ROUTES = {
    "workers.run_search": {"queue": "search"},
    # Short periodic jobs about searches: on the search worker, never behind an hour-long training run.
    "workers.end_overdue_searches": {"queue": "search"},
    "workers.purge_searches": {"queue": "search"},
}
# Periodic jobs, sent by the one `beat` process of the Procfile (exactly one per shop, or each job runs
# once per beat). `celery beat` reads its schedule file's path from here.
CELERY_BEAT_SCHEDULE = {
    "end-overdue-searches": {"task": "workers.end_overdue_searches", "schedule": 30.0},
    "purge-searches": {"task": "workers.purge_searches", "schedule": 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# The rate limit's counters; shared by every web process, so on Redis (LocMem in one-process tests).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": envstr("CACHE_URL", CELERY_BROKER_URL),
        "KEY_PREFIX": envstr("CACHE_KEY_PREFIX", "shop"),
    }
}

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

# Near-duplicate listings (shop.services.duplicates): the largest RMS colour difference between
# two photos' garment signatures that makes them one garment, chosen on the demo catalogue with
# copies injected (benchmarks/bench_duplicates.py; README "Performance").
DUPLICATE_MAX_DISTANCE = envfloat("DUPLICATE_MAX_DISTANCE", 3.5)

# Siamese training: each SIAMESE_* variable overrides one field of similarity.train_config.TrainConfig,
# whose defaults are the shop's. shop.services.training_config reads these into one validated
# config; a run's overrides go over it, and the run records every field.
from similarity.train_config import ARCHITECTURES, LOSSES, InvalidTrainConfig, TrainConfig  # noqa: E402  (kept with its section)

_TRAIN = TrainConfig()
SIAMESE_EPOCHS = envint("SIAMESE_EPOCHS", _TRAIN.epochs, minimum=1)
SIAMESE_BATCH_SIZE = envint("SIAMESE_BATCH_SIZE", _TRAIN.batch_size, minimum=1)
SIAMESE_LEARNING_RATE = envfloat("SIAMESE_LEARNING_RATE", _TRAIN.learning_rate)
SIAMESE_MARGIN = envfloat("SIAMESE_MARGIN", _TRAIN.margin)
SIAMESE_EMBEDDING_DIM = envint("SIAMESE_EMBEDDING_DIM", _TRAIN.embedding_dim, minimum=2)
SIAMESE_HIDDEN_DIM = envint("SIAMESE_HIDDEN_DIM", _TRAIN.hidden_dim, minimum=2)
SIAMESE_DROPOUT = envfloat("SIAMESE_DROPOUT", _TRAIN.dropout)
SIAMESE_NEGATIVES = envint("SIAMESE_NEGATIVES", _TRAIN.negatives_per_positive, minimum=1)
SIAMESE_SEED = envint("SIAMESE_SEED", _TRAIN.seed, minimum=0)
SIAMESE_ARCHITECTURE = envstr("SIAMESE_ARCHITECTURE", _TRAIN.architecture)
SIAMESE_WEIGHT_DECAY = envfloat("SIAMESE_WEIGHT_DECAY", _TRAIN.weight_decay)
SIAMESE_LOSS = envstr("SIAMESE_LOSS", _TRAIN.loss)
SIAMESE_HARD_NEGATIVES = envfloat("SIAMESE_HARD_NEGATIVES", _TRAIN.hard_negative_share)
SIAMESE_HARD_NEGATIVE_POOL = envint("SIAMESE_HARD_NEGATIVE_POOL", _TRAIN.hard_negative_pool, minimum=1)
SIAMESE_PATIENCE = envint("SIAMESE_PATIENCE", _TRAIN.patience, minimum=0)
SIAMESE_COLOUR_WEIGHT = envfloat("SIAMESE_COLOUR_WEIGHT", _TRAIN.colour_weight)
# A running version with no progress for this long is taken as lost (its worker died) and marked failed.
TRAINING_STALL_SECONDS = envint("TRAINING_STALL_SECONDS", 1800, minimum=60)
if SIAMESE_ARCHITECTURE not in ARCHITECTURES:
    raise ImproperlyConfigured(f"SIAMESE_ARCHITECTURE={SIAMESE_ARCHITECTURE!r}: use {' or '.join(ARCHITECTURES)}")
if SIAMESE_LOSS not in LOSSES:
    raise ImproperlyConfigured(f"SIAMESE_LOSS={SIAMESE_LOSS!r}: use {' or '.join(LOSSES)}")
# Each TrainConfig field and the setting (and environment variable) that sets it.
SIAMESE_SETTING_NAMES = {
    "epochs": "SIAMESE_EPOCHS",
    "batch_size": "SIAMESE_BATCH_SIZE",
    "learning_rate": "SIAMESE_LEARNING_RATE",
    "margin": "SIAMESE_MARGIN",
    "hidden_dim": "SIAMESE_HIDDEN_DIM",
    "embedding_dim": "SIAMESE_EMBEDDING_DIM",
    "dropout": "SIAMESE_DROPOUT",
    "negatives_per_positive": "SIAMESE_NEGATIVES",
    "seed": "SIAMESE_SEED",
    "architecture": "SIAMESE_ARCHITECTURE",
    "weight_decay": "SIAMESE_WEIGHT_DECAY",
    "loss": "SIAMESE_LOSS",
    "hard_negative_share": "SIAMESE_HARD_NEGATIVES",
    "hard_negative_pool": "SIAMESE_HARD_NEGATIVE_POOL",
    "patience": "SIAMESE_PATIENCE",
    "colour_weight": "SIAMESE_COLOUR_WEIGHT",
}
try:  # a bad value stops the shop at start, not at the first training run
    TrainConfig.from_mapping({_field: globals()[_name] for _field, _name in SIAMESE_SETTING_NAMES.items()})
except InvalidTrainConfig as _error:
    raise ImproperlyConfigured(
        f"{SIAMESE_SETTING_NAMES.get(_error.field or '', 'a SIAMESE_* setting')}: {_error}"
    ) from None
