"""Is a Celery worker consuming a queue alive? Asked through the broker, as a supervisor's health check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workers.celery import app


def consumers(active_queues: Mapping[str, Sequence[Mapping[str, Any]]] | None, *, queue: str) -> list[str]:
    """Node names whose active queues include ``queue``, sorted; None (no worker replied) gives none."""
    return sorted(node for node, queues in (active_queues or {}).items() if any(q.get("name") == queue for q in queues))


def on_host(nodes: Sequence[str], *, host: str) -> list[str]:
    """The nodes of one host: celery names a node `name@host` (the Procfile's --hostname=NAME@%h)."""
    return [node for node in nodes if node.rpartition("@")[2] == host]


def answering_consumers(*, queue: str, timeout: float, host: str | None = None) -> list[str]:
    """Workers that consume ``queue`` (of ``host`` only, if given) and answer a ping within ``timeout`` s each.

    Two rounds through the broker: active_queues finds the consumers (every worker's reply is awaited
    for the whole timeout), then a ping to those alone returns as soon as they have all answered.
    A prefork worker answers from its main process, so one busy with a training run still does.
    """
    nodes = consumers(app.control.inspect(timeout=timeout).active_queues(), queue=queue)
    if host is not None:
        nodes = on_host(nodes, host=host)
    if not nodes:
        return []
    replies = app.control.ping(destination=nodes, timeout=timeout, limit=len(nodes))
    return sorted(node for reply in replies for node in reply if node in nodes)
