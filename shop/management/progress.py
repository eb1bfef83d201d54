"""Polling helpers that show a worker's progress from a management command, and a stdout for progress lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from django.core.management.base import OutputWrapper

from shop.street2shop.progress import Rate, StatusLine


def bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def rate_text(rate: Rate, done: int, total: int) -> str:
    """ " 2.0/s, ETA 0:35" from the first reading on ("" until there is progress to measure)."""
    measured = rate(done, total)
    if measured is None:
        return ""
    per_second, left = measured
    return f" {per_second:.1f}/s, ETA {int(left // 60)}:{int(left % 60):02d}"


def wait_until(
    poll: Callable[[], tuple[bool, str, object]],
    *,
    stream: TextIO = sys.stdout,
    interval: float = 1.0,
    stall_timeout: float = 600.0,
    log_interval: float = 10.0,
) -> bool:
    """Call `poll` until it says done, showing its line; False if its progress marker stood still too long.

    The line goes through the dataset commands' StatusLine: redrawn in place on a terminal, in a log
    (CI, `make demo | tee`) written at most every `log_interval` seconds.
    """
    status = StatusLine(stream, interval=0, log_interval=log_interval)
    last_line = last_marker = None
    last_change = time.monotonic()
    while True:
        done, line, marker = poll()
        now = time.monotonic()
        if marker != last_marker:
            last_marker, last_change = marker, now
        if done:
            status.end(line)
            return True
        if line != last_line:
            last_line = line
            status.show(line)
        if now - last_change > stall_timeout:
            stream.write(f"\nno progress for {stall_timeout:.0f} s: are the workers running?\n")
            return False
        time.sleep(interval)


class Unbuffered:
    """A command's stdout for a progress line that ends its own lines: OutputWrapper adds a newline to every write."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        # A command called with another command's stdout (the demo seeding) wraps a wrapper: write to
        # the innermost, or every redraw of the line would get a newline from the outer one.
        inner = getattr(wrapper, "_out", None)
        while isinstance(inner, OutputWrapper):
            wrapper, inner = inner, getattr(inner, "_out", None)
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="")

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()
