"""Model files kept in a shared store (a bucket, or a folder) and used from a per-host cache.

Keras loads weights and models from local files only, so a worker copies each artifact it needs
from the store into its host's cache once, checking the copy's SHA-256, and loads it from there.
The store is anything with Django's Storage methods (exists, open, save, delete); this module
does not import Django. A cached copy is named by its SHA-256, so a retrained file with the same
name can never be mistaken for the old one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, Protocol

from similarity.files import atomic_path, atomic_write_bytes, exclusive_lock, sha256_file

logger = logging.getLogger("similarity")

CHUNK = 1 << 20
# A cross-host lock for creating an artifact once: (name) -> context manager.
Lock = Callable[[str], AbstractContextManager[Any]]


class Store(Protocol):
    """The part of Django's Storage API the model store needs."""

    def exists(self, name: str) -> bool: ...

    def open(self, name: str, mode: str = "rb") -> Any: ...

    def save(self, name: str, content: Any, max_length: int | None = None) -> str: ...

    def delete(self, name: str) -> None: ...


class Folder:
    """A model store in a local folder (what tests, benchmarks and one-host setups use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str, mode: str = "rb") -> IO[bytes]:
        return open(self.root / name, "rb")

    def save(self, name: str, content: Any, max_length: int | None = None) -> str:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, suffix=f"-{target.name}") as temporary, open(temporary, "wb") as copy:
            shutil.copyfileobj(content, copy, CHUNK)
        return name

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


def local_path(store: Store, name: str) -> Path | None:
    """The file behind ``name`` when the store is a local folder (no copy needed), else None."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    try:
        return Path(path(name))
    except NotImplementedError:  # a bucket has no local paths
        return None


class ArtifactError(ValueError):
    """A model file is missing from the store or is not the file that was recorded."""


def digest_of(handle: IO[bytes], *, copy_to: IO[bytes] | None = None) -> str:
    """SHA-256 of a stream read to its end, copying it to ``copy_to`` on the way."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(CHUNK), b""):
        digest.update(block)
        if copy_to is not None:
            copy_to.write(block)
    return digest.hexdigest()


def cached_path(cache_dir: Path, name: str, sha256: str) -> Path:
    """Where a host keeps its copy of artifact ``name`` whose content has ``sha256``.

    The name's own suffixes stay (Keras picks the format from ".keras" or ".weights.h5").
    """
    base = Path(name).name
    suffix = base[base.index(".") :] if "." in base else ""
    return Path(cache_dir) / f"{sha256}{suffix}"


def fetch(store: Store, name: str, *, sha256: str, cache_dir: Path) -> Path:
    """A local copy of ``name`` whose content has ``sha256``: the host's cached one, or one
    downloaded now and checked. A missing or different file raises ArtifactError; nothing
    unchecked is ever left in the cache."""
    sha256 = sha256.lower()
    check_name(name)
    local = local_path(store, name)
    if local is not None:
        if not local.is_file():
            raise ArtifactError(f"The model file {name!r} is not in the model store ({local} is missing).")
        _check(name, file_sha256(local, cache_dir=hash_cache_dir(cache_dir)), sha256)
        return local
    target = cached_path(cache_dir, name, sha256)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One download per host: the pool's other processes wait, then find the copy.
    with exclusive_lock(target.with_name(f".{target.name}.lock")):
        if target.is_file():
            return target
        with atomic_path(target, suffix=f"-{target.name}") as temporary:
            with open(temporary, "wb") as copy:
                actual = _read_stored(store, name, copy_to=copy)
            _check(name, actual, sha256)
        logger.info("cached model file %s (sha256 %s…) at %s", name, sha256[:12], target)
    return target


def verify(store: Store, name: str, *, sha256: str) -> None:
    """Read the stored file itself (not a host's copy) and check its sha256: before a version goes live."""
    check_name(name)
    _check(name, _read_stored(store, name), sha256.lower())


def check_name(name: str) -> None:
    """Refuse what is not a name inside the store: a local path recorded before the store existed
    (an older install whose file lay outside MODEL_STORE), or one that climbs out of it."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ArtifactError(
            f"The model file {name!r} is not a name in the model store (a path from an older install?): "
            "put the file into the store and record its name, or retrain."
        )


def _read_stored(store: Store, name: str, *, copy_to: IO[bytes] | None = None) -> str:
    """The sha256 of a stored file, read to its end (and copied); any failure of the store is an ArtifactError."""
    try:
        with store.open(name, "rb") as source:
            return digest_of(source, copy_to=copy_to)
    except FileNotFoundError as error:
        raise ArtifactError(f"The model file {name!r} is not in the model store ({error}).") from error
    except Exception as error:  # a bucket's client errors have no common base to name here
        raise ArtifactError(f"The model store could not be read for {name!r}: {error}") from error


def _check(name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactError(
            f"The model file {name!r} in the model store has sha256 {actual[:12]}…, expected {expected[:12]}…: "
            "it was replaced or corrupted. Restore the file or retrain; what it belongs to cannot be loaded."
        )


def publish(store: Store, local: Path, name: str, *, cache_dir: Path) -> tuple[str, str]:
    """Put a finished local file into the store as ``name`` and into this host's cache.

    Returns (the stored name, its sha256). The store keeps the name asked for; a store that
    renamed it (a folder store refusing to overwrite) is an error, as readers look it up by name.
    """
    check_name(name)
    sha256 = sha256_file(local)
    folder = local_path(store, name)
    if folder is not None:
        # Django's folder storage writes in place: a crash would leave half a file under the name.
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder, suffix=f"-{folder.name}") as temporary:
            shutil.copyfile(local, temporary)
        return name, sha256  # a folder store is its own cache
    with open(local, "rb") as handle:
        stored = store.save(name, handle)
    if stored != name:
        raise ArtifactError(f"The model store saved {name!r} as {stored!r}; it must overwrite in place.")
    target = cached_path(cache_dir, name, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file():
        with atomic_path(target, suffix=f"-{target.name}") as temporary:
            shutil.copyfile(local, temporary)
    return stored, sha256


def read_text(store: Store, name: str) -> str | None:
    """A small text file's content, or None when the store does not hold it."""
    if not store.exists(name):
        return None
    with store.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data.decode().strip()


def write_text(store: Store, name: str, text: str) -> None:
    from io import BytesIO

    folder = local_path(store, name)
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder, text.encode(), suffix=f"-{folder.name}")
        return
    store.save(name, BytesIO(text.encode()))


