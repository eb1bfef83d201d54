"""Atomic writes, file hashes and flock-based locks (similarity.files), on real files and processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from similarity import files
from similarity.files import atomic_path, atomic_write_bytes, exclusive_lock, sha256_file

from .conftest import REPO


def test_it_writes_a_new_file_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"

    atomic_write_bytes(target, b"new bytes")

    assert target.read_bytes() == b"new bytes"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["photo.jpg"]


def test_it_replaces_a_file_by_renaming_so_open_readers_keep_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "weights.h5"
    target.write_bytes(b"old")
    before = target.stat().st_ino

    with open(target, "rb") as reader:
        atomic_write_bytes(target, b"new")
        assert reader.read() == b"old"

    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != before
    assert [p.name for p in tmp_path.iterdir()] == ["weights.h5"]


def test_it_leaves_the_old_file_and_no_temporary_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "photos.txt"
    target.write_bytes(b"old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")

    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["photos.txt"]


def test_it_names_the_temporary_file_beside_the_target_as_asked(tmp_path: Path) -> None:
    target = tmp_path / "tiny.weights.h5"

    with atomic_path(target, prefix=".tmp-", suffix=f"-{target.name}") as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".tmp-") and temporary.name.endswith("-tiny.weights.h5")
        assert temporary.exists() and not target.exists()
        temporary.write_bytes(b"w")
    with atomic_path(target) as temporary:
        assert temporary.name.startswith(".tiny.weights.h5.") and temporary.name.endswith(".tmp")

    assert target.read_bytes() == b""


def test_it_syncs_the_data_before_the_rename_unless_told_not_to(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.bin"
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(target.exists())
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)

    atomic_write_bytes(target, b"x")
    atomic_write_bytes(tmp_path / "b.bin", b"y", fsync=False)

    assert synced == [False]


def test_it_hashes_a_file_larger_than_one_read(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_it_refuses_a_second_holder_of_the_lock_until_it_is_released(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"

    with exclusive_lock(lock), pytest.raises(BlockingIOError), exclusive_lock(lock, blocking=False):
        pass
    with exclusive_lock(lock, blocking=False):
        pass


def test_it_makes_a_blocking_taker_wait_for_the_release(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    events: list[str] = []
    started = threading.Event()

    def take() -> None:
        started.set()
        with exclusive_lock(lock):
            events.append("taken")

    with exclusive_lock(lock):
        thread = threading.Thread(target=take)
        thread.start()
        started.wait()
        thread.join(timeout=0.3)
        events.append("released")
    thread.join(timeout=10)

    assert events == ["released", "taken"]


def test_it_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    code = (
        "import sys\n"
        "from similarity.files import exclusive_lock\n"
        "try:\n"
        "    with exclusive_lock(sys.argv[1], blocking=False):\n"
        "        print('taken')\n"
        "except BlockingIOError:\n"
        "    print('busy')\n"
    )

    def other_process() -> str:
        run = subprocess.run(
            [sys.executable, "-c", code, str(lock)], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    with exclusive_lock(lock):
        assert other_process() == "busy"
    assert other_process() == "taken"
