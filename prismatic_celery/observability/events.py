"""Supervision listeners: a typed base of no-op hooks and a dispatcher that isolates them.

A listener that raises is logged and skipped; the next listener still runs and
the supervised task is never affected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from ..log import REPEATS, get_logger, log_event
from ..store import Store

__all__ = [
    "EVENT_TYPES",
    "CeleryEventListener",
    "Dispatcher",
    "LogListener",
    "StreamListener",
    "SupervisionEvent",
    "SupervisionListener",
    "level_of",
    "log_fields",
    "typed_fields",
]

logger = get_logger("listeners")

EVENT_TYPES = ("crash", "restart", "pause", "resume", "remediation", "dead_letter", "escalation", "circuit", "shed")


@dataclass(frozen=True)
class SupervisionEvent:
    """One supervision fact; ``type`` is one of :data:`EVENT_TYPES`.

    Sent as the Celery event ``supervision-<type>`` with ``fields`` as its body.
    """

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False
    """True when the event is already in the store's event stream."""
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown supervision event type {self.type!r}; known: {', '.join(EVENT_TYPES)}")

    @property
    def celery_type(self) -> str:
        """The Celery event type, e.g. ``supervision-restart``, ``supervision-dead-letter``."""
        return f"supervision-{self.type.replace('_', '-')}"


class SupervisionListener:
    """Override only the hooks you need; each receives the event and returns nothing."""

    def on_crash(self, event: SupervisionEvent) -> None:
        """A supervised task failed and was only recorded (no remediation applies, e.g. a temporary child)."""

    def on_restart(self, event: SupervisionEvent) -> None:
        """A child failed (its executions fail at a high rate) and restarts: strategy and budget apply."""

    def on_pause(self, event: SupervisionEvent) -> None:
        """Queues stopped being consumed (strategy or cool-down)."""

    def on_resume(self, event: SupervisionEvent) -> None:
        """Paused queues are consumed again."""

    def on_remediation(self, event: SupervisionEvent) -> None:
        """A failed message runs again under a remediation action."""

    def on_dead_letter(self, event: SupervisionEvent) -> None:
        """A failed message was moved to the dead-letter queue."""

    def on_escalation(self, event: SupervisionEvent) -> None:
        """A person is needed: a new failure pattern the rules escalate, or a domain's supervisor budget ran out."""

    def on_circuit(self, event: SupervisionEvent) -> None:
        """A circuit breaker changed state."""

    def on_shed(self, event: SupervisionEvent) -> None:
        """Messages were shed under load."""


#: Event fields that hold numbers (the stream stores every value as a string; readers type them back).
NUMERIC_FIELDS = frozenset({
    "time", "at", "executions", "failures", "window_s", "child_restarts", "domain_restarts", "attempt", "attempts",
    "countdown_s", "deaths", "supervisor_restarts", "cooldown_s", "fail_counter", "fail_max", "retry_after_s",
    "backlog", "threshold", "importance", "cutoff",
})


def typed_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """An event's fields with the numeric ones (:data:`NUMERIC_FIELDS`) as numbers: ints stay ints; a value
    that is not a number is kept as it is."""
    typed: dict[str, object] = {}
    for key, value in fields.items():
        if key in NUMERIC_FIELDS and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                typed[key] = value
                continue
            typed[key] = int(number) if number.is_integer() and "." not in value and "e" not in value else number
        else:
            typed[key] = value
    return typed


_LEVELS = {"escalation": logging.WARNING, "restart": logging.WARNING, "dead_letter": logging.WARNING,
           "shed": logging.WARNING}


def level_of(event: SupervisionEvent) -> int:
    """The log level of an event: CRITICAL only for a domain escalation (its supervisor budget is exhausted);
    WARNING for what an operator should look at (a dead letter, a child failure, a new pattern escalated, an
    open circuit, a shed message); INFO for the rest (a re-run, a pause, a resume). ERROR is left to the
    plugin's own faults."""
    if event.type == "escalation" and event.fields.get("reason") == "supervisor_budget_exceeded":
        return logging.CRITICAL
    if event.type == "circuit" and event.fields.get("new_state") == "open":
        return logging.WARNING
    return _LEVELS.get(event.type, logging.INFO)


#: The fields a log line starts with, in this order (the others follow in the event's own order).
LOG_FIELD_ORDER = ("domain", "child", "task", "task_id", "exception", "action", "rule", "failure_class", "reason",
                   "fingerprint")
