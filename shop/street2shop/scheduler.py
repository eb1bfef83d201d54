"""Which photo a download run starts next (hosts take turns, a few requests each) and which hosts it gives up on."""

from __future__ import annotations

import heapq
from collections import Counter, deque

from shop.street2shop.fetch import host_of
from shop.street2shop.jobs import DownloadJob


class HostScheduler:
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


class HostHealth:
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
