"""The Procfile: read strictly, valid under /bin/sh and gunicorn, and the very list `manage.py demo` starts."""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from shop.management.commands import demo
from shop.procfile import ProcfileError, read_procfile
from tests.conftest import REPO, wait_for

PROCFILE = REPO / "Procfile"
VENV_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def expanded(command: str, env: dict[str, str]) -> list[str]:
    """The arguments /bin/sh makes of a Procfile command, as honcho's shell would run it."""
    run = subprocess.run(
        ["/bin/sh", "-c", f"printf '%s\\n' {command}"], env=env, check=True, capture_output=True, text=True
    )
    return run.stdout.splitlines()


def test_it_reads_names_and_commands_in_order_skipping_comments_and_blank_lines(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "# the shop\n\nweb: gunicorn app --bind=:${PORT:-8000}\n  # indented comment\nworker:celery worker\n"
    )

    assert read_procfile(procfile) == {"web": "gunicorn app --bind=:${PORT:-8000}", "worker": "celery worker"}
    assert list(read_procfile(procfile)) == ["web", "worker"]


@pytest.mark.parametrize(
    "line", ["web gunicorn app", "web:", "web:   ", "my web: gunicorn", "web.1: gunicorn", " web: gunicorn"]
)
def test_it_names_the_line_it_cannot_read(tmp_path, line):
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"worker: celery worker\n{line}\n")

    with pytest.raises(ProcfileError, match=re.escape(f"Procfile:2: expected `name: command`, got {line!r}")):
        read_procfile(procfile)


def test_it_refuses_a_process_named_twice(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: a\nweb: b\n")

    with pytest.raises(ProcfileError, match="Procfile:2: the process 'web' is defined twice"):
        read_procfile(procfile)


def test_it_lists_the_web_server_the_two_workers_and_exactly_one_beat():
    processes = read_procfile(PROCFILE)

    assert list(processes) == ["web", "worker", "search", "beat"]
    assert "--queues=celery " in processes["worker"] and "--queues=search " in processes["search"]
    # One beat for the whole shop: no worker line embeds another with --beat.
    assert [name for name, command in processes.items() if " beat" in command] == ["beat"]
    assert not any("--beat" in command for command in processes.values())


def test_it_binds_the_web_server_to_port_with_a_default_under_sh():
    web = read_procfile(PROCFILE)["web"]

    assert "--bind=0.0.0.0:8000" in expanded(web, {"PATH": VENV_PATH})
    assert "--bind=0.0.0.0:5000" in expanded(web, {"PATH": VENV_PATH, "PORT": "5000"})  # honcho's first port
    assert "--bind=127.0.0.1:8123" in expanded(web, {"PATH": VENV_PATH, "PORT": "8123", "WEB_HOST": "127.0.0.1"})


def test_it_gives_gunicorn_a_configuration_it_accepts():
    web = read_procfile(PROCFILE)["web"]

    # --check-config loads the WSGI application too: the settings and URLs import in a web process.
    subprocess.run(
        ["/bin/sh", "-c", f"exec {web} --check-config"],
        env={**os.environ, "PATH": VENV_PATH, "DEBUG": "true"},
        cwd=REPO,
        check=True,
        timeout=120,
    )


@pytest.mark.parametrize("serve", [True, False])
def test_it_starts_the_demo_from_the_procfile_less_the_web_server_without_serve(serve):
    names = list(demo.demo_processes(read_procfile(demo.PROCFILE), serve=serve))

    assert demo.PROCFILE == PROCFILE
    assert names == (["web", "worker", "search", "beat"] if serve else ["worker", "search", "beat"])


def test_it_gives_the_demo_its_broker_port_concurrency_and_media():
    env = demo.demo_env({"PATH": "/usr/bin", "DEBUG": "true"}, broker="redis://127.0.0.1:7/0", port=8123, concurrency=3)

    assert env["CELERY_BROKER_URL"] == env["REDIS_URL"] == "redis://127.0.0.1:7/0"
    assert (env["PORT"], env["WEB_HOST"], env["CELERY_WORKER_CONCURRENCY"]) == ("8123", "127.0.0.1", "3")
    assert env["SERVE_MEDIA"] == "true"  # gunicorn's Django serves /media/
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    # The Procfile's worker line leaves its size to the settings, which read this variable.
    assert "--concurrency" not in read_procfile(PROCFILE)["worker"]


@pytest.fixture
def restore_signals():
    """The demo takes SIGINT and SIGTERM for itself; give them back to pytest."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.django_db
def test_it_runs_each_line_of_the_procfile_it_is_given(tmp_path, monkeypatch, settings, restore_signals):
    """Whatever the Procfile says is what the demo runs (here: lines that report their environment)."""
    started = tmp_path / "started"
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "".join(
            f"{name}: echo {name} $PORT $WEB_HOST $CELERY_WORKER_CONCURRENCY $SERVE_MEDIA >> {shlex.quote(str(started))}\n"
            for name in ("web", "worker", "search", "beat")
        )
    )
    settings.DATA_DIR = tmp_path
    monkeypatch.setattr(demo, "PROCFILE", procfile)
    monkeypatch.setattr(demo.Command, "_broker", lambda self: ("redis://127.0.0.1:7/0", None))

    def lines() -> list[str]:
        return started.read_text().splitlines() if started.exists() else []

    # The catalogue is not built here: the demo waits for its children's lines instead.
    monkeypatch.setattr(
        demo.Command, "_build_catalogue", lambda self, **_: wait_for(lambda: len(lines()) == 3, timeout=30)
    )

    call_command("demo", "--no-serve", "--port=8123", "--concurrency=3", stdout=io.StringIO())

    assert sorted(lines()) == sorted(f"{name} 8123 127.0.0.1 3 true" for name in ("worker", "search", "beat"))
    assert {path.name for path in (tmp_path / "logs").iterdir()} == {"worker.log", "search.log", "beat.log"}
