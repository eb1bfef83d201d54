"""The one terminal progress line of the dataset commands: count, rate and time left, redrawn in place."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shop.street2shop.jobs import DownloadResult


class Stream(Protocol):
    """Where the line goes: a text file, or a wrapper such as a management command's stdout."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...


class StatusLine:
    """One status line on a stream: redrawn in place on a terminal; elsewhere (a log) written as full
    lines, at most one every ``log_interval`` seconds, so quiet runs stay short."""

    def __init__(
        self,
        stream: Stream,
        *,
        interval: float = 0.5,
        log_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = _isatty(stream)
        self._interval = interval if self.tty else log_interval
        self._last: float | None = None
        self._width = 0

    def show(self, text: str) -> None:
        """Draw ``text`` if the last line is old enough (the first one always)."""
        now = self.clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        if self.tty:
            # Pad so a shorter line fully covers the previous one.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = max(self._width, len(text))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self, text: str) -> None:
        """Write the final line (over the drawn one on a terminal) and end it."""
        if self.tty and self._width:
            self.stream.write("\r" + text.ljust(self._width) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class Rate:
    """Items per second and seconds left, measured from the first reading (work done before it is not counted)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> tuple[float, float] | None:
        """(rate, seconds left), or None until there is progress to measure."""
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return None
        seconds, progressed = now - self.start[0], done - self.start[1]
        if seconds <= 0 or progressed <= 0:
            return None
        rate = progressed / seconds
        return rate, max(total - done, 0) / rate


class ProgressPrinter:
    """One updating line: ``done/total``, what a subclass adds in ``details()``, the rate and the ETA.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; on anything else
    (a log file) a full line is written every ``log_interval`` seconds. ``quiet`` prints only the
    final line from ``close()``.
    """

    def __init__(
        self,
        total: int,
        *,
        unit: str = "items",
        stream: Stream | None = None,
        quiet: bool = False,
        interval: float = 0.5,
        log_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.unit = unit
        self.stream: Stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.done = 0
        self._status = StatusLine(self.stream, interval=interval, log_interval=log_interval, clock=clock)
        self._rate = Rate(clock)
        self._rate(0, total)  # the run starts now, at nothing done

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items done; print the line if it is time to."""
        self.done += count
        if not self.quiet:
            self._status.show(self.line())

    def update(self, done: int, total: int) -> None:
        """Set the count and the total outright, for callbacks that report ``(done, total)``."""
        self.total = total
        self.advance(done - self.done)

    def details(self) -> str:
        """Text after the count, starting with its separator; subclasses say what the items came to."""
        return ""

    def line(self) -> str:
        """The status text, e.g. ``1,234/425,000  ...  12.3 photos/s  ETA 9:12:05``."""
        measured = self._rate(self.done, self.total)
        rate, left = measured if measured is not None else (0.0, 0.0)
        eta = _format_duration(left) if measured is not None else "?"
        return f"{self.done:,}/{self.total:,}{self.details()}  {rate:.1f} {self.unit}/s  ETA {eta}"

    def close(self) -> None:
        """Print the final line and end it with a newline."""
        self._status.end(self.line())

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DownloadProgress(ProgressPrinter):
    """A ``download_photos`` progress callback: the line with how many photos were ok, there or failed."""

    def __init__(self, total: int, **options: Any) -> None:
        super().__init__(total, unit="photos", **options)
        self.counts: Counter[str] = Counter()

    def __call__(self, result: DownloadResult) -> None:
        self.counts[result.outcome] += 1
        self.advance()

    def details(self) -> str:
        ok, exists = self.counts["ok"], self.counts["exists"]
        return f"  ok {ok:,}  exists {exists:,}  failed {self.done - ok - exists:,}"


def _format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _isatty(stream: Stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed file
        return False
