"""The scheduler of a download-and-seed run: which photos to fetch next, and seeding each product as its photos settle."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from shop import selectors
from shop.models import PhotoDownload
from shop.services.download_report import DownloadSeedReport, PhotoFailure, record_photo_downloads
from shop.services.enqueue import IndexQueue
from shop.services.seeding import BAD_BBOX, BAD_IMAGE, INDEX_CHUNK, SeedReport, seed_products
from shop.services.street2shop_dataset import Street2ShopDataset
from shop.street2shop.download import JobFeed, download_photos
from shop.street2shop.jobs import DownloadConfig, DownloadJob, DownloadResult
from shop.street2shop.photos_txt import PhotoList
from shop.street2shop.progress import DownloadProgress, Stream

# Indexing tasks carry INDEX_CHUNK products; a part batch is sent after this long, so a slow
# download still feeds the workers.
INDEX_FLUSH_SECONDS = 10.0
RECORD_BATCH = 200
NOT_LISTED = PhotoDownload.Outcome.NOT_LISTED.value
_DONE = object()


class _Progress(DownloadProgress):
    """The download line, plus how many products exist so far."""

    def __init__(self, total: int, *, report: DownloadSeedReport, stream: Stream, quiet: bool) -> None:
        super().__init__(total, stream=stream, quiet=quiet)
        self.report = report

    def line(self) -> str:
        target = f"/{self.report.limit:,}" if self.report.limit is not None else ""
        return f"{super().line()}  products {self.report.seed.products_seeded:,}{target}"


@dataclass(slots=True)
class _Product:
    """A product this run is working on: the photos it waits for and those settled since its last seeding pass."""

    position: int  # in seeding order: lower positions are fetched first
    untried: list[int]  # shop photos not requested yet: one at a time until the product is seeded
    waits: set[int] = field(default_factory=set)  # photos in flight
    settled: set[int] = field(default_factory=set)  # photos done (in or failed) not yet shown to seeding
    shown: set[int] = field(default_factory=set)  # photos a seeding pass has looked at: never shown twice
    seeded: bool = False


@dataclass
class Pipeline:
    """Downloads run in a background thread; this (the calling) thread does every database write.

    A product's shop photos are requested one at a time until one is good; the product is then
    seeded from it, and its other shop photos and its street photos are requested at a lower
    priority (with the first shop photo of the product ``window`` places later) and attached as they
    arrive. So the slots of a host go to the next
    product's first photo before they go to a seeded product's extras, and with a limit every
    product is in before the extras are fetched. A photo several products need is fetched once.
    """

    dataset: Street2ShopDataset
    photos: PhotoList
    config: DownloadConfig
    retry_failed: bool
    failed_before: set[int]
    report: DownloadSeedReport
    limit: int | None
    window: int
    order: list[int] = field(default_factory=list)
    position: int = 0
    products: dict[int, _Product] = field(default_factory=dict)  # admitted and not finished
    unseeded: int = 0  # admitted products waiting for a shop photo: what the window and the limit count
    waiting: dict[int, list[int]] = field(default_factory=dict)  # photo in flight -> products
    kinds: dict[int, str] = field(default_factory=dict)  # photo -> "shop" or "street"
    handled: set[int] = field(default_factory=set)  # photos this run has dealt with
    failures: dict[int, PhotoFailure] = field(default_factory=dict)
    due: set[int] = field(default_factory=set)  # products with a seeding pass to make
    queued: set[int] = field(default_factory=set)  # products the report counts as queued for indexing
    unrecorded: list[DownloadResult] = field(default_factory=list)
    estimated: set[int] = field(default_factory=set)
    printer: _Progress | None = None
    last_result: float | None = None
    index_queue: IndexQueue = field(default_factory=lambda: IndexQueue(chunk=INDEX_CHUNK))
    feed: JobFeed = field(default_factory=JobFeed)
    # Download results (and the downloader's end or error), from the download thread to this one.
    results: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)

    def run(self, *, progress: Stream | None, quiet: bool) -> None:
        self.order = self.dataset.candidates(available=self.dataset.present | self.photos.urls.keys())
        # The ETA assumes the first `limit` candidates suffice; products past them add their photos.
        self.estimated = self._to_fetch(self.order if self.limit is None else self.order[: self.limit])
        if progress is not None:
            self.printer = _Progress(len(self.estimated), report=self.report, stream=progress, quiet=quiet)
        started = time.perf_counter()
        downloader = threading.Thread(target=self._download, name="photo-downloads", daemon=True)
        downloader.start()
        try:
            self._loop()
        except BaseException:
            self.feed.cancel()  # Ctrl-C or an error: finish the requests in flight, then stop
            raise
        finally:
            self.feed.close()
            downloader.join()
            self._drain()  # results that came in while stopping are on disk: keep their outcomes
            self._record(force=True)
            self.index_queue.flush()
            if self.last_result is not None:
                self.report.download_seconds = self.last_result - started
            self.report.failures[:0] = self.failures.values()
            if self.printer is not None and self.printer.done:
                self.printer.close()

    def _download(self) -> None:
        try:
            download_photos([], self.dataset.photos_dir, config=self.config, progress=self.results.put, feed=self.feed)
        except BaseException as error:  # handed to the calling thread, which raises it
            self.results.put(error)
        finally:
            self.results.put(_DONE)

    def _loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            self._admit()
            if self.due:
                self._seed_due()
                continue
            if not self.products:
                return
            try:
                item = self.results.get(timeout=1.0)
            except queue.Empty:
                item = None
            while item is not None:
                self._take(item)
                try:
                    item = self.results.get_nowait()
                except queue.Empty:
                    item = None
            if time.monotonic() - last_flush > INDEX_FLUSH_SECONDS:
                self.index_queue.flush()
                last_flush = time.monotonic()

    def _take(self, item: object) -> None:
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            raise RuntimeError("the downloader stopped before its work was done")
        self._on_result(item)  # type: ignore[arg-type]

    def _drain(self) -> None:
        while True:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, DownloadResult):
                self._on_result(item, advance=False)

    # --- products ---------------------------------------------------------------------------------

    def _admit(self) -> None:
        while self.position < len(self.order) and self.unseeded < self.window:
            if self.limit is not None and self.report.seed.products_seeded + self.unseeded >= self.limit:
                return
            product_id = self.order[self.position]
            self.position += 1
            if self.limit is not None and self.position > self.limit:
                # Past the products the ETA counted on: their photos join the estimate.
                self.estimated |= self._to_fetch([product_id])
                if self.printer is not None:
                    self.printer.total = len(self.estimated)
            self.products[product_id] = _Product(
                position=self.position, untried=list(self.dataset.retrieval[product_id])
            )
            self.unseeded += 1
            self._check(product_id)

    def _need(self, product_id: int, photo_ids: list[int], kind: str, *, extra: bool = False) -> None:
        """Make the product wait for these photos, requesting those nobody fetched yet.

        ``extra`` photos (a seeded product's other shop photos, its street photos) rank with the
        first shop photo of the product ``window`` places later: new products come first, yet those
        photos keep arriving on a long run. (Never later than that: a queued job's priority cannot
        be raised, and a product admitted later must not wait behind them.)
        """
        product = self.products[product_id]
        priority = product.position + (self.window if extra else 0)
        jobs: list[DownloadJob] = []
        earlier: list[int] = []
        for photo_id in photo_ids:
            if photo_id in self.waiting:
                self.waiting[photo_id].append(product_id)
                product.waits.add(photo_id)
                continue
            if photo_id in self.handled:
                if photo_id in self.failures:
                    self.failures[photo_id].product_ids.append(product_id)
                product.settled.add(photo_id)
                continue
            self.handled.add(photo_id)
            self.kinds[photo_id] = kind
            self.report.photos_needed += 1
            if photo_id in self.dataset.present:
                self.report.photos_present += 1
                product.settled.add(photo_id)
            elif photo_id not in self.photos.urls:
                self._unlisted(photo_id, product_id)
                product.settled.add(photo_id)
            elif not self._should_fetch(photo_id):
                earlier.append(photo_id)
                product.settled.add(photo_id)
            else:
                jobs.append(DownloadJob(photo_id, self.photos.urls[photo_id], priority=priority))
                self.waiting[photo_id] = [product_id]
                product.waits.add(photo_id)
        for photo_id, row in selectors.photo_downloads(photo_ids=earlier).items():
            self.report.failed_earlier[row.outcome] += 1
            self.failures[photo_id] = PhotoFailure(
                photo_id=photo_id,
                kind=kind,
                product_ids=[product_id],
                outcome=row.outcome,
                url=row.url,
                http_status=row.http_status,
                attempts=row.attempts,
                error=row.error,
                earlier_run=True,
            )
        if jobs:
            self.feed.put(jobs)

    def _check(self, product_id: int) -> None:
        """Decide what the product needs next: a seeding pass, or nothing until more photos settle."""
        product = self.products[product_id]
        if product.seeded:
            if product.settled:
                self.due.add(product_id)
            elif not product.waits:
                del self.products[product_id]  # every photo it needs is in or failed, and attached
            return
        if product_id in self.due:
            return
        shop = self.dataset.retrieval[product_id]
        while True:
            if any(p in self.dataset.present for p in shop if p in product.settled):
                self.due.add(product_id)  # a shop photo to seed it from
                return
            if product.waits:
                return
            if not product.untried:
                self.due.add(product_id)  # every shop photo failed: the pass reports the product skipped
                return
            self._need(product_id, [product.untried.pop(0)], "shop")

    def _seed_due(self) -> None:
        """Seed products from their first good shop photo; attach the photos others have gained."""
        due, self.due = sorted(self.due, key=lambda pid: self.products[pid].position), set()
        for product_id in due:
            # A shop photo may also be the product's street photo: the pass that saw it stored both.
            product = self.products[product_id]
            product.settled -= product.shown
            product.shown |= product.settled
        attach = {pid: self.products[pid].settled for pid in due if self.products[pid].seeded}
        if attach:
            report = seed_products(
                dataset=self.dataset, product_ids=list(attach), index_queue=self.index_queue, photos=attach
            )
            self._fold(report, products=False)
        for product_id in due:
            product = self.products[product_id]
            if product.seeded:
                product.settled = set()
                self._check(product_id)
                continue
            # One pass per product: whether it was created decides what comes next.
            report = seed_products(
                dataset=self.dataset,
                product_ids=[product_id],
                index_queue=self.index_queue,
                photos={product_id: product.settled},
            )
            product.settled = set()
            if report.skipped_products and (product.waits or product.untried):
                # E.g. a photo on disk that turned out broken: try the product's next shop photo.
                self._fold(report, products=False)
                self._check(product_id)
                continue
            self._fold(report, products=True)
            self.unseeded -= 1
            if report.skipped_products:
                # No usable shop photo: its street photos are of no use, and its other photos are settled.
                del self.products[product_id]
                continue
            product.seeded = True
            street = self.dataset.street_photo_ids(product_id)
            # Photos whose every box is empty are never fetched; shown to seeding, their boxes are reported.
            empty_only = {pair.photo_id for pair in self.dataset.boxes.get(product_id, ())} - set(street)
            product.settled |= empty_only
            untried, product.untried = product.untried, []
            self._need(product_id, untried, "shop", extra=True)
            self._need(product_id, street, "street", extra=True)
            self._check(product_id)

    def _fold(self, report: SeedReport, *, products: bool) -> None:
        # A product queued again for indexing (a photo attached) is still one product to index.
        report.queued_product_ids = [pid for pid in report.queued_product_ids if pid not in self.queued]
        self.queued.update(report.queued_product_ids)
        self.report.seed.add(report, products=products)
        for item in report.skipped:
            if item.reason in (BAD_BBOX, BAD_IMAGE):
                self.report.failures.append(
                    PhotoFailure(
                        photo_id=item.photo_id,
                        kind=item.kind,
                        product_ids=[item.product_id],
                        outcome=item.reason,
                        url=self.photos.urls.get(item.photo_id, ""),
                        error=item.detail,
                    )
                )

    # --- photos -----------------------------------------------------------------------------------

    def _should_fetch(self, photo_id: int) -> bool:
        return (
            photo_id not in self.dataset.present
            and photo_id in self.photos.urls
            and (self.retry_failed or photo_id not in self.failed_before)
        )

    def _to_fetch(self, products: Sequence[int]) -> set[int]:
        return {
            photo_id
            for product_id in products
            for photo_id in self.dataset.photo_ids(product_id)
            if self._should_fetch(photo_id)
        }

    def _unlisted(self, photo_id: int, product_id: int) -> None:
        self.report.not_listed += 1
        error = "no line in photos.txt"
        self.unrecorded.append(DownloadResult(photo_id, "", NOT_LISTED, None, 0, 0, error))
        self.failures[photo_id] = PhotoFailure(
            photo_id=photo_id, kind=self.kinds[photo_id], product_ids=[product_id], outcome=NOT_LISTED, error=error
        )

    def _on_result(self, result: DownloadResult, *, advance: bool = True) -> None:
        """Book one finished download; ``advance=False`` only books it (the run is stopping)."""
        # Kept before anything else can fail (such as the progress line on a closed terminal).
        self.unrecorded.append(result)
        self.last_result = time.perf_counter()
        report = self.report
        report.requests += result.attempts
        if result.outcome == "exists":
            report.photos_present += 1
        else:
            report.outcomes[result.outcome] += 1
        products = self.waiting.pop(result.photo_id, [])
        if result.succeeded:
            self.dataset.present.add(result.photo_id)
            if result.outcome == "ok":
                self.dataset.verified.add(result.photo_id)
        else:
            self.failures[result.photo_id] = PhotoFailure(
                photo_id=result.photo_id,
                kind=self.kinds[result.photo_id],
                product_ids=list(products),
                outcome=result.outcome,
                url=result.url,
                http_status=result.http_status,
                attempts=result.attempts,
                error=result.error,
            )
        self._record(force=False)
        if advance:
            for product_id in products:
                product = self.products[product_id]
                product.waits.discard(result.photo_id)
                product.settled.add(result.photo_id)
                self._check(product_id)
            if self.printer is not None:
                self.printer(result)

    def _record(self, *, force: bool) -> None:
        if self.unrecorded and (force or len(self.unrecorded) >= RECORD_BATCH):
            record_photo_downloads(results=self.unrecorded)
            self.unrecorded = []
