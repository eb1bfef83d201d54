"""Download Street2Shop photos from retailers' servers into a folder of ``<id:09d>.jpg`` files.

Django-free on purpose: a management command or a task wraps ``download_photos``; this module only
knows requests, files and ``similarity.images.open_image``.

What a run guarantees:

- Only bytes that decode as an image ever get a final name, written to a ``.<name>.part-*`` file,
  fsynced and renamed with ``os.replace``; a killed run leaves at most ``.part`` files, which the
  next run deletes. The bytes are stored as downloaded (never re-encoded), so a ``.jpg`` may hold a
  PNG or WebP, as in the dataset's own ``photos.tar``.
- A photo already in the folder is ``"exists"`` and not fetched. The check is cheap (a non-empty
  file under the final name) because this module only renames validated files into place; pass
  ``DownloadConfig(verify_existing=True)`` once for files that came from elsewhere.
- One run per folder at a time (an ``flock`` on ``.download.lock``), which is what makes deleting
  every ``.part`` file at start safe.
- Unexpected errors (a full disk, a bug) end the run instead of being recorded 425,000 times; the
  photos written so far stay, so running again resumes.

How a run schedules (see ``_run``):

- Each host has a queue ordered by ``DownloadJob.priority``, then by the order jobs were added;
  hosts take turns, with at most ``per_host`` requests in flight each.
- A worker makes one request per turn. A retryable failure hands the slot and the worker back: the
  photo re-enters its host's queue, not to be taken before its backoff has passed. A 429/503 with
  ``Retry-After`` pauses the whole host that long.
- A photo has one ``total_timeout`` budget for all its attempts and waits, and a timeout is retried
  once per run: a silent photo costs two attempts, not ``retries + 1`` full read timeouts.
- A host is skipped for the rest of the run once most of its latest requests failed to connect or
  timed out (``host_health_window``, ``host_failure_share``): a dead retailer costs a window of
  requests, a live one with a few silent photos keeps serving.
"""

from __future__ import annotations

import csv
import email.utils
import heapq
import ipaddress
import os
import random
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter

from shop.street2shop import photo_filename
from similarity.files import atomic_write_bytes, exclusive_lock
from similarity.images import (
    ALLOWED_FORMATS,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    open_image,
)

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
PART_MARKER = ".part-"
LOCK_NAME = ".download.lock"
FAILURE_COLUMNS = ("photo_id", "url", "outcome", "http_status", "attempts", "error")
USER_AGENT = (
    "fashion-similarity/0.1 (Street2Shop research photo downloader; "
    "+https://github.com/fashion-similarity/fashion-similarity)"
)
# No AVIF or GIF: open_image refuses them, so asking for them would only waste bandwidth.
ACCEPT = "image/webp,image/jpeg,image/png;q=0.9,image/*;q=0.5,*/*;q=0.1"
_CHUNK_SIZE = 64 * 1024
_FEED_POLL = 0.05


# Longest photo id accepted from photos.txt: Street2Shop's have nine digits; 18 always fits a 64-bit column.
MAX_ID_DIGITS = 18


class DownloadDirBusy(RuntimeError):
    """Another run is downloading into the same folder."""


class JobFeed:
    """Jobs handed to a running ``download_photos`` from another thread.

    Lets a caller add work as results come in (e.g. a product's street photos once one of its shop
    photos is in) without a new run per batch, whose slowest URL would idle every other worker.
    The run ends once the feed is closed and every job is done; ``cancel()`` ends it early, like
    Ctrl-C: no new requests, no more retries, in-flight requests finish.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._jobs: deque[DownloadJob] = deque()
        self._closed = False
        self._cancelled = False

    def put(self, jobs: Iterable[DownloadJob]) -> None:
        """Queue more jobs; their photo ids must differ from every other job of the run."""
        with self._condition:
            if self._closed:
                raise RuntimeError("this feed is closed")
            self._jobs.extend(jobs)
            self._condition.notify_all()

    def close(self) -> None:
        """No more jobs will come: the run ends when the queued ones are done."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def cancel(self) -> None:
        """End the run as soon as the requests in flight are done."""
        with self._condition:
            self._closed = self._cancelled = True
            self._condition.notify_all()

    @property
    def cancelled(self) -> bool:
        with self._condition:
            return self._cancelled

    def _take(self) -> list[DownloadJob]:
        with self._condition:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def _wait(self, timeout: float) -> bool:
        """Block until a job is put or the feed closes; True when the run should end."""
        with self._condition:
            if not self._jobs and not self._closed:
                self._condition.wait(timeout)
            return self._cancelled or (self._closed and not self._jobs)

    def _nap(self, timeout: float) -> None:
        """Block up to ``timeout`` while a retry waits, waking early for a new job or a cancel.

        Unlike ``_wait`` it also waits once the feed is closed: queued retries still need their time.
        """
        with self._condition:
            if not self._jobs and not self._cancelled:
                self._condition.wait(timeout)


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
    elapsed: float

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
    verify_existing: bool = False
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


