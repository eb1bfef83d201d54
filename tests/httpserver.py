"""The one photo server of the tests: on a loopback address, misbehaving on purpose, one route per path.

Routes answer an exact path (``add``) or every path under a prefix (``add_prefix``); each request is
counted per path and recorded (arrival time, User-Agent, client port, Host). Used by the download
tests and by benchmarks/bench_downloads.py and benchmarks/bench_seed_download.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

# A route answers one request; ``seen`` counts the requests to its path so far, this one included.
Route = Callable[[BaseHTTPRequestHandler, int], None]

HTML = b"<!DOCTYPE html><html><head><title>Dress</title></head><body>Out of stock</body></html>"


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> None:
    send_head(handler, status, len(body), content_type, headers)
    handler.wfile.write(body)


def send_head(
    handler: BaseHTTPRequestHandler,
    status: int,
    length: int,
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> None:
    """The status line and headers, announcing ``length`` bytes of body; the caller writes the body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(length))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()


# --- routes ---------------------------------------------------------------------------------------


def image(body: bytes, content_type: str = "image/jpeg") -> Route:
    return lambda handler, seen: send(handler, 200, body, content_type)


def status(code: int) -> Route:
    return lambda handler, seen: send(handler, code, b"nope", "text/plain")


def html() -> Route:
    return lambda handler, seen: send(handler, 200, HTML, "text/html")


def fails_first(times: int, code: int, body: bytes, headers: dict[str, str] | None = None) -> Route:
    """``code`` for the first ``times`` requests (e.g. 500, or 429 with Retry-After), then the photo."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        if seen <= times:
            send(handler, code, b"try later", "text/plain", headers)
        else:
            send(handler, 200, body)

    return route


def after(seconds: float, route: Route) -> Route:
    """``route``, answered only after ``seconds`` (a server's latency, or past a read timeout)."""

    def delayed(handler: BaseHTTPRequestHandler, seen: int) -> None:
        time.sleep(seconds)
        route(handler, seen)

    return delayed


def slow(seconds: float, body: bytes) -> Route:
    """Answers only after ``seconds``: past a short read timeout."""
    return after(seconds, image(body))


def stall(body: bytes, *, sent: int, seconds: float) -> Route:
    """Sends the headers and ``sent`` bytes, then nothing for ``seconds``, then the rest."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        send_head(handler, 200, len(body))
        handler.wfile.write(body[:sent])
        handler.wfile.flush()
        time.sleep(seconds)
        handler.wfile.write(body[sent:])

    return route


def drip(body: bytes, *, chunk: int, chunks: int, delay: float) -> Route:
    """Sends ``chunks`` pieces of ``chunk`` bytes ``delay`` apart, each well within a read timeout, then the rest."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        send_head(handler, 200, len(body))
        for offset in range(0, chunk * chunks, chunk):
            handler.wfile.write(body[offset : offset + chunk])
            handler.wfile.flush()
            time.sleep(delay)
        handler.wfile.write(body[chunk * chunks :])

    return route


def unsized(body: bytes) -> Route:
    """No Content-Length: the body ends when the connection closes, so only counting bytes can stop it."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)

    return route


def cut_short(body: bytes) -> Route:
    """Announces the whole body, sends half of it and hangs up."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        handler.close_connection = True
        send_head(handler, 200, len(body))
        handler.wfile.write(body[: len(body) // 2])

    return route


def redirect(location: str) -> Route:
    return lambda handler, seen: send(handler, 302, b"", "text/plain", {"Location": location})


def countdown(body: bytes) -> Route:
    """A prefix route for ``<prefix>/<hops>/<name>``: redirects to ``<prefix>/<hops - 1>/<name>``, serves ``body`` at 0."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        prefix, hops, name = handler.path.split("?", 1)[0].rsplit("/", 2)
        if int(hops) == 0:
            send(handler, 200, body)
        else:
            send(handler, 302, b"", "text/plain", {"Location": f"{prefix}/{int(hops) - 1}/{name}"})

    return route


class InFlight:
    """Requests being answered at once, per (folder of the path, Host) and per (folder, "*"), with their peaks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()

    def hold(self, seconds: float, body: bytes) -> Route:
        """A route that keeps each request in flight for ``seconds``, then serves ``body``."""

        def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
            folder = handler.path.split("?", 1)[0].rsplit("/", 1)[0]
            host = handler.headers.get("Host", "").rsplit(":", 1)[0]
            keys = ((folder, host), (folder, "*"))
            self._change(keys, 1)
            try:
                time.sleep(seconds)
            finally:
                self._change(keys, -1)
            send(handler, 200, body)

        return route

    def _change(self, keys: tuple[tuple[str, str], ...], step: int) -> None:
        with self.lock:
            for key in keys:
                self.now[key] += step
                self.peak[key] = max(self.peak[key], self.now[key])


# --- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    path: str  # without the query
    arrived: float  # monotonic
    user_agent: str
    client_port: int
    host: str  # the Host header


class PhotoServer:
    """A threading HTTP server on a free port of ``address`` (127.0.0.1 unless told); unknown paths answer 404."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.routes: dict[str, Route] = {}
        self.prefixes: dict[str, Route] = {}
        self.requests: Counter[str] = Counter()
        self.log: list[str] = []  # paths in the order requested
        self.received: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as retailers' servers do

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                request = Request(
                    path,
                    time.monotonic(),
                    self.headers.get("User-Agent", ""),
                    self.client_address[1],
                    self.headers.get("Host", ""),
                )
                with server.lock:
                    server.requests[path] += 1
                    server.log.append(path)
                    server.received.append(request)
                    seen = server.requests[path]
                server.route(path)(self, seen)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # a benchmark's workers may all connect at once

            def handle_error(self, request: object, client_address: object) -> None:
                # A client giving up on a slow route is expected; anything else is a test bug.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Quiet((address, 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of ``path``; ``host`` names the server otherwise (e.g. "localhost" for 127.0.0.1)."""
        return f"http://{host or self.address}:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        """Serve ``route`` at ``path``; return its URL."""
        self.routes[path] = route
        return self.url(path)

    def add_prefix(self, prefix: str, route: Route) -> str:
        """Serve ``route`` at every path starting with ``prefix`` that has no route of its own; return its URL."""
        self.prefixes[prefix] = route
        return self.url(prefix)

    def route(self, path: str) -> Route:
        """The route answering ``path``: its own, else the longest matching prefix's, else a 404."""
        if path in self.routes:
            return self.routes[path]
        matches = [prefix for prefix in self.prefixes if path.startswith(prefix)]
        return self.prefixes[max(matches, key=len)] if matches else status(404)

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests[path]

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def gaps(self, path: str) -> list[float]:
        """Seconds between consecutive requests to ``path``."""
        with self.lock:
            times = [request.arrived for request in self.received if request.path == path]
        return [later - earlier for earlier, later in pairwise(times)]

    def start(self) -> PhotoServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> PhotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
