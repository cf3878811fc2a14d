"""Which messages are low priority: one broker-independent scale, *importance* 0 (least) to 9 (most).

A message carries an importance only when its producer said so. It is the first of:

1. the message header ``prismatic_importance`` (per call:
   ``task.apply_async(..., headers={"prismatic_importance": 2})``);
2. the task option ``importance`` (per task: ``@app.task(importance=2)``);
3. the priority the producer set (``apply_async(priority=...)``, the task's
   ``priority``, ``task_default_priority`` or a route), read in the broker's
   own order: RabbitMQ (``amqp``) consumes higher numbers first, so
   importance = priority; kombu's Redis transport (and the other kombu virtual
   transports) consume 0 first, so importance = 9 - priority.

A broker's default priority is never an importance: kombu stamps priority 0 on
a message published without one (``send_task``, and every message on Redis),
which would read as the least important on RabbitMQ and the most important on
Redis. So a producer with the plugin installed records the priority it set in
the header ``prismatic_priority`` (``None`` when it set none) as it publishes
(:func:`mark_priority`, a ``before_task_publish`` receiver); a re-publish of
the message (retry, deferral, replay) keeps the original's mark. A message
whose priority is not so marked (a producer without the plugin) has no
importance from its priority.

A message with no importance is **never shed**. While its queue sheds, a
message whose importance is below the cut-off (``prismatic_shed_cutoff``,
default 5) is shed. Messages put back by ``celery supervision shed replay``
carry the header ``prismatic_replayed`` and are never shed again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING

from celery import Celery, signals

from ...log import get_logger, log_event
from .config import IMPORTANCE_MAX

if TYPE_CHECKING:
    from ...supervision.locate import AnyTask

__all__ = [
    "HEADER",
    "PRIORITY_HEADER",
    "REPLAYED_HEADER",
    "TASK_OPTION",
    "broker_consumes_higher_first",
    "connect_priority_marks",
    "importance_from_priority",
    "importance_of",
    "mark_priority",
    "message_importance",
    "replayed",
]

logger = get_logger("shedding")

HEADER = "prismatic_importance"
PRIORITY_HEADER = "prismatic_priority"
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


def _as_level(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    level = int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value
    if not isinstance(level, int):
        return None
    return max(0, min(IMPORTANCE_MAX, level))


def importance_from_priority(priority: object, *, higher_first: bool) -> int | None:
    """A priority the producer set, translated to importance (None when it set none)."""
    level = _as_level(priority)
    if level is None:
        return None
    return level if higher_first else IMPORTANCE_MAX - level


def mark_priority(headers: MutableMapping[str, object], properties: Mapping[str, object]) -> None:
    """Record in a message's ``headers`` the priority its producer set (None: none), unless already recorded.

    Called as the message is published. A re-publish copies the original's
    headers, mark included, while its priority property is a copy of the
    delivered one, which may be the broker's default: the first mark stands.
    """
    if PRIORITY_HEADER in headers:
        return
    priority = properties.get("priority")
    headers[PRIORITY_HEADER] = priority if isinstance(priority, int) and not isinstance(priority, bool) else None


def _on_before_publish(headers: object = None, properties: object = None, **_: object) -> None:
    try:
        if isinstance(headers, MutableMapping):
            mark_priority(headers, properties if isinstance(properties, Mapping) else {})
    except Exception as exc:  # marking never stops a publish: the message then has no importance
        log_event(logging.ERROR, "shed-priority-mark-failed", logger, error=repr(exc)[:200])


def connect_priority_marks() -> None:
    """Mark the priority of every task message this process publishes (idempotent)."""
    signals.before_task_publish.connect(_on_before_publish, weak=False, dispatch_uid="prismatic.priority_mark")


def _headers(request: object) -> Mapping[str, object]:
    headers = getattr(request, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def importance_of(task: AnyTask, headers: Iterable[object], priority: object, *, higher_first: bool) -> int | None:
    """The first valid level among the message's ``headers`` values, then the task option, then ``priority``
    (the one its producer set, from the ``prismatic_priority`` header)."""
    for candidate in (*headers, getattr(task, TASK_OPTION, None)):
        level = _as_level(candidate)
        if level is not None:
            return level
    return importance_from_priority(priority, higher_first=higher_first)


def _carried(request: object, name: str) -> object:
    """A custom header of the running message (Celery keeps them in ``headers`` and as attributes)."""
    found = _headers(request).get(name)
    return getattr(request, name, None) if found is None else found


def message_importance(task: AnyTask, *, higher_first: bool) -> int | None:
    """The importance of the running message (header, then task option, then the priority its producer set)."""
    request = task.request
    return importance_of(task, (_carried(request, HEADER),), _carried(request, PRIORITY_HEADER),
                         higher_first=higher_first)


def replayed(task: AnyTask) -> bool:
    """True when the running message was put back by ``shed replay`` (an operator chose to run it)."""
    return bool(_carried(task.request, REPLAYED_HEADER))
