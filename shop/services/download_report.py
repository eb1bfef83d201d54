"""What a download-and-seed run reports (its counts and the photos products lost) and records (each photo's outcome)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from shop.models import PhotoDownload
from shop.services.seeding import SeedReport
from shop.street2shop.jobs import DownloadResult


@dataclass(slots=True)
class PhotoFailure:
    """A photo a product could not use: a failed download, no URL, a bad image or a bad box."""

    photo_id: int
    kind: str  # "shop" or "street"
    product_ids: list[int]
    outcome: str  # a download outcome, "not_listed", "bad_image" or "bad_bbox"
    url: str = ""
    http_status: int | None = None
    attempts: int = 0
    error: str = ""
    earlier_run: bool = False  # failed in an earlier run and not requested this time


@dataclass
class DownloadSeedReport:
    """What one ``download_and_seed`` run fetched and seeded; photos are counted once each."""

    category: str
    seed: SeedReport
    limit: int | None = None
    workers: int = 0
    photos_needed: int = 0
    photos_present: int = 0  # on disk before this run needed them (downloaded earlier, or photos.tar)
    outcomes: Counter[str] = field(default_factory=Counter)  # this run's downloads
    failed_earlier: Counter[str] = field(default_factory=Counter)  # not requested again, by last outcome
    not_listed: int = 0
    requests: int = 0
    download_seconds: float = 0.0  # from the first request to the last answer
    failures: list[PhotoFailure] = field(default_factory=list)

    @property
    def downloaded(self) -> int:
        """Photos this run requested, whatever came of it."""
        return sum(self.outcomes.values())

    @property
    def photos_per_second(self) -> float:
        return self.downloaded / self.download_seconds if self.download_seconds else 0.0


def record_photo_downloads(*, results: Iterable[DownloadResult]) -> int:
    """Keep each photo's latest download outcome, one row per photo id; "exists" is no download."""
    rows = [
        PhotoDownload(
            photo_id=result.photo_id,
            url=result.url,
            outcome=result.outcome,
            http_status=result.http_status,
            attempts=min(result.attempts, 32767),
            error=result.error,
            bytes=result.bytes,
        )
        for result in results
        if result.outcome != "exists"
    ]
    if rows:
        PhotoDownload.objects.bulk_create(
            rows,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["photo_id"],
            update_fields=["url", "outcome", "http_status", "attempts", "error", "bytes", "updated_at"],
        )
    return len(rows)
