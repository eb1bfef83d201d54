"""The Procfile: the shop's process list, read by honcho in production and by `manage.py demo`."""

from __future__ import annotations

import re
from pathlib import Path

# honcho's own rule for a process line (honcho.environ.PROCFILE_LINE): a name, a colon, a command.
LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>\S.*)$")


class ProcfileError(ValueError):
    """A line of the Procfile is neither a process, a comment nor blank."""


def read_procfile(path: Path) -> dict[str, str]:
    """Process names and their shell commands, in file order; blank lines and `#` comments are skipped.

    Stricter than honcho, which ignores a line it cannot read: here a typo names its line instead of
    silently dropping a process. A name given twice is refused too (honcho refuses it as well).
    """
    processes: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise ProcfileError(f"{path}:{number}: expected `name: command`, got {line!r}")
        name, command = match["name"], match["command"].strip()
        if name in processes:
            raise ProcfileError(f"{path}:{number}: the process {name!r} is defined twice")
        processes[name] = command
    return processes
