"""A supervisor's health check: exit 0 when a worker consuming a queue answers through the broker, else 1."""

from __future__ import annotations

import socket

from django.core.management.base import BaseCommand, CommandError, CommandParser
from kombu.exceptions import OperationalError

from shop.worker_health import answering_consumers
from workers.celery import app


class Command(BaseCommand):
    help = "Ping the Celery workers consuming a queue; exit 1 unless at least one answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", required=True, help="celery (indexing, training) or search")
        parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each round of replies")
        parser.add_argument(
            "--local", action="store_true", help="only workers of this host (node names ending in @<this host>)"
        )

    def handle(self, *args: object, queue: str, timeout: float, local: bool, **options: object) -> None:
        host = socket.gethostname() if local else None
        try:
            nodes = answering_consumers(queue=queue, timeout=timeout, host=host)
        except OperationalError as error:
            # as_uri() masks the password.
            raise CommandError(f"the broker at {app.connection().as_uri()} does not answer: {error}") from None
        if not nodes:
            where = f" on {host}" if host else ""
            raise CommandError(f"no worker consuming the queue {queue!r}{where} answered within {timeout:g} s")
        self.stdout.write(f"ok: {', '.join(nodes)} consume {queue!r}")
