"""Delete shoppers' searches and their photos after SEARCH_RETENTION_HOURS (schedule it hourly)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.services.search import end_overdue_searches, purge_searches


class Command(BaseCommand):
    help = "Delete searches (rows and photos) older than SEARCH_RETENTION_HOURS and end overdue ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hours", type=float, help="Keep this many hours instead of SEARCH_RETENTION_HOURS.")

    def handle(self, *args: Any, hours: float | None, **options: Any) -> None:
        if hours is not None and hours * 3600 <= settings.SEARCH_TIMEOUT_SECONDS:
            raise CommandError("--hours must be longer than SEARCH_TIMEOUT_SECONDS: it would delete running searches")
        ended = end_overdue_searches()
        deleted = purge_searches(older_than=timedelta(hours=hours) if hours is not None else None)
        self.stdout.write(f"Ended {ended} overdue search(es); deleted {deleted} old search(es) and their photos.")
