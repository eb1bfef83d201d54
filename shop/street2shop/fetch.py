"""One photo's HTTP request: redirects followed by hand, every hop's address checked and pinned, limits on the body.

Nothing here writes a file or decides about retries beyond saying whether a failure is worth one;
``download.py`` does that. What a request guarantees:

- Neither photos.txt nor a redirect can point the downloader at the machine itself, the private
  network or a cloud metadata service: every hop's address is checked (``check_destination``) and
  the connection goes to the checked address, not to a second DNS answer.
- Only the final 2xx body is read, streamed under ``max_bytes`` and the photo's deadline, as sent
  (no Content-Encoding is inflated); a redirect's body is never read.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter

from shop.street2shop.jobs import DownloadConfig
from similarity.images import (
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    open_image,
)

# No AVIF or GIF: open_image refuses them, so asking for them would only waste bandwidth.
ACCEPT = "image/webp,image/jpeg,image/png;q=0.9,image/*;q=0.5,*/*;q=0.1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Attempt:
    """The result of one HTTP request: a body to validate, or a classified failure."""

    outcome: str
    status: int | None = None
    body: bytes = b""
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None


def host_of(url: str) -> str:
    """The lower-case host name a URL points at, or "" when it has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class _HandFollowedSession(requests.Session):
    """A session that never follows (or reads) a redirect itself: fetch_once follows them by hand.

    With ``allow_redirects=False`` requests still reads a redirect's whole body to prepare
    ``Response.next``; a session that sees no redirect target never does.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def build_session(config: DownloadConfig) -> requests.Session:
    """A session with our User-Agent and no redirects or retries of its own (we follow and retry)."""
    session = _HandFollowedSession()
    session.headers["User-Agent"] = config.user_agent
    session.headers["Accept"] = ACCEPT
    # Photos as sent: _read_body refuses encoded bodies rather than inflate them.
    session.headers["Accept-Encoding"] = "identity"
    session.max_redirects = config.max_redirects
    # Each session serves one thread, so one connection per host; keep pools for ~25 retailers
    # plus the CDNs they redirect to.
    adapter = _PinnedAdapter(pool_connections=64, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, retry_after: float | None, config: DownloadConfig) -> float:
    """Seconds to sleep after failed attempt ``attempt`` (1-based): Retry-After or full jitter."""
    if retry_after is not None:
        return min(retry_after, config.backoff_max)
    ceiling = min(config.backoff_max, config.backoff_base * 2 ** (attempt - 1))
    return config.random() * ceiling


class SessionPerThread:
    """One ``requests.Session`` per worker thread (sessions are not documented as thread-safe)."""

    def __init__(self, config: DownloadConfig) -> None:
        self._config = config
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = build_session(self._config)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def fetch_once(session: requests.Session, url: str, config: DownloadConfig, deadline: float) -> Attempt:
    """One GET, its redirects followed by hand before ``deadline`` (the photo's budget, monotonic).

    Only the final 2xx body is read: requests would read each redirect's body whole (40 MB, a drip,
    a gzip bomb) outside our size and time limits; here a redirect's connection is closed instead.
    """
    current = url
    for _hop in range(config.max_redirects + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return Attempt("timeout", error=f"redirects not done in {config.total_timeout:g} s", retryable=True)
        if urlsplit(current).scheme.lower() not in ("http", "https") or not host_of(current):
            return Attempt("invalid_url", error=f"redirect to a URL that is not http(s) with a host: {current[:200]}")
        refusal, address = check_destination(current, config.allowed_hosts)
        if refusal:
            return Attempt("refused_address", error=refusal)
        _pins.addresses = {_host_and_port(current): address} if address else {}
        try:
            attempt_or_response = _request(session, current, config, left)
        finally:
            _pins.addresses = {}
        if isinstance(attempt_or_response, Attempt):
            return attempt_or_response
        with attempt_or_response as response:
            status = response.status_code
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                current = urljoin(current, location)
                continue  # leaving the block closes the connection: the redirect's body stays unread
            if status == 429 or 500 <= status <= 599:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return Attempt("http_error", status, error=f"HTTP {status}", retryable=True, retry_after=retry_after)
            if not 200 <= status <= 299:
                return Attempt("http_error", status, error=f"HTTP {status}")
            return _read_body(response, config, deadline)
    return Attempt("too_many_redirects", error=f"more than {config.max_redirects} redirects")


def _host_and_port(url: str) -> tuple[str, int]:
    """The host (lowercase) and port a URL connects to; ValueError for a port that is not a number."""
    parts = urlsplit(url)
    # A trailing dot names the same host (urllib3 keeps it for DNS, drops it elsewhere).
    return (parts.hostname or "").rstrip(".").lower(), parts.port or (443 if parts.scheme.lower() == "https" else 80)


def check_destination(url: str, allowed_hosts: frozenset[str] = frozenset()) -> tuple[str | None, str | None]:
    """(why ``url`` must not be fetched, or None; the checked address to connect to, or None).

    Checked before every hop, so neither photos.txt nor a redirect can point the downloader at the
    machine itself, the private network or a cloud metadata service (169.254.169.254 is link-local).
    The request then connects to the address checked here (see _PinnedAdapter), not to whatever a
    second DNS lookup would answer.
    """
    try:
        host, port = _host_and_port(url)
    except ValueError:
        return "the URL's port is not a number", None
    allowed = host in allowed_hosts or f"{host}:{port}" in allowed_hosts or f"[{host}]:{port}" in allowed_hosts
    try:
        addresses = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        return None, None  # unresolvable: the request itself fails as a connection error
    for address in addresses if not allowed else ():
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return f"{host} resolves to {ip}, which is not a public address", None
    return None, (addresses[0] if addresses else None)


# The address each (host, port) of the current hop was checked at, per download thread.
_pins = threading.local()


def _pinned_address(host: str, port: int) -> str | None:
    return getattr(_pins, "addresses", {}).get((host.rstrip(".").lower(), port))


class _PinnedConnection(urllib3.connection.HTTPConnection):
    """Connects to the address check_destination approved; TLS still verifies the host name."""

    def _new_conn(self) -> socket.socket:
        pinned = _pinned_address(self._dns_host, self.port)
        if pinned is None:
            return super()._new_conn()
        named, self._dns_host = self._dns_host, pinned
        try:
            return super()._new_conn()
        finally:
            self._dns_host = named  # before the TLS handshake reads the host for SNI and the certificate


class _PinnedHTTPSConnection(_PinnedConnection, urllib3.connection.HTTPSConnection):
    pass


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PinnedConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def _request(session: requests.Session, url: str, config: DownloadConfig, left: float) -> requests.Response | Attempt:
    """One hop: its response with the body unread, or the attempt's failure."""
    try:
        return session.get(
            url,
            stream=True,
            allow_redirects=False,
            timeout=(min(config.connect_timeout, left), min(config.read_timeout, left)),
        )
    except requests.exceptions.Timeout as exc:
        return Attempt("timeout", error=_describe(exc), retryable=True)
    except requests.exceptions.SSLError as exc:
        # A bad certificate stays bad; retrying only triples the time spent on it.
        return Attempt("connection_error", error=_describe(exc))
    except requests.exceptions.ConnectionError as exc:
        # Refused, reset, DNS failure: often transient on retailers' servers.
        return Attempt("connection_error", error=_describe(exc), retryable=True)
    except ValueError as exc:
        # requests' InvalidURL/MissingSchema/InvalidSchema, and urllib3 LocationParseError, which
        # requests lets through for some IDNA host names.
        return Attempt("invalid_url", error=_describe(exc))
    except requests.RequestException as exc:
        return Attempt("connection_error", error=_describe(exc), retryable=True)


