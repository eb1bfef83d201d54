"""Reading ``photos.txt``: one ``<photo id>,<url>`` line per photo of the dataset."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from shop.street2shop.jobs import DownloadJob
from shop.street2shop.metadata import MAX_ID_DIGITS


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