@dataclass(frozen=True)
class PhotoList:
    """The parsed ``photos.txt``: id → URL, plus the 1-based numbers of lines that were skipped."""

    urls: dict[int, str]
    bad_lines: list[int] = field(default_factory=list)

    def jobs(self, ids: Iterable[int] | None = None) -> list[DownloadJob]:
        """Jobs for the given ids (all when None), in id order; an unknown id is a KeyError."""
        wanted = sorted(self.urls) if ids is None else sorted(set(ids))
        missing = [photo_id for photo_id in wanted if photo_id not in self.urls]
        if missing:
            raise KeyError(f"{len(missing)} photo ids are not in photos.txt, e.g. {missing[:5]}")
        return [DownloadJob(photo_id, self.urls[photo_id]) for photo_id in wanted]


def read_photos_txt(path: str | os.PathLike[str]) -> PhotoList:
    """Parse ``<id>,<url>`` lines, splitting at the first comma since URLs may contain commas.

    Blank lines are ignored. Lines with no comma, a non-numeric id, an empty URL or an id seen
    before (the first one wins) are skipped and reported in ``bad_lines``.
    """
    urls: dict[int, str] = {}
    bad_lines: list[int] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            id_text, comma, url = line.partition(",")
            id_text, url = id_text.strip(), url.strip()
            # isdigit() alone accepts "²" and other Unicode digits that int() rejects; more than 18
            # digits is no Street2Shop id (nine digits), may not fit the database, and past 4,300
            # makes int() itself raise.
            if not comma or not url or not (id_text.isascii() and id_text.isdigit()) or len(id_text) > MAX_ID_DIGITS:
                bad_lines.append(number)
                continue
            photo_id = int(id_text)
            if photo_id in urls:
                bad_lines.append(number)
                continue
            urls[photo_id] = url
    return PhotoList(urls=urls, bad_lines=bad_lines)