#: A log line names a fingerprint by this many characters (``lessons show`` takes any unique prefix).
LOG_FINGERPRINT_CHARS = 12


def log_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """An event's fields as its log line shows them: :data:`LOG_FIELD_ORDER` first, the fingerprint short, and
    no ``hostname`` (the worker's log is its own). Events carry no message text, so nothing needs redacting
    here: messages are redacted where they are stored (lessons, dead letters)."""
    ordered = {k: fields[k] for k in LOG_FIELD_ORDER if k in fields}
    ordered.update((k, v) for k, v in fields.items() if k not in ordered and k != "hostname")
    fingerprint = ordered.get("fingerprint")
    if isinstance(fingerprint, str):
        ordered["fingerprint"] = fingerprint[:LOG_FINGERPRINT_CHARS]
    return ordered


#: Events whose log lines repeat while a child keeps failing (each restart pauses and later resumes its
#: siblings): per domain and child, logged in full once a minute and counted in between (:data:`REPEATS`).
SUMMARISED = frozenset({"restart", "pause", "resume"})


class LogListener(SupervisionListener):
    """Writes every event as one structured log line: INFO for a crash handled (a re-run, a pause, a resume),
    WARNING for a dead letter, a child failure, an escalated pattern, an open circuit and a shed message,
    CRITICAL only for a domain escalation (:func:`level_of`). A child's restarts, pauses and resumes are
    logged in full once a minute, then counted (:data:`SUMMARISED`)."""

    def _log(self, event: SupervisionEvent) -> None:
        fields = log_fields(event.fields)
        if event.type in SUMMARISED:  # a child failing again and again: once a minute in full, then a count
            where = event.fields.get("child") or event.fields.get("queues") or ""
            REPEATS.log(f"{event.type}:{event.fields.get('domain', '')}:{where}", level_of(event), event.celery_type,
                        get_logger("events"), **fields)
            return
        log_event(level_of(event), event.celery_type, get_logger("events"), **fields)

    on_crash = on_restart = on_pause = on_resume = _log
    on_remediation = on_dead_letter = on_escalation = on_circuit = on_shed = _log


class StreamListener(SupervisionListener):
    """Appends events to the capped ``prismatic:{<ns>}:events`` stream (unless already recorded)."""

    def __init__(self, store: Store, key: str, maxlen: int) -> None:
        self.store = store
        self.key = key
        self.maxlen = maxlen

    def _append(self, event: SupervisionEvent) -> None:
        if event.recorded:
            return  # the restart script already wrote it, in the same round trip as its decision
        fields = {"type": event.type, "time": f"{event.timestamp:.6f}"}
        fields.update({k: str(v) for k, v in event.fields.items()})
        self.store.stream_add(self.key, fields, maxlen=self.maxlen)

    on_crash = on_restart = on_pause = on_resume = _append
    on_remediation = on_dead_letter = on_escalation = on_circuit = on_shed = _append


class CeleryEventListener(SupervisionListener):
    """Sends every event as the Celery event ``supervision-<type>`` (``celery events``, Flower)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _send(self, event: SupervisionEvent) -> None:
        hostname = str(event.fields.get("hostname") or "") or None
        # Celery's own envelope fields (``type``, ``hostname``) are the dispatcher's, never the body's
        fields = {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in event.fields.items()
                  if k not in ("type", "hostname")}
        with self.app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(event.celery_type, **fields)

    on_crash = on_restart = on_pause = on_resume = _send
    on_remediation = on_dead_letter = on_escalation = on_circuit = on_shed = _send


class Dispatcher:
    """Calls every listener's hook in order; an exception is logged, never propagated."""

    def __init__(self, listeners: Iterable[SupervisionListener] = ()) -> None:
        self.listeners: list[SupervisionListener] = list(listeners)

    def add(self, listener: SupervisionListener) -> None:
        """Append a listener (called after the existing ones)."""
        self.listeners.append(listener)

    def emit(self, event: SupervisionEvent) -> None:
        """Deliver ``event`` to every listener, isolating failures."""
        for listener in self.listeners:
            try:
                getattr(listener, f"on_{event.type}")(event)
            except Exception as exc:  # a broken listener must not break supervision
                log_event(
                    logging.ERROR, "listener-failed", logger,
                    listener=type(listener).__name__, hook=f"on_{event.type}", error=repr(exc)[:300],
                )
