"""Polling helpers that show a worker's progress from a management command, and a stdout for progress lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from django.core.management.base import OutputWrapper


def bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


class RateMeter:
    """Items per second and the time left, measured from the first reading."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> str:
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return ""
        seconds, progressed = now - self.start[0], done - self.start[1]
        if seconds <= 0 or progressed <= 0:
            return ""
        rate = progressed / seconds
        left = max(total - done, 0) / rate
        return f" {rate:.1f}/s, ETA {int(left // 60)}:{int(left % 60):02d}"


def wait_until(
    poll: Callable[[], tuple[bool, str, object]],
    *,
    stream: TextIO = sys.stdout,
    interval: float = 1.0,
    stall_timeout: float = 600.0,
    log_interval: float = 10.0,
) -> bool:
    """Call `poll` until it says done, showing its line; False if its progress marker stood still too long.

    On a terminal the line is redrawn in place; in a log (CI, `make demo | tee`) a line is
    written at most every `log_interval` seconds, so quiet runs stay short.
    """
    tty = stream.isatty()
    last_line = last_marker = None
    last_change = last_written = time.monotonic()
    written = False
    while True:
        done, line, marker = poll()
        now = time.monotonic()
        if marker != last_marker:
            last_marker, last_change = marker, now
        if line != last_line:
            last_line = line
            if tty:
                stream.write("\r" + line)
            elif done or not written or now - last_written >= log_interval:
                stream.write(line + "\n")
                last_written, written = now, True
            stream.flush()
        if done:
            if tty:
                stream.write("\n")
            return True
        if now - last_change > stall_timeout:
            stream.write(f"\nno progress for {stall_timeout:.0f} s: are the workers running?\n")
            return False
        time.sleep(interval)


class Unbuffered:
    """A command's stdout for a progress line that ends its own lines: OutputWrapper adds a newline to every write."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="")

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()
