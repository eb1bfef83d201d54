"""Download Street2Shop photos from retailers' servers into a folder of ``<id:09d>.jpg`` files.

A management command or a task wraps ``download_photos``; one photo's request is ``fetch.py``'s,
the order photos start in is ``scheduler.py``'s.

What a run guarantees:

- Only bytes that decode as an image ever get a final name, written to a ``.<name>.part-*`` file,
  fsynced and renamed with ``os.replace``; a killed run leaves at most ``.part`` files, which the
  next run deletes. The bytes are stored as downloaded (never re-encoded), so a ``.jpg`` may hold a
  PNG or WebP, as in the dataset's own ``photos.tar``.
- A photo already in the folder is ``"exists"`` and not fetched. The check is cheap (a non-empty
  file under the final name) because this module only renames validated files into place.
- One run per folder at a time (an ``flock`` on ``.download.lock``), which is what makes deleting
  every ``.part`` file at start safe.
- Unexpected errors (a full disk, a bug) end the run instead of being recorded 425,000 times; the
  photos written so far stay, so running again resumes.

How a run schedules (see ``_Run``):

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

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from shop.street2shop.fetch import SessionPerThread, backoff_delay, fetch_once, host_of, validate
from shop.street2shop.jobs import DownloadConfig, DownloadJob, DownloadResult
from shop.street2shop.metadata import photo_filename
from shop.street2shop.scheduler import HostHealth, HostScheduler
from similarity.files import atomic_write_bytes, exclusive_lock

PART_MARKER = ".part-"
LOCK_NAME = ".download.lock"
_FEED_POLL = 0.05
_DEFAULT_CONFIG = DownloadConfig()


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


def download_photos(
    jobs: Sequence[DownloadJob],
    dest_dir: str | os.PathLike[str],
    *,
    config: DownloadConfig = _DEFAULT_CONFIG,
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
        return _Run(folder, config, progress, feed).run(jobs)


def remove_stale_parts(dest_dir: str | os.PathLike[str]) -> int:
    """Delete ``.part`` files left by a killed run; return how many. Call only under the lock."""
    removed = 0
    for path in Path(dest_dir).glob(f".*{PART_MARKER}*"):
        with suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


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

    deadline: float | None = None
    attempts: int = 0
    timeouts: int = 0
    last: _Turn | None = None  # its latest failure, while it waits for a retry


class _Run:
    """One ``download_photos`` call: its jobs' states and results, and the loop handing turns to workers.

    Only the calling thread touches it; workers run ``_download_one`` and hand a ``_Turn`` back.
    """

    def __init__(
        self,
        folder: Path,
        config: DownloadConfig,
        progress: Callable[[DownloadResult], None] | None,
        feed: JobFeed | None,
    ) -> None:
        self.folder, self.config, self.progress, self.feed = folder, config, progress, feed
        # One entry per job in the order given, then put: its index is its place in the results and
        # its tie-breaker in its host's queue.
        self.jobs: list[DownloadJob] = []
        self.results: list[DownloadResult | None] = []
        self.states: list[_JobState] = []
        self.ids: set[int] = set()
        self.scheduler = HostScheduler(config.per_host)
        self.health = HostHealth(config.host_health_window, config.host_failure_share)
        self.sessions = SessionPerThread(config)
        self.running: dict[Future[_Turn], int] = {}

    def run(self, given: Sequence[DownloadJob]) -> list[DownloadResult]:
        for job in given:
            self._add(job)
        try:
            with ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="download") as pool:
                if self._loop(pool):
                    self._wind_down()
        finally:
            self.sessions.close()
        return [result for result in self.results if result is not None]

    def _loop(self, pool: ThreadPoolExecutor) -> bool:
        """Hand out turns until every job is done (False) or the feed is cancelled (True)."""
        feed = self.feed
        while True:
            for job in feed._take() if feed is not None else ():
                self._add(job)
            if feed is not None and feed.cancelled:
                return True
            self._start(pool)
            wake = self.scheduler.next_time(time.monotonic())
            if not self.running:
                if wake is None and not self.scheduler.has_jobs():
                    # Every job is done: end, or wait for more.
                    if feed is None or feed._wait(_FEED_POLL):
                        return False
                elif wake is not None:
                    self._idle_until(wake)
                continue
            self._collect(wake)

    def _idle_until(self, wake: float) -> None:
        """Nothing runs until a retry is due or a host's pause ends: wait for that (or a new job)."""
        pause = max(0.0, wake - time.monotonic())
        if self.feed is None:
            time.sleep(pause)
        else:
            self.feed._nap(min(pause, _FEED_POLL))

    def _collect(self, wake: float | None) -> None:
        """Book the turns that finish before the next reason to look again."""
        # With a feed, wake up now and then to hand new jobs to idle workers; wake up when a retry
        # is due too, as a worker may be free for it.
        timeouts = [_FEED_POLL] if self.feed is not None else []
        if wake is not None:
            timeouts.append(max(0.0, wake - time.monotonic()))
        finished, _ = wait(self.running, timeout=min(timeouts, default=None), return_when=FIRST_COMPLETED)
        for future in finished:
            self._done(self.running.pop(future), future.result())

    def _wind_down(self) -> None:
        """After a cancel: no new requests; the ones in flight end as they are."""
        for future in list(self.running):
            index = self.running.pop(future)
            self._done(index, future.result(), cancelled=True)
        # A photo whose retry the cancel cut short ends with the failure it last had, but is not
        # reported to ``progress``: it did not finish, so a caller recording failures (the seeding
        # pipeline) must not skip it next run as failed.
        for index, state in enumerate(self.states):
            if self.results[index] is None and state.last is not None:
                self._end(index, state.last, "not retried: the run was cancelled", report=False)

    def _add(self, job: DownloadJob) -> None:
        if job.photo_id in self.ids:
            raise ValueError(f"photo id {job.photo_id} appears more than once")
        self.ids.add(job.photo_id)
        index = len(self.jobs)
        self.jobs.append(job)
        self.results.append(None)
        self.states.append(_JobState())
        host = host_of(job.url)
        if host in self.health.reasons:
            self._skip(index, host)
        else:
            self.scheduler.add(index, job)

    def _start(self, pool: ThreadPoolExecutor) -> None:
        """Hand every job that may start now to a free worker."""
        now = time.monotonic()
        while len(self.running) < self.config.workers and (picked := self.scheduler.take(now)) is not None:
            index, host = picked
            state = self.states[index]
            if state.last is not None and state.deadline is not None and state.deadline <= now:
                # Its host was busy or paused past the photo's budget.
                self.scheduler.release(host)
                self._end(index, state.last, _budget_spent(self.config))
                continue
            args = (self.jobs[index], self.folder, self.config, self.sessions.get, state.deadline)
            self.running[pool.submit(_download_one, *args)] = index

    def _done(self, index: int, turn: _Turn, *, cancelled: bool = False) -> None:
        """Count a finished turn; end the job or queue its retry (keep it for the end if cancelled)."""
        job, state, config = self.jobs[index], self.states[index], self.config
        host = host_of(job.url)
        self.scheduler.release(host)
        if turn.requested:
            state.attempts += 1
            state.deadline = turn.deadline
            state.timeouts += turn.outcome == "timeout"
            if self.health.record(host, turn.outcome in ("timeout", "connection_error")):
                for queued in self.scheduler.drop(host):
                    self._skip(queued, host)
        now = time.monotonic()
        if turn.retry_after is not None and turn.status in (429, 503):
            # The server asked the host, not this photo, to slow down: whether or not it is retried.
            self.scheduler.pause(host, now + min(turn.retry_after, config.backoff_max))
        if not turn.retryable:
            return self._end(index, turn)
        if host in self.health.reasons:
            return self._end(index, turn, f"not retried: {self.health.reasons[host]}")
        # A second timeout ends the photo: a silent URL would hold a slot for every retry.
        if state.attempts > config.retries or (turn.outcome == "timeout" and state.timeouts > 1):
            return self._end(index, turn)
        delay = backoff_delay(state.attempts, turn.retry_after, config)  # at least the host's pause
        if state.deadline is not None and now + delay >= state.deadline:
            return self._end(index, turn, _budget_spent(config))
        state.last = turn
        if cancelled:
            return
        if config.on_backoff is not None:
            config.on_backoff(delay)
        self.scheduler.add(index, job, now + delay)

    def _skip(self, index: int, host: str) -> None:
        self._end(index, _Turn("connection_error", error=self.health.reasons[host], requested=False))

    def _end(self, index: int, turn: _Turn, note: str = "", *, report: bool = True) -> None:
        """Finish a job with ``turn``'s outcome, ``note`` added to its error."""
        error = f"{turn.error}; {note}" if turn.error and note else (turn.error or note)
        job = self.jobs[index]
        result = DownloadResult(
            job.photo_id, job.url, turn.outcome, turn.status, self.states[index].attempts, turn.size, error
        )
        self.results[index] = result
        if self.progress is not None and report:
            self.progress(result)


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
        if _is_present(final):
            return _Turn("exists", size=final.stat().st_size, requested=False)
        scheme = urlsplit(job.url).scheme.lower() if host_of(job.url) else ""
        if scheme not in ("http", "https"):
            return _Turn("invalid_url", error="not an http(s) URL with a host", requested=False)
        deadline = time.monotonic() + config.total_timeout
    attempt = fetch_once(get_session(), job.url, config, deadline)
    if attempt.outcome != "ok":
        return _Turn(
            attempt.outcome, attempt.status, 0, attempt.error, attempt.retryable, attempt.retry_after, deadline=deadline
        )
    outcome, error = validate(attempt.body, config)
    if outcome == "ok":
        final = folder / photo_filename(job.photo_id)
        # A .part name, which the next run deletes if this process is killed mid-write.
        atomic_write_bytes(final, attempt.body, prefix=f".{final.name}{PART_MARKER}", suffix="")
    return _Turn(outcome, attempt.status, len(attempt.body), error, deadline=deadline)


def _is_present(final: Path) -> bool:
    """A non-empty file under the final name: only validated photos are renamed into place."""
    try:
        return final.stat().st_size > 0
    except FileNotFoundError:
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
