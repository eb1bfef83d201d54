"""Model files in a shared store, copied into each host's cache and checked (similarity.artifacts)."""

from __future__ import annotations

import hashlib
import io
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from similarity.artifacts import (
    ArtifactError,
    Folder,
    cached_path,
    fetch,
    fetch_or_create,
    publish,
    sidecar_name,
    verify,
)

NAME = "siamese/v1-dresses.keras"


class Bucket(Folder):
    """A folder that, like a bucket (storages' S3Storage), has no local paths: readers must copy."""

    def path(self, name: str) -> str:
        raise NotImplementedError("This backend doesn't support absolute paths.")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lock_held_across_hosts() -> Any:
    held = threading.Lock()

    def lock(name: str) -> AbstractContextManager[Any]:
        return held

    return lock


def test_it_copies_a_stored_file_into_the_host_cache_once(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    bucket.save(NAME, open_bytes(tmp_path, b"tower bytes"))

    first = fetch(bucket, NAME, sha256=sha(b"tower bytes"), cache_dir=tmp_path / "host")
    (tmp_path / "bucket" / NAME).unlink()  # a second load reads the cache, not the store
    second = fetch(bucket, NAME, sha256=sha(b"tower bytes"), cache_dir=tmp_path / "host")

    assert first == second == cached_path(tmp_path / "host", NAME, sha(b"tower bytes"))
    assert first.name.endswith(".keras") and first.read_bytes() == b"tower bytes"


def test_it_refuses_a_corrupted_file_and_caches_nothing(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    bucket.save(NAME, open_bytes(tmp_path, b"tower bytes, then a flipped bit"))

    with pytest.raises(ArtifactError, match=r"v1-dresses.keras.*replaced or corrupted"):
        fetch(bucket, NAME, sha256=sha(b"tower bytes"), cache_dir=tmp_path / "host")

    assert [p.name for p in (tmp_path / "host").iterdir() if not p.name.endswith(".lock")] == []


def test_it_says_which_file_is_missing(tmp_path):
    with pytest.raises(ArtifactError, match="not in the model store"):
        fetch(Bucket(tmp_path / "bucket"), NAME, sha256=sha(b"x"), cache_dir=tmp_path / "host")
    with pytest.raises(ArtifactError, match="not in the model store"):
        fetch(Folder(tmp_path / "folder"), NAME, sha256=sha(b"x"), cache_dir=tmp_path / "host")


def test_it_loads_a_folder_store_in_place_after_checking_it(tmp_path):
    folder = Folder(tmp_path / "folder")
    folder.save(NAME, open_bytes(tmp_path, b"tower bytes"))

    assert fetch(folder, NAME, sha256=sha(b"tower bytes"), cache_dir=tmp_path / "host") == tmp_path / "folder" / NAME
    (tmp_path / "folder" / NAME).write_bytes(b"tower bytes, changed")
    with pytest.raises(ArtifactError, match="replaced or corrupted"):
        fetch(folder, NAME, sha256=sha(b"tower bytes"), cache_dir=tmp_path / "host")


def test_it_publishes_into_the_store_and_the_publishing_hosts_cache(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    local = tmp_path / "trained.keras"
    local.write_bytes(b"new tower")

    name, digest = publish(bucket, local, NAME, cache_dir=tmp_path / "host")

    assert (name, digest) == (NAME, sha(b"new tower"))
    assert (tmp_path / "bucket" / NAME).read_bytes() == b"new tower"
    assert cached_path(tmp_path / "host", NAME, digest).read_bytes() == b"new tower"


def test_it_checks_the_stored_file_itself_not_a_hosts_good_copy(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    local = tmp_path / "trained.keras"
    local.write_bytes(b"new tower")
    _, digest = publish(bucket, local, NAME, cache_dir=tmp_path / "host")
    verify(bucket, NAME, sha256=digest)

    (tmp_path / "bucket" / NAME).write_bytes(b"new tower, truncated in the bucket")

    assert fetch(bucket, NAME, sha256=digest, cache_dir=tmp_path / "host").read_bytes() == b"new tower"
    with pytest.raises(ArtifactError, match="replaced or corrupted"):
        verify(bucket, NAME, sha256=digest)


def test_it_makes_a_shared_file_once_for_every_host(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    made: list[Path] = []
    lock = lock_held_across_hosts()

    def create(path: Path) -> None:
        made.append(path)
        path.write_bytes(f"random weights, made at attempt {len(made)}".encode())

    hosts = [
        fetch_or_create(bucket, "backbones/x.weights.h5", cache_dir=tmp_path / host, create=create, lock=lock)
        for host in ("host-a", "host-b")
    ]

    assert len(made) == 1
    (path_a, sha_a), (path_b, sha_b) = hosts
    assert sha_a == sha_b == sha(b"random weights, made at attempt 1")
    assert path_a.read_bytes() == path_b.read_bytes() and path_a.parent != path_b.parent
    assert (tmp_path / "bucket" / sidecar_name("backbones/x.weights.h5")).read_text() == sha_a
    assert not [p for p in (tmp_path / "host-a").iterdir() if p.name.startswith(".incoming-")]


def test_it_adopts_a_file_stored_before_its_checksum_was(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    bucket.save("backbones/x.weights.h5", open_bytes(tmp_path, b"old weights"))

    path, digest = fetch_without_making(bucket, tmp_path)

    assert digest == sha(b"old weights") and path.read_bytes() == b"old weights"


def fetch_without_making(bucket: Bucket, tmp_path: Path) -> tuple[Path, str]:
    """The stored backbones/x.weights.h5 through fetch_or_create, failing the test if it would make one."""
    return fetch_or_create(
        bucket,
        "backbones/x.weights.h5",
        cache_dir=tmp_path / "host",
        create=lambda path: pytest.fail("made again"),
        lock=lock_held_across_hosts(),
    )


def open_bytes(tmp_path: Path, data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def test_it_refuses_a_local_path_recorded_by_an_older_install(tmp_path):
    for name in ("/srv/old/var/models/siamese/v1-dresses.keras", "../elsewhere.keras"):
        with pytest.raises(ArtifactError, match="not a name in the model store"):
            fetch(Bucket(tmp_path / "bucket"), name, sha256=sha(b"x"), cache_dir=tmp_path / "host")
        with pytest.raises(ArtifactError, match="not a name in the model store"):
            verify(Folder(tmp_path / "folder"), name, sha256=sha(b"x"))


def test_it_says_so_when_the_store_itself_fails(tmp_path):
    class Unreachable(Bucket):
        def open(self, name: str, mode: str = "rb") -> Any:
            raise RuntimeError("Could not connect to the endpoint URL")

    with pytest.raises(ArtifactError, match="could not be read for 'siamese/v1-dresses.keras'.*endpoint"):
        fetch(Unreachable(tmp_path / "bucket"), NAME, sha256=sha(b"x"), cache_dir=tmp_path / "host")
    assert [p for p in (tmp_path / "host").iterdir() if not p.name.startswith(".")] == []


def test_it_hashes_again_a_file_whose_sidecar_a_crash_cut_short(tmp_path):
    bucket = Bucket(tmp_path / "bucket")
    bucket.save("backbones/x.weights.h5", open_bytes(tmp_path, b"weights"))
    bucket.save(sidecar_name("backbones/x.weights.h5"), open_bytes(tmp_path, b""))

    _, digest = fetch_without_making(bucket, tmp_path)

    assert digest == sha(b"weights")
    assert (tmp_path / "bucket" / sidecar_name("backbones/x.weights.h5")).read_text() == digest
