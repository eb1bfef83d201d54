"""What a download run is given and gives back: jobs, results, outcomes and the run's limits."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from similarity.images import ALLOWED_FORMATS

OUTCOMES = (
    "ok",
    "exists",
    "http_error",
    "timeout",
    "connection_error",
    "too_large",
    "not_an_image",
    "truncated",
    "too_many_redirects",
    "invalid_url",
    "refused_address",
)
SUCCESS_OUTCOMES = frozenset({"ok", "exists"})
USER_AGENT = (
    "fashion-similarity/0.1 (Street2Shop research photo downloader; "
    "+https://github.com/fashion-similarity/fashion-similarity)"
)


@dataclass(frozen=True)
class DownloadJob:
    """One photo to fetch.

    ``priority`` orders the jobs of one host: lower runs first, equal priorities in the order the
    jobs were given or put (a retry keeps its place). Hosts still take turns, so a low number
    never starves another host. The seeding pipeline numbers shop photos of earlier products
    before street photos, so products finish in catalogue order.
    """

    photo_id: int
    url: str
    priority: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.photo_id, bool) or not isinstance(self.photo_id, int) or self.photo_id < 0:
            raise ValueError(f"photo_id must be a non-negative int, got {self.photo_id!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, got {self.priority!r}")


@dataclass(frozen=True)
class DownloadResult:
    """What happened to one job; ``attempts`` counts requests (a redirect chain is one)."""

    photo_id: int
    url: str
    outcome: str
    http_status: int | None
    attempts: int
    bytes: int
    error: str

    @property
    def succeeded(self) -> bool:
        """True when the photo is on disk after this run."""
        return self.outcome in SUCCESS_OUTCOMES


@dataclass(frozen=True)
class DownloadConfig:
    """Limits and politeness for one run; ``on_backoff`` and ``random`` are there for tests."""

    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    # One budget per photo, from its first request: every attempt, redirect, body read and wait for
    # a retry must fit in it, and each attempt gets only what is left. read_timeout bounds each
    # socket read only; a server dripping a byte a second would hold a worker for hours without it.
    total_timeout: float = 120.0
    # Retries after a 5xx, a 429 or a connection error; a timeout is retried once at most, as a
    # photo that stayed silent twice will most likely stay silent (--retry-failed tries it again).
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_redirects: int = 5
    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000
    allowed_formats: frozenset[str] = ALLOWED_FORMATS
    workers: int = 8
    per_host: int = 2
    # A host is skipped for the rest of the run once, of its last host_health_window requests (a
    # full window seen), at least host_failure_share ended in timeout or connection_error: a dead
    # retailer would otherwise cost ~25 s per URL for thousands of URLs, while a live one with a
    # few silent photos must keep serving. None or 0 disables it.
    host_health_window: int | None = 20
    host_failure_share: float = 0.8
    # "host" or "host:port" entries that may resolve to loopback, private or link-local addresses
    # (a test server, a shop's internal photo mirror); every other destination must be public.
    allowed_hosts: frozenset[str] = frozenset()
    user_agent: str = USER_AGENT
    # Called from the calling thread with the delay of each retry as it is queued (tests, logs).
    on_backoff: Callable[[float], None] | None = None
    random: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if self.workers < 1 or self.per_host < 1:
            raise ValueError("workers and per_host must be at least 1")
        if self.retries < 0 or self.max_redirects < 0 or self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("retries and max_redirects must be >= 0; max_bytes and max_pixels >= 1")
        if self.total_timeout <= 0:
            raise ValueError("total_timeout must be more than 0 seconds")
        window = self.host_health_window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
            raise ValueError(f"host_health_window must be None or an int >= 0, got {window!r}")
        if not 0 < self.host_failure_share <= 1:
            raise ValueError(f"host_failure_share must be in (0, 1], got {self.host_failure_share!r}")