def download_photos(
    jobs: Sequence[DownloadJob],
    dest_dir: str | os.PathLike[str],
    *,
    config: DownloadConfig = DownloadConfig(),
    progress: Callable[[DownloadResult], None] | None = None,
    feed: JobFeed | None = None,
) -> list[DownloadResult]:
    """Fetch every job into ``dest_dir``; return one result per job, in the order of ``jobs``.

    ``progress`` is called once per finished job, in completion order, always from the calling
    thread, so it need not be thread-safe. Downloads run on ``config.workers`` threads with at most
    ``config.per_host`` in flight per host (by the first URL's host; redirects are not re-counted).
    Within a host, jobs start by ``DownloadJob.priority`` (lower first), then in the order given
    or put; hosts take turns. A retry waits for its backoff in its host's queue, not on a worker.
    With a ``feed``, jobs put into it join the run (their results follow, in the order put) and
    the run lasts until the feed is closed or cancelled. A cancelled run returns what finished, and
    every photo whose retry the cancel cut short with the failure it last had; those are not passed
    to ``progress``, as they did not finish (the next run tries them again).
    """
    ids = Counter(job.photo_id for job in jobs)
    duplicates = sorted(photo_id for photo_id, count in ids.items() if count > 1)
    if duplicates:
        raise ValueError(f"photo ids appear more than once: {duplicates[:5]}")
    folder = Path(dest_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        remove_stale_parts(folder)
        return _run(list(jobs), folder, config, progress, feed)


def remove_stale_parts(dest_dir: str | os.PathLike[str]) -> int:
    """Delete ``.part`` files left by a killed run; return how many. Call only under the lock."""
    removed = 0
    for path in Path(dest_dir).glob(f".*{PART_MARKER}*"):
        with suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


class _HandFollowedSession(requests.Session):
    """A session that never follows (or reads) a redirect itself: _fetch_once follows them by hand.

    With ``allow_redirects=False`` requests still reads a redirect's whole body to prepare
    ``Response.next``; a session that sees no redirect target never does.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def build_session(config: DownloadConfig) -> requests.Session:
    """A session with our User-Agent and no redirects or retries of its own (we follow and retry)."""
    session = _HandFollowedSession()
    session.headers["User-Agent"] = config.user_agent
    session.headers["Accept"] = ACCEPT
    # Photos as sent: _read_body refuses encoded bodies rather than inflate them.
    session.headers["Accept-Encoding"] = "identity"
    session.max_redirects = config.max_redirects
    # Each session serves one thread, so one connection per host; keep pools for ~25 retailers
    # plus the CDNs they redirect to.
    adapter = _PinnedAdapter(pool_connections=64, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, retry_after: float | None, config: DownloadConfig) -> float:
    """Seconds to sleep after failed attempt ``attempt`` (1-based): Retry-After or full jitter."""
    if retry_after is not None:
        return min(retry_after, config.backoff_max)
    ceiling = min(config.backoff_max, config.backoff_base * 2 ** (attempt - 1))
    return config.random() * ceiling


def summarize(results: Iterable[DownloadResult]) -> dict[str, int]:
    """Count results per outcome, in the order of ``OUTCOMES``; absent outcomes are left out."""
    counts = Counter(result.outcome for result in results)
    return {outcome: counts[outcome] for outcome in OUTCOMES if counts[outcome]}


class Failure(Protocol):
    """What a failures CSV row is made of: a DownloadResult, or a caller's record with these fields."""

    photo_id: int
    url: str
    outcome: str
    http_status: int | None
    attempts: int
    error: str


def failure_row(failure: Failure) -> list[object]:
    """The values of ``FAILURE_COLUMNS`` for one failure."""
    status = "" if failure.http_status is None else failure.http_status
    return [failure.photo_id, failure.url, failure.outcome, status, failure.attempts, failure.error]


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write a header and rows as UTF-8 CSV; return how many rows. Text cells are made safe to open."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([spreadsheet_safe(cell) for cell in row])
            count += 1
    return count


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe; numbers stay numbers.

    URLs and error texts come from servers nobody here controls: "=HYPERLINK(...)" must stay text.
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def write_failures_csv(results: Iterable[DownloadResult], path: str | os.PathLike[str]) -> int:
    """Write every result that is neither ok nor exists to a CSV; return how many rows."""
    return write_csv(path, FAILURE_COLUMNS, (failure_row(result) for result in results if not result.succeeded))


class ProgressPrinter:
    """A ``progress`` callback printing one updating line: done/total, outcomes, rate and ETA.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; on anything else
    (a log file) a full line is written every ``log_interval`` seconds. ``quiet`` prints only the
    final line from ``close()``.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        interval: float = 0.5,
        log_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.done = 0
        self._started = clock()
        self._last_print: float | None = None
        self._width = 0
        self._tty = _isatty(self.stream)
        self._interval = interval if self._tty else log_interval

    def __call__(self, result: DownloadResult) -> None:
        self.done += 1
        self.counts[result.outcome] += 1
        if self.quiet:
            return
        now = self.clock()
        if self._last_print is None or now - self._last_print >= self._interval:
            self._last_print = now
            self._write(self.line())

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def line(self) -> str:
        """The status text, e.g. ``1,234/425,000  ok 1,000  ...  12.3 photos/s  ETA 9:12:05``."""
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = self.done / elapsed
        failed = self.done - self.counts["ok"] - self.counts["exists"]
        remaining = max(self.total - self.done, 0)
        eta = _format_duration(remaining / rate) if rate > 0 else "?"
        return (
            f"{self.done:,}/{self.total:,}  ok {self.counts['ok']:,}"
            f"  exists {self.counts['exists']:,}  failed {failed:,}  {rate:.1f} photos/s  ETA {eta}"
        )

    def close(self) -> None:
        """Print the final line and end it with a newline."""
        text = self.line()
        if self._tty and not self.quiet:
            self.stream.write("\r" + text.ljust(self._width) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _write(self, text: str) -> None:
        if self._tty:
            # Pad so a shorter line fully covers the previous one.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = max(self._width, len(text))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --- internals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    """The result of one HTTP request: a body to validate, or a classified failure."""

    outcome: str
    status: int | None = None
    body: bytes = b""
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class _Turn:
    """What one turn of a job on a worker came to: the checks, then at most one request."""

    outcome: str
    status: int | None = None
    size: int = 0
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None
    requested: bool = True
    deadline: float | None = None  # the photo's budget end (monotonic), set by its first request


@dataclass
class _JobState:
    """A job across its turns; only the calling thread reads or writes it."""

    started: float | None = None  # perf_counter at its first turn
    deadline: float | None = None
    attempts: int = 0
    timeouts: int = 0
    last: _Turn | None = None  # its latest failure, while it waits for a retry


class _HostScheduler:
    """Hands out jobs round-robin across hosts, never more than ``per_host`` at once per host.

    Scheduling instead of a semaphore inside each worker: photos.txt is grouped by retailer, and
    workers blocked on one busy host's semaphore would leave the other hosts idle. Each host's
    jobs are a heap by (priority, index): the index is the order added, so ties keep it, and a
    retry keeps its place. A retry waits in a second heap until its not-before time; a host paused
    by Retry-After hands out nothing until then.
    """

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._ready: dict[str, list[tuple[int, int]]] = {}
        self._waiting: dict[str, list[tuple[float, int, int]]] = {}
        self._paused: dict[str, float] = {}
        self._rotation: deque[str] = deque()
        self._active: Counter[str] = Counter()

    def add(self, index: int, job: DownloadJob, not_before: float | None = None) -> None:
        """Queue a job, or a retry not to start before ``not_before`` (monotonic time)."""
        host = host_of(job.url)
        if host not in self._ready:
            # A host with nothing queued joins the end of the rotation.
            self._ready[host], self._waiting[host] = [], []
            self._rotation.append(host)
        if not_before is None:
            heapq.heappush(self._ready[host], (job.priority, index))
        else:
            heapq.heappush(self._waiting[host], (not_before, job.priority, index))

    def pause(self, host: str, until: float) -> None:
        """Start none of ``host``'s jobs before ``until`` (monotonic time)."""
        self._paused[host] = max(self._paused.get(host, 0.0), until)

    def take(self, now: float) -> tuple[int, str] | None:
        """The next (job index, host) that may start now, or None if there is none now."""
        for _ in range(len(self._rotation)):
            host = self._rotation[0]
            self._rotation.rotate(-1)
            if self._active[host] >= self.per_host or self._paused.get(host, 0.0) > now:
                continue
            ready, waiting = self._ready[host], self._waiting[host]
            while waiting and waiting[0][0] <= now:
                _, priority, index = heapq.heappop(waiting)
                heapq.heappush(ready, (priority, index))
            if not ready:
                continue
            _, index = heapq.heappop(ready)
            if not ready and not waiting:
                # rotate(-1) just moved this host to the end.
                self._rotation.pop()
                del self._ready[host], self._waiting[host]
            self._active[host] += 1
            return index, host
        return None

    def next_time(self, now: float) -> float | None:
        """The earliest time after ``now`` at which a waiting retry or a paused host may start a job.

        None when nothing queued waits for time (only for a free slot, or nothing is queued).
        """
        times = []
        for host in self._rotation:
            paused = self._paused.get(host, 0.0)
            ready, waiting = self._ready[host], self._waiting[host]
            when = paused if ready else max(paused, waiting[0][0])
            if when > now:
                times.append(when)
        return min(times, default=None)

    def drop(self, host: str) -> list[int]:
        """Remove and return the indexes of every job queued for ``host``."""
        if host not in self._ready:
            return []
        indexes = [index for _, index in self._ready.pop(host)]
        indexes += [index for _, _, index in self._waiting.pop(host)]
        self._rotation.remove(host)
        return sorted(indexes)

    def has_jobs(self) -> bool:
        """True while any job is queued, ready or waiting."""
        return bool(self._rotation)

    def release(self, host: str) -> None:
        self._active[host] -= 1


class _HostHealth:
    """Each host's last ``window`` finished requests; a host mostly failing them is skipped for good."""

    def __init__(self, window: int | None, share: float) -> None:
        self.window = window or 0
        self.share = share
        self._recent: dict[str, deque[bool]] = {}
        self.reasons: dict[str, str] = {}  # skipped host → why

    def record(self, host: str, failed: bool) -> bool:
        """Count one finished request; True when it is the one that gets ``host`` skipped."""
        if not self.window or not host or host in self.reasons:
            return False
        recent = self._recent.setdefault(host, deque(maxlen=self.window))
        recent.append(failed)
        failures = sum(recent)
        # Only a full window: the first few requests of a run say little about a host.
        if len(recent) < self.window or failures < self.share * self.window:
            return False
        self.reasons[host] = (
            f"skipped: {failures} of the last {self.window} requests to {host} failed to connect or timed out"
        )
        del self._recent[host]
        return True


class _SessionPerThread:
    """One ``requests.Session`` per worker thread (sessions are not documented as thread-safe)."""

    def __init__(self, config: DownloadConfig) -> None:
        self._config = config
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = build_session(self._config)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def host_of(url: str) -> str:
    """The lower-case host name a URL points at, or "" when it has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _run(
    given: list[DownloadJob],
    folder: Path,
    config: DownloadConfig,
    progress: Callable[[DownloadResult], None] | None,
    feed: JobFeed | None = None,
) -> list[DownloadResult]:
    # One entry per job in the order given, then put: its index is its place in the results and
    # its tie-breaker in its host's queue.
    jobs: list[DownloadJob] = []
    results: list[DownloadResult | None] = []
    states: list[_JobState] = []
    scheduler = _HostScheduler(config.per_host)
    health = _HostHealth(config.host_health_window, config.host_failure_share)
    sessions = _SessionPerThread(config)
    ids: set[int] = set()

    def finish(index: int, result: DownloadResult, *, report: bool = True) -> None:
        results[index] = result
        if progress is not None and report:
            progress(result)

    def end(index: int, turn: _Turn, note: str = "", *, report: bool = True) -> None:
        """Finish a job with ``turn``'s outcome, ``note`` added to its error."""
        state = states[index]
        error = f"{turn.error}; {note}" if turn.error and note else (turn.error or note)
        started = state.started if state.started is not None else time.perf_counter()
        result = DownloadResult(
            jobs[index].photo_id,
            jobs[index].url,
            turn.outcome,
            turn.status,
            state.attempts,
            turn.size,
            error,
            time.perf_counter() - started,
        )
        finish(index, result, report=report)

    def skip(index: int, host: str) -> None:
        turn = _Turn("connection_error", error=health.reasons[host], requested=False)
        end(index, turn)

    def add(job: DownloadJob) -> None:
        if job.photo_id in ids:
            raise ValueError(f"photo id {job.photo_id} appears more than once")
        ids.add(job.photo_id)
        index = len(jobs)
        jobs.append(job)
        results.append(None)
        states.append(_JobState())
        host = host_of(job.url)
        if host in health.reasons:
            skip(index, host)
        else:
            scheduler.add(index, job)

    def done(index: int, turn: _Turn, *, cancelled: bool = False) -> None:
        """Count a finished turn; end the job or queue its retry (keep it for the end if cancelled)."""
        job, state = jobs[index], states[index]
        host = host_of(job.url)
        scheduler.release(host)
        if turn.requested:
            state.attempts += 1
            state.deadline = turn.deadline
            state.timeouts += turn.outcome == "timeout"
            if health.record(host, turn.outcome in ("timeout", "connection_error")):
                for queued in scheduler.drop(host):
                    skip(queued, host)
        now = time.monotonic()
        if turn.retry_after is not None and turn.status in (429, 503):
            # The server asked the host, not this photo, to slow down: whether or not it is retried.
            scheduler.pause(host, now + min(turn.retry_after, config.backoff_max))
        if not turn.retryable:
            return end(index, turn)
        if host in health.reasons:
            return end(index, turn, f"not retried: {health.reasons[host]}")
        # A second timeout ends the photo: a silent URL would hold a slot for every retry.
        if state.attempts > config.retries or (turn.outcome == "timeout" and state.timeouts > 1):
            return end(index, turn)
        delay = backoff_delay(state.attempts, turn.retry_after, config)  # at least the host's pause
        if state.deadline is not None and now + delay >= state.deadline:
            return end(index, turn, _budget_spent(config))
        state.last = turn
        if cancelled:
            return
        if config.on_backoff is not None:
            config.on_backoff(delay)
        scheduler.add(index, job, now + delay)

    def start(pool: ThreadPoolExecutor, running: dict[Future[_Turn], int]) -> None:
        """Hand every job that may start now to a free worker."""
        now = time.monotonic()
        while len(running) < config.workers and (picked := scheduler.take(now)) is not None:
            index, host = picked
            state = states[index]
            if state.last is not None and state.deadline is not None and state.deadline <= now:
                # Its host was busy or paused past the photo's budget.
                scheduler.release(host)
                end(index, state.last, _budget_spent(config))
                continue
            if state.started is None:
                state.started = time.perf_counter()
            future = pool.submit(_download_one, jobs[index], folder, config, sessions.get, state.deadline)
            running[future] = index

    for job in given:
        add(job)
    cancelled = False
    try:
        with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="download") as pool:
            running: dict[Future[_Turn], int] = {}
            while True:
                for job in feed._take() if feed is not None else ():
                    add(job)
                if feed is not None and feed.cancelled:
                    cancelled = True
                    break
                start(pool, running)
                wake = scheduler.next_time(time.monotonic())
                if not running:
                    if wake is None and not scheduler.has_jobs():
                        # Every job is done: end, or wait for more.
                        if feed is None or feed._wait(_FEED_POLL):
                            break
                    elif wake is not None:
                        # Nothing runs until a retry is due or a host's pause ends.
                        pause = max(0.0, wake - time.monotonic())
                        if feed is None:
                            time.sleep(pause)
                        else:
                            feed._nap(min(pause, _FEED_POLL))
                    continue
                # With a feed, wake up now and then to hand new jobs to idle workers; wake up when a
                # retry is due too, as a worker may be free for it.
                timeouts = [_FEED_POLL] if feed is not None else []
                if wake is not None:
                    timeouts.append(max(0.0, wake - time.monotonic()))
                finished, _ = wait(running, timeout=min(timeouts, default=None), return_when=FIRST_COMPLETED)
                for future in finished:
                    done(running.pop(future), future.result())
            if cancelled:
                # No new requests: the ones in flight end as they are.
                for future in list(running):
                    index = running.pop(future)
                    done(index, future.result(), cancelled=True)
                # A photo whose retry the cancel cut short ends with the failure it last had, but is
                # not reported to ``progress``: it did not finish, so a caller recording failures
                # (the seeding pipeline) must not skip it next run as failed.
                for index, state in enumerate(states):
                    if results[index] is None and state.last is not None:
                        end(index, state.last, "not retried: the run was cancelled", report=False)
    finally:
        sessions.close()
    return [result for result in results if result is not None]


