"""Queue feature and embedding work for the whole catalogue on the Celery workers."""

from __future__ import annotations

from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop import selectors
from shop.management.progress import bar, rate_text, wait_until
from shop.models import Category
from shop.services.enqueue import queue_catalogue_indexing
from shop.street2shop.progress import Rate


class Command(BaseCommand):
    help = "Queue VGG19 features (and active-model embeddings) for every product and street photo."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--category", default=Category.DRESSES, choices=Category.values)
        parser.add_argument("--wait", action="store_true", help="show progress until the workers are done")
        parser.add_argument("--stall-timeout", type=float, default=600.0)

    def handle(self, *args: Any, category: str, wait: bool, stall_timeout: float, **options: Any) -> None:
        queued = queue_catalogue_indexing(category=category)
        self.stdout.write(f"queued {queued['products']} products and {queued['street_photos']} street photos")
        if not wait:
            return

        rate = Rate()

        def poll() -> tuple[bool, str, object]:
            p = selectors.indexing_progress(category=category)
            done = p["shop_images_done"] + p["street_photos_done"]
            total = p["shop_images"] + p["street_photos"]
            embedded = p["products_embedded"] if selectors.active_version(category=category) else None
            finished = done >= total and (embedded is None or embedded >= p["products"])
            line = f"features {bar(done, total)}{rate_text(rate, done, total)}"
            if embedded is not None:
                line += f"  embeddings {embedded}/{p['products']}"
            return finished, line, (done, embedded)

        # OutputWrapper is a text stream over the command's stdout; wait_until calls only isatty, write, flush.
        stream = cast(TextIO, self.stdout)
        if not wait_until(poll, stream=stream, stall_timeout=stall_timeout):
            raise CommandError("indexing did not finish")
        self.stdout.write(self.style.SUCCESS("catalogue indexed"))
