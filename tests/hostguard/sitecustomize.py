"""Loaded by every Python process started with this folder on PYTHONPATH (the many-hosts test's
workers, web server and commands): with LOOPBACK_GUARD_LOG set, any connect outside 127.0.0.0/8
and ::1 raises before a packet leaves, and is written to that file so the test can fail on it,
even where the code under test swallows the error (a credentials lookup, say)."""

from __future__ import annotations

import ipaddress
import os
import socket

_LOG = os.environ.get("LOOPBACK_GUARD_LOG")


def _is_loopback(family: int, address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        infos = socket.getaddrinfo(str(host), None, family)
    except OSError:
        return False
    return all(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback for info in infos)


def _install(log: str) -> None:
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(sock.family, address):
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {address!r}\n")
            raise ConnectionRefusedError(f"host guard: no connects outside 127.0.0.0/8 and ::1, not {address!r}")

    def connect(sock: socket.socket, address: object) -> None:
        guard(sock, address)
        original_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        guard(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


if _LOG:
    _install(_LOG)
