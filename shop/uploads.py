"""Limits on shoppers' uploads that act before the web process reads or decodes much."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from django_ratelimit.core import get_usage

# Room for the form's other fields and the multipart boundaries around the photo.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(RequestDataTooBig):
    """The request body is larger than an upload may be; nothing past the cap was read."""


class CappedUploadHandler(FileUploadHandler):
    """Refuse a body over `max_bytes` from its Content-Length, and stop reading past it in any case.

    Installed first, so it sees the body before Django's handlers buffer or spool it to disk.
    """

    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0

    def handle_raw_input(
        self,
        input_data: IO[bytes],
        META: dict[str, str],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        if content_length > self.max_bytes:
            raise UploadTooLarge(f"{content_length} bytes announced, {self.max_bytes} allowed")
        return None  # the other handlers parse the body

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            raise UploadTooLarge(f"more than {self.max_bytes} bytes sent")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def cap_body(request: HttpRequest) -> None:
    """Put the cap in front of the request's upload handlers (before anything reads request.POST)."""
    request.upload_handlers.insert(
        0, CappedUploadHandler(request, max_bytes=settings.UPLOAD_MAX_BYTES + FORM_OVERHEAD_BYTES)
    )


def client_ip(request: HttpRequest) -> str:
    """The client's address for the rate limit (django-ratelimit's RATELIMIT_IP_META_KEY, which then
    counts an IPv6 client's whole /64): REMOTE_ADDR, or the last hop a trusted proxy appended."""
    value = request.META.get(settings.SEARCH_RATE_LIMIT_IP_HEADER, "")
    # X-Forwarded-For lists client-supplied hops first: only the last one was written by our proxy.
    address = value.split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        remote: str = request.META["REMOTE_ADDR"]
        return remote


@dataclass(frozen=True)
class RateCheck:
    limited: bool
    retry_after: int  # seconds until the client's window resets


def count_upload(request: HttpRequest) -> RateCheck:
    """Count one upload against the client's SEARCH_RATE_LIMIT window."""
    usage = get_usage(
        request, group="search-upload", key="ip", rate=settings.SEARCH_RATE_LIMIT, method="POST", increment=True
    )
    if usage is None:
        return RateCheck(limited=False, retry_after=0)
    return RateCheck(limited=bool(usage["should_limit"]), retry_after=max(1, int(usage["time_left"])))
