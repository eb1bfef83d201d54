"""`manage.py worker_health --queue Q`: a supervisor's check that a worker consuming Q answers through the broker."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from shop.management.commands import worker_health
from shop.procfile import read_procfile
from shop.worker_health import consumers, on_host
from tests.conftest import LIVE_STACK, REPO, wait_for
from workers.celery import app

HOST = socket.gethostname()


def test_it_finds_the_consumers_of_a_queue_among_the_replies():
    replies = {
        "search@a": [{"name": "search"}],
        "worker@a": [{"name": "celery"}],
        "both@b": [{"name": "celery"}, {"name": "search"}],
    }

    assert consumers(replies, queue="search") == ["both@b", "search@a"]
    assert consumers(replies, queue="nobody") == []
    assert consumers(None, queue="search") == []  # no worker replied at all


def test_it_keeps_the_nodes_of_one_host():
    assert on_host(["search@a", "worker@a.example", "search@b"], host="a") == ["search@a"]


@pytest.fixture(scope="module")
def procfile_search_worker(worker_env, tmp_path_factory):
    """The Procfile's own `search` line, run as honcho would (under /bin/sh) on the test broker."""
    log = tmp_path_factory.mktemp("search-worker") / "search.log"
    env = {**worker_env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {read_procfile(REPO / 'Procfile')['search']}"],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = f"search@{HOST}"
    try:
        wait_for(
            lambda: process.poll() is not None or app.control.ping(destination=[node], timeout=1.0),
            timeout=120,
            message=f"the Procfile's search worker {node}",
        )
        assert process.poll() is None, log.read_text()[-4000:]
        yield node
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


# The tests call the command as an object: under LIVE_STACK (available_apps=[]) Django knows no command
# of the shop by name.
@LIVE_STACK
def test_it_answers_ok_when_a_worker_of_the_queue_answers(procfile_search_worker):
    out = io.StringIO()

    call_command(worker_health.Command(), queue="search", timeout=2, stdout=out)

    assert procfile_search_worker in out.getvalue() and out.getvalue().startswith("ok: ")


@LIVE_STACK
def test_it_finds_the_worker_of_this_host_with_local(procfile_search_worker):
    out = io.StringIO()

    call_command(worker_health.Command(), queue="search", local=True, timeout=2, stdout=out)

    assert procfile_search_worker in out.getvalue()


@LIVE_STACK
def test_it_runs_the_procfile_worker_with_the_search_time_limits(procfile_search_worker, settings):
    limits = settings.CELERY_TASK_ANNOTATIONS["workers.run_search"]

    tasks = app.control.inspect(destination=[procfile_search_worker], timeout=2).registered(
        "soft_time_limit", "time_limit"
    )

    expected = f"workers.run_search [soft_time_limit={limits['soft_time_limit']} time_limit={limits['time_limit']}]"
    assert expected in tasks[procfile_search_worker]


@LIVE_STACK
def test_it_exits_1_when_no_worker_consumes_the_queue(procfile_search_worker, worker_env):
    with pytest.raises(CommandError, match="no worker consuming the queue 'nobody' answered within 1 s"):
        call_command(worker_health.Command(), queue="nobody", timeout=1, stdout=io.StringIO())

    # As a supervisor runs it: the exit status and one line on stderr.
    result = subprocess.run(
        [sys.executable, "manage.py", "worker_health", "--queue", "nobody", "--timeout", "1"],
        cwd=REPO,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no worker consuming the queue 'nobody' answered within 1 s" in result.stderr


@LIVE_STACK
def test_it_exits_1_when_the_broker_does_not_answer(worker_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "worker_health", "--queue", "search", "--timeout", "1"],
        cwd=REPO,
        env={**worker_env, "CELERY_BROKER_URL": "redis://:s3cret@127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert "the broker at redis://:**@127.0.0.1:1/0 does not answer" in result.stderr
    assert "s3cret" not in result.stderr
