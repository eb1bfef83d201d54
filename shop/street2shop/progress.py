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
        self.clock = clock
        self.done = 0
        self._started = clock()
        self._last_print: float | None = None
        self._width = 0
        self._tty = _isatty(self.stream)
        self._interval = interval if self._tty else log_interval

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items done; print the line if it is time to."""
        self.done += count
        if self.quiet:
            return
        now = self.clock()
        if self._last_print is None or now - self._last_print >= self._interval:
            self._last_print = now
            self._write(self.line())

    def update(self, done: int, total: int) -> None:
        """Set the count and the total outright, for callbacks that report ``(done, total)``."""
        self.total = total
        self.advance(done - self.done)

    def details(self) -> str:
        """Text after the count, starting with its separator; subclasses say what the items came to."""
        return ""

    def line(self) -> str:
        """The status text, e.g. ``1,234/425,000  ...  12.3 photos/s  ETA 9:12:05``."""
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = self.done / elapsed
        remaining = max(self.total - self.done, 0)
        eta = _format_duration(remaining / rate) if rate > 0 else "?"
        return f"{self.done:,}/{self.total:,}{self.details()}  {rate:.1f} {self.unit}/s  ETA {eta}"

    def close(self) -> None:
        """Print the final line and end it with a newline."""
        text = self.line()
        if self._tty and not self.quiet:
            self.stream.write("\r" + text.ljust(self._width) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, text: str) -> None:
        if self._tty:
            # Pad so a shorter line fully covers the previous one.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = max(self._width, len(text))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


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
