"""Polling helpers that show a worker's progress from a management command."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def wait_until(
    poll: Callable[[], tuple[bool, str]],
    *,
    stream: TextIO = sys.stdout,
    interval: float = 1.0,
    stall_timeout: float = 600.0,
) -> bool:
    """Call `poll` until it says done; print its line when it changes. False if nothing moved for too long."""
    last_line = None
    last_change = time.monotonic()
    while True:
        done, line = poll()
        if line != last_line:
            stream.write(("\r" if stream.isatty() else "") + line + ("" if stream.isatty() else "\n"))
            stream.flush()
            last_line = line
            last_change = time.monotonic()
        if done:
            if stream.isatty():
                stream.write("\n")
            return True
        if time.monotonic() - last_change > stall_timeout:
            stream.write(f"\nno progress for {stall_timeout:.0f} s: are the workers running?\n")
            return False
        time.sleep(interval)
