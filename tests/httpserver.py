"""A photo server on 127.0.0.1 that misbehaves on purpose: one route per path, requests counted.

Used by the download tests and by benchmarks/bench_seed_download.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


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


def slow(seconds: float, body: bytes) -> Route:
    """Answers only after ``seconds``: past a short read timeout."""

    def route(handler: BaseHTTPRequestHandler, seen: int) -> None:
        time.sleep(seconds)
        send(handler, 200, body)

    return route


def redirect(location: str) -> Route:
    return lambda handler, seen: send(handler, 302, b"", "text/plain", {"Location": location})


class PhotoServer:
    """A threading HTTP server on a free port of 127.0.0.1; unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: Counter[str] = Counter()
        self.log: list[str] = []  # paths in the order requested
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as retailers' servers do

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.requests[path] += 1
                    server.log.append(path)
                    seen = server.requests[path]
                route = server.routes.get(path) or status(404)
                route(self, seen)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                # A client giving up on a slow route is expected; anything else is a test bug.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        """Serve ``route`` at ``path``; return its URL."""
        self.routes[path] = route
        return self.url(path)

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests[path]

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

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
