"""Which messages are low priority: one broker-independent scale, *importance* 0 (least) to 9 (most).

A message's importance is the first of:

1. the message header ``prismatic_importance`` (per call:
   ``task.apply_async(..., headers={"prismatic_importance": 2})``);
2. the task option ``importance`` (per task: ``@app.task(importance=2)``);
3. the message priority, read in the broker's own order: RabbitMQ (``amqp``)
   consumes higher numbers first, so importance = priority; kombu's Redis
   transport (and the other kombu virtual transports) consume 0 first, so
   importance = 9 - priority.

A message with none of these has no importance and is **never shed**. While
its queue sheds, a message whose importance is below the cut-off
(``prismatic_shed_cutoff``, default 5) is shed. Messages put back by
``celery supervision shed replay`` carry the header ``prismatic_replayed``
and are never shed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery, Task

from .config import IMPORTANCE_MAX

__all__ = [
    "HEADER",
    "REPLAYED_HEADER",
    "TASK_OPTION",
    "broker_consumes_higher_first",
    "importance_from_priority",
    "importance_of",
    "message_importance",
    "replayed",
]

HEADER = "prismatic_importance"
REPLAYED_HEADER = "prismatic_replayed"
TASK_OPTION = "importance"
_HIGHER_FIRST_DRIVERS = frozenset({"amqp"})


def broker_consumes_higher_first(app: Celery) -> bool:
    """True for RabbitMQ (AMQP: 9 before 0); False for kombu's Redis and virtual transports (0 first)."""
    try:
        driver = str(app.connection_for_read().transport.driver_type)
    except Exception:  # an unusual broker URL: fall back to kombu's virtual-transport convention
        return False
    return driver in _HIGHER_FIRST_DRIVERS


def _as_level(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        return None
    return max(0, min(IMPORTANCE_MAX, value))


def importance_from_priority(priority: Any, *, higher_first: bool) -> int | None:
    """A message priority translated to importance (None when the message has none)."""
    level = _as_level(priority)
    if level is None:
        return None
    return level if higher_first else IMPORTANCE_MAX - level


def _headers(request: Any) -> Mapping[str, Any]:
    headers = getattr(request, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def importance_of(task: Task[Any, Any], headers: Iterable[Any], priority: Any, *, higher_first: bool) -> int | None:
    """The first valid level among the message's ``headers`` values, then the task option, then the priority."""
    for candidate in (*headers, getattr(task, TASK_OPTION, None)):
        level = _as_level(candidate)
        if level is not None:
            return level
    return importance_from_priority(priority, higher_first=higher_first)


def message_importance(task: Task[Any, Any], *, higher_first: bool) -> int | None:
    """The importance of the running message (header, then task option, then message priority)."""
    request = task.request
    delivery = request.delivery_info if isinstance(request.delivery_info, Mapping) else {}
    return importance_of(task, (_headers(request).get(HEADER), getattr(request, HEADER, None)),
                         delivery.get("priority"), higher_first=higher_first)


def replayed(task: Task[Any, Any]) -> bool:
    """True when the running message was put back by ``shed replay`` (an operator chose to run it)."""
    request = task.request
    return bool(_headers(request).get(REPLAYED_HEADER) or getattr(request, REPLAYED_HEADER, None))