def _read_body(response: requests.Response, config: DownloadConfig, deadline: float) -> Attempt:
    """Stream the body into memory, giving up past ``max_bytes`` or the attempt's deadline.

    Bodies are read as sent: a photo needs no Content-Encoding, and inflating one would put a
    compression bomb past ``max_bytes`` before the count saw it.
    """
    status = response.status_code
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return Attempt("not_an_image", status, error=f"Content-Encoding {encoding[:40]}: a photo is sent as is")
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > config.max_bytes:
        return Attempt("too_large", status, error=f"Content-Length {declared} > {config.max_bytes}")
    body = bytearray()
    raw = response.raw
    try:
        while True:
            # read1, not iter_content: iter_content blocks until a whole chunk has arrived, so a
            # server sending a byte a second would never reach the deadline check.
            chunk = raw.read1(_CHUNK_SIZE, decode_content=False)
            if not chunk:
                break
            body += chunk
            if len(body) > config.max_bytes:
                return Attempt("too_large", status, error=f"body > {config.max_bytes} bytes")
            if time.monotonic() > deadline:
                error = f"photo not done in {config.total_timeout:g} s"
                return Attempt("timeout", status, error=error, retryable=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        return Attempt("timeout", status, error=_describe(exc), retryable=True)
    except urllib3.exceptions.DecodeError as exc:
        # A broken gzip/deflate body: the server will send the same bytes again.
        return Attempt("not_an_image", status, error=_describe(exc))
    except urllib3.exceptions.HTTPError as exc:
        # ProtocolError, IncompleteRead, SSLError: the connection dropped mid-body.
        return Attempt("connection_error", status, error=_describe(exc), retryable=True)
    return Attempt("ok", status, body=bytes(body))


def validate(body: bytes, config: DownloadConfig) -> tuple[str, str]:
    """Map open_image's verdict on the downloaded bytes to an outcome and an error message."""
    try:
        image = open_image(
            body,
            max_pixels=config.max_pixels,
            max_bytes=config.max_bytes,
            allowed_formats=config.allowed_formats,
        )
    except (EmptyImage, NotAnImage, UnsupportedFormat) as exc:
        return "not_an_image", _describe(exc)
    except TruncatedImage as exc:
        return "truncated", _describe(exc)
    except ImageTooLarge as exc:
        return "too_large", _describe(exc)
    image.close()
    return "ok", ""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}"[:500] if text else name