def _budget_spent(config: DownloadConfig) -> str:
    return f"gave up: the photo's {config.total_timeout:g} s budget was spent"


def _download_one(
    job: DownloadJob,
    folder: Path,
    config: DownloadConfig,
    get_session: Callable[[], requests.Session],
    deadline: float | None,
) -> _Turn:
    """One turn of a job: on its first (``deadline`` None) the checks, then at most one request.

    A retry is another turn: the calling thread decides it, so a backoff never holds a worker.
    """
    if deadline is None:
        final = folder / photo_filename(job.photo_id)
        if _is_present(final, config):
            return _Turn("exists", size=final.stat().st_size, requested=False)
        scheme = urlsplit(job.url).scheme.lower() if host_of(job.url) else ""
        if scheme not in ("http", "https"):
            return _Turn("invalid_url", error="not an http(s) URL with a host", requested=False)
        deadline = time.monotonic() + config.total_timeout
    attempt = _fetch_once(get_session(), job.url, config, deadline)
    if attempt.outcome != "ok":
        return _Turn(
            attempt.outcome, attempt.status, 0, attempt.error, attempt.retryable, attempt.retry_after, deadline=deadline
        )
    outcome, error = _validate(attempt.body, config)
    if outcome == "ok":
        final = folder / photo_filename(job.photo_id)
        # A .part name, which the next run deletes if this process is killed mid-write.
        atomic_write_bytes(final, attempt.body, prefix=f".{final.name}{PART_MARKER}", suffix="")
    return _Turn(outcome, attempt.status, len(attempt.body), error, deadline=deadline)


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def _fetch_once(session: requests.Session, url: str, config: DownloadConfig, deadline: float) -> _Attempt:
    """One GET, its redirects followed by hand before ``deadline`` (the photo's budget, monotonic).

    Only the final 2xx body is read: requests would read each redirect's body whole (40 MB, a drip,
    a gzip bomb) outside our size and time limits; here a redirect's connection is closed instead.
    """
    current = url
    for _hop in range(config.max_redirects + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return _Attempt("timeout", error=f"redirects not done in {config.total_timeout:g} s", retryable=True)
        if urlsplit(current).scheme.lower() not in ("http", "https") or not host_of(current):
            return _Attempt("invalid_url", error=f"redirect to a URL that is not http(s) with a host: {current[:200]}")
        refusal, address = check_destination(current, config.allowed_hosts)
        if refusal:
            return _Attempt("refused_address", error=refusal)
        _pins.addresses = {_host_and_port(current): address} if address else {}
        try:
            attempt_or_response = _request(session, current, config, left)
        finally:
            _pins.addresses = {}
        if isinstance(attempt_or_response, _Attempt):
            return attempt_or_response
        with attempt_or_response as response:
            status = response.status_code
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                current = urljoin(current, location)
                continue  # leaving the block closes the connection: the redirect's body stays unread
            if status == 429 or 500 <= status <= 599:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return _Attempt("http_error", status, error=f"HTTP {status}", retryable=True, retry_after=retry_after)
            if not 200 <= status <= 299:
                return _Attempt("http_error", status, error=f"HTTP {status}")
            return _read_body(response, config, deadline)
    return _Attempt("too_many_redirects", error=f"more than {config.max_redirects} redirects")


def _host_and_port(url: str) -> tuple[str, int]:
    """The host (lowercase) and port a URL connects to; ValueError for a port that is not a number."""
    parts = urlsplit(url)
    # A trailing dot names the same host (urllib3 keeps it for DNS, drops it elsewhere).
    return (parts.hostname or "").rstrip(".").lower(), parts.port or (443 if parts.scheme.lower() == "https" else 80)


def check_destination(url: str, allowed_hosts: frozenset[str] = frozenset()) -> tuple[str | None, str | None]:
    """(why ``url`` must not be fetched, or None; the checked address to connect to, or None).

    Checked before every hop, so neither photos.txt nor a redirect can point the downloader at the
    machine itself, the private network or a cloud metadata service (169.254.169.254 is link-local).
    The request then connects to the address checked here (see _PinnedAdapter), not to whatever a
    second DNS lookup would answer.
    """
    try:
        host, port = _host_and_port(url)
    except ValueError:
        return "the URL's port is not a number", None
    allowed = host in allowed_hosts or f"{host}:{port}" in allowed_hosts or f"[{host}]:{port}" in allowed_hosts
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        return None, None  # unresolvable: the request itself fails as a connection error
    for address in addresses if not allowed else ():
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return f"{host} resolves to {ip}, which is not a public address", None
    return None, (addresses[0] if addresses else None)


# The address each (host, port) of the current hop was checked at, per download thread.
_pins = threading.local()


def _pinned_address(host: str, port: int) -> str | None:
    return getattr(_pins, "addresses", {}).get((host.rstrip(".").lower(), port))


class _PinnedConnection:
    """Connects to the address check_destination approved; TLS still verifies the host name."""

    def _new_conn(self):
        pinned = _pinned_address(self._dns_host, self.port)
        if pinned is None:
            return super()._new_conn()
        named, self._dns_host = self._dns_host, pinned
        try:
            return super()._new_conn()
        finally:
            self._dns_host = named  # before the TLS handshake reads the host for SNI and the certificate


class _PinnedHTTPConnection(_PinnedConnection, urllib3.connection.HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnection, urllib3.connection.HTTPSConnection):
    pass


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def _request(session: requests.Session, url: str, config: DownloadConfig, left: float) -> requests.Response | _Attempt:
    """One hop: its response with the body unread, or the attempt's failure."""
    try:
        return session.get(
            url,
            stream=True,
            allow_redirects=False,
            timeout=(min(config.connect_timeout, left), min(config.read_timeout, left)),
        )
    except requests.exceptions.Timeout as exc:
        return _Attempt("timeout", error=_describe(exc), retryable=True)
    except requests.exceptions.SSLError as exc:
        # A bad certificate stays bad; retrying only triples the time spent on it.
        return _Attempt("connection_error", error=_describe(exc))
    except requests.exceptions.ConnectionError as exc:
        # Refused, reset, DNS failure: often transient on retailers' servers.
        return _Attempt("connection_error", error=_describe(exc), retryable=True)
    except ValueError as exc:
        # requests' InvalidURL/MissingSchema/InvalidSchema, and urllib3 LocationParseError, which
        # requests lets through for some IDNA host names.
        return _Attempt("invalid_url", error=_describe(exc))
    except requests.RequestException as exc:
        return _Attempt("connection_error", error=_describe(exc), retryable=True)


def _read_body(response: requests.Response, config: DownloadConfig, deadline: float) -> _Attempt:
    """Stream the body into memory, giving up past ``max_bytes`` or the attempt's deadline.

    Bodies are read as sent: a photo needs no Content-Encoding, and inflating one would put a
    compression bomb past ``max_bytes`` before the count saw it.
    """
    status = response.status_code
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return _Attempt("not_an_image", status, error=f"Content-Encoding {encoding[:40]}: a photo is sent as is")
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > config.max_bytes:
        return _Attempt("too_large", status, error=f"Content-Length {declared} > {config.max_bytes}")
    body = bytearray()
    raw = response.raw
    try:
        while True:
            # read1, not iter_content: iter_content blocks until a whole chunk has arrived, so a
            # server sending a byte a second would never reach the deadline check.
            chunk = raw.read1(_CHUNK_SIZE, decode_content=False)
            if not chunk:
                break
            body += chunk
            if len(body) > config.max_bytes:
                return _Attempt("too_large", status, error=f"body > {config.max_bytes} bytes")
            if time.monotonic() > deadline:
                error = f"photo not done in {config.total_timeout:g} s"
                return _Attempt("timeout", status, error=error, retryable=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        return _Attempt("timeout", status, error=_describe(exc), retryable=True)
    except urllib3.exceptions.DecodeError as exc:
        # A broken gzip/deflate body: the server will send the same bytes again.
        return _Attempt("not_an_image", status, error=_describe(exc))
    except urllib3.exceptions.HTTPError as exc:
        # ProtocolError, IncompleteRead, SSLError: the connection dropped mid-body.
        return _Attempt("connection_error", status, error=_describe(exc), retryable=True)
    return _Attempt("ok", status, body=bytes(body))


def _validate(body: bytes, config: DownloadConfig) -> tuple[str, str]:
    """Map open_image's verdict on the downloaded bytes to an outcome and an error message."""
    try:
        image = open_image(
            body,
            max_pixels=config.max_pixels,
            max_bytes=config.max_bytes,
            allowed_formats=config.allowed_formats,
        )
    except (EmptyImage, NotAnImage, UnsupportedFormat) as exc:
        return "not_an_image", _describe(exc)
    except TruncatedImage as exc:
        return "truncated", _describe(exc)
    except ImageTooLarge as exc:
        return "too_large", _describe(exc)
    image.close()
    return "ok", ""


def _is_present(final: Path, config: DownloadConfig) -> bool:
    try:
        if final.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    if not config.verify_existing:
        return True
    try:
        open_image(final, max_pixels=config.max_pixels, allowed_formats=config.allowed_formats).close()
    except ImageError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}"[:500] if text else name


def _format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``folder/.download.lock`` or raise DownloadDirBusy."""
    with ExitStack() as stack:
        # Only taking the lock may mean busy; a BlockingIOError from the run itself is not this.
        try:
            stack.enter_context(exclusive_lock(folder / LOCK_NAME, blocking=False))
        except BlockingIOError:
            raise DownloadDirBusy(f"another download is already writing into {folder}") from None
        yield