def file_lock(store: Store, cache_dir: Path) -> Lock:
    """A lock on one host: a file lock beside the artifact in a folder store, else in the cache."""

    def lock(name: str) -> AbstractContextManager[Any]:
        local = local_path(store, name)
        path = Path(f"{local}.lock") if local is not None else Path(cache_dir) / f".{Path(name).name}.create.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(path)

    return lock


def sidecar_name(name: str) -> str:
    """Where the store keeps the SHA-256 of a file made in place (a backbone's random weights)."""
    return f"{name}.sha256"


def fetch_or_create(
    store: Store,
    name: str,
    *,
    cache_dir: Path,
    create: Callable[[Path], None],
    lock: Lock,
) -> tuple[Path, str]:
    """A checked local copy of ``name`` and its sha256, creating the file once for every host.

    The file's SHA-256 is kept beside it in the store (``<name>.sha256``). When neither exists,
    ``create(path)`` writes it locally under ``lock(name)`` (held across hosts), and it is
    published; another host that waited on the lock then downloads that file, so every worker
    loads the same bytes. A file without its sidecar (made before sidecars) is hashed once and
    the sidecar added.
    """
    sha256 = _recorded_sha256(store, name)
    if sha256 is None:
        with lock(name):
            sha256 = _recorded_sha256(store, name)
            if sha256 is None:
                sha256 = _adopt_or_create(store, name, cache_dir=cache_dir, create=create)
    return fetch(store, name, sha256=sha256, cache_dir=cache_dir), sha256


def _recorded_sha256(store: Store, name: str) -> str | None:
    """The sha256 kept beside a file, or None (none yet, or a sidecar a crash left empty or cut short)."""
    text = read_text(store, sidecar_name(name))
    return text if text is not None and re.fullmatch(r"[0-9a-f]{64}", text) else None


def _adopt_or_create(store: Store, name: str, *, cache_dir: Path, create: Callable[[Path], None]) -> str:
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    base = Path(name).name
    # Keras picks the format from the suffix, so the temporary name ends with the artifact's.
    handle, temporary_name = tempfile.mkstemp(dir=cache_dir, prefix=".incoming-", suffix=f"-{base}")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        local = local_path(store, name)
        if local is not None and local.is_file():
            sha256 = file_sha256(local, cache_dir=hash_cache_dir(cache_dir))
        elif store.exists(name):
            logger.info("hashing %s, stored before its sha256 was", name)
            with store.open(name, "rb") as source, open(temporary, "wb") as copy:
                sha256 = digest_of(source, copy_to=copy)
        else:
            create(temporary)
            _, sha256 = publish(store, temporary, name, cache_dir=cache_dir)
        target = cached_path(cache_dir, name, sha256)
        if local is None and not target.is_file():
            os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    write_text(store, sidecar_name(name), sha256)
    return sha256


def hash_cache_dir(store_dir: Path) -> Path:
    return Path(store_dir) / "backbones" / "sha256"


def _hash_key(path: Path) -> str:
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()


def _stat_key(path: Path) -> dict[str, Any]:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_sidecar(cache_dir: Path, path: Path, sha: str, stat_key: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    sidecar = cache_dir / f"{_hash_key(path)}.json"
    record = json.dumps({"path": str(Path(path).resolve()), "sha256": sha, **stat_key})
    # No fsync: a lost or empty sidecar only costs hashing the file again.
    atomic_write_bytes(sidecar, record.encode(), prefix=".tmp-", suffix=f"-{sidecar.name}", fsync=False)


def file_sha256(path: Path, *, cache_dir: Path) -> str:
    """SHA-256 of a (large) file, cached in a sidecar keyed by path, size and mtime."""
    stat_key = _stat_key(path)
    sidecar = Path(cache_dir) / f"{_hash_key(path)}.json"
    try:
        cached = json.loads(sidecar.read_text())
        if {key: cached.get(key) for key in stat_key} == stat_key:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    sha = sha256_file(path)
    try:
        _write_sidecar(Path(cache_dir), path, sha, stat_key)
    except OSError:
        logger.debug("Could not cache the sha256 of %s", path, exc_info=True)
    return sha
