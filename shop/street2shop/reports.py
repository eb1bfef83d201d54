"""CSV reports of photos that could not be used, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

FAILURE_COLUMNS = ("photo_id", "url", "outcome", "http_status", "attempts", "error")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Failure(Protocol):
    """What a failures CSV row is made of: a DownloadResult, or a caller's record with these fields."""

    # Properties: read-only here, so frozen dataclasses fit too.
    @property
    def photo_id(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def error(self) -> str: ...


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


def spreadsheet_safe(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe; numbers stay numbers.

    URLs and error texts come from servers nobody here controls: "=HYPERLINK(...)" must stay text.
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell
