"""Writing files so readers never see half of one, hashing them and locking them (standard library only)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; locks are then no-ops.
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    suffix: str = ".tmp",
    mode: int = 0o644,
    fsync: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is deleted.

    Write the file under the yielded name (it exists, empty). The temporary name is
    ``{prefix}{random}{suffix}``, with ``prefix`` defaulting to ``.{name}.``, so callers can spot
    leftovers of a killed process. Same directory, so ``os.replace`` is atomic; ``fsync`` first, so
    a crash cannot leave an empty file under the final name. ``mode`` replaces mkstemp's 0600: other
    processes (the web server, workers) must be able to read the result.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        if fsync:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    prefix: str | None = None,
    suffix: str = ".tmp",
    mode: int = 0o644,
    fsync: bool = True,
) -> None:
    """Write ``data`` to ``path`` through ``atomic_path`` (same options)."""
    with atomic_path(path, prefix=prefix, suffix=suffix, mode=mode, fsync=fsync) as temporary:
        temporary.write_bytes(data)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    The lock belongs to the open file, so it also excludes other threads that take it through
    their own ``exclusive_lock``. With ``blocking=False`` a lock held elsewhere raises
    ``BlockingIOError`` instead of waiting. Without ``fcntl`` (Windows) nothing is locked.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
