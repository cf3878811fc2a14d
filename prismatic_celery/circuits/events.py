"""Where a circuit's state changes go: any sink with ``emit(event)`` (the runtime's dispatcher).

The circuits build the supervision event of :mod:`prismatic_celery.observability.events` (its event type
is their only import from that layer) and hand it to the sink they were given; without one, a registry
logs the change as the runtime's log listener does, and a lone breaker tells nobody.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..log import get_logger, log_event
from ..observability.events import SupervisionEvent
from .record import OPEN, CircuitRecord, Outcome

__all__ = ["EventSink", "LoggedEvents", "NoEvents", "circuit_event"]


class EventSink(Protocol):
    """Takes supervision events (the runtime's ``Dispatcher`` is one)."""

    def emit(self, event: SupervisionEvent) -> None:
        """Deliver ``event``; never raises."""


class NoEvents:
    """A sink that drops every event."""

    def emit(self, event: SupervisionEvent) -> None:
        """Nothing to deliver to."""


class LoggedEvents:
    """A sink that logs every event as one structured line: WARNING when a circuit opens, else INFO."""

    def emit(self, event: SupervisionEvent) -> None:
        """Log ``event`` (its ``reason`` first, as the runtime's log listener orders fields)."""
        level = logging.WARNING if event.fields.get("new_state") == OPEN else logging.INFO
        fields = dict(event.fields)
        ordered = {"reason": fields.pop("reason")} if "reason" in fields else {}
        log_event(level, event.celery_type, get_logger("events"), **ordered, **fields)


def circuit_event(outcome: Outcome, fail_max: int) -> SupervisionEvent:
    """The ``circuit`` supervision event announcing the change ``outcome`` made."""
    record: CircuitRecord = outcome.record
    return SupervisionEvent("circuit", {
        "name": record.name,
        "old_state": outcome.old_state,
        "new_state": record.state,
        "reason": record.reason,
        "fail_counter": record.fail_counter,
        "fail_max": fail_max,
        "retry_after_s": record.wait_ms() / 1000,
    })
