"""Pause records: the source of truth for which queues must not be consumed.

A record is JSON at ``prismatic:<ns>:pause:<queue>`` that expires when the
pause ends, so a pause ends even if its author died. Workers read them all in
one MGET per reconcile period.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..keys import Keys
from ..log import get_logger, log_event
from ..store import Store
from .restarts import pause_key

__all__ = ["REASONS", "Pause", "clear_pauses", "parse_pauses", "read_pauses", "set_pause"]

logger = get_logger("pauses")

REASONS = ("rest_for_one", "one_for_all", "cooldown", "escalated", "manual", "circuit")


@dataclass(frozen=True)
class Pause:
    """Why and until when a queue is paused (times are the store's clock, seconds)."""

    queue: str
    domain: str
    reason: str
    by: str
    since: float
    until: float

    def to_json(self) -> dict[str, Any]:
        """The stored form (the queue is the key's name)."""
        return {"domain": self.domain, "reason": self.reason, "by": self.by, "since": self.since, "until": self.until}

    @classmethod
    def from_json(cls, queue: str, data: Any) -> Pause | None:
        """Validate a stored record; None (with a warning) for anything malformed."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not an object")
            pause = cls(queue=queue, domain=str(data["domain"]), reason=str(data["reason"]), by=str(data["by"]),
                        since=float(data["since"]), until=float(data["until"]))
        except (KeyError, TypeError, ValueError) as exc:
            log_event(logging.WARNING, "pause-record-invalid", logger, queue=queue, error=repr(exc)[:200])
            return None
        return pause


def read_pauses(store: Store, keys: Keys, queues: Sequence[str]) -> dict[str, Pause]:
    """The live pauses of ``queues`` (one round trip)."""
    return parse_pauses(queues, store.get_many([pause_key(keys, q) for q in queues]))


def parse_pauses(queues: Sequence[str], values: Sequence[Any]) -> dict[str, Pause]:
    """Valid pause records among ``values`` (read for ``queues``, in order); malformed ones skipped."""
    found: dict[str, Pause] = {}
    for queue, data in zip(queues, values, strict=True):
        if data is not None:
            pause = Pause.from_json(queue, data)
            if pause is not None:
                found[queue] = pause
    return found


def set_pause(store: Store, keys: Keys, pause: Pause) -> None:
    """Write a pause record that expires at ``pause.until``."""
    store.set_json(pause_key(keys, pause.queue), pause.to_json(), ttl_s=max(0.001, pause.until - pause.since))


def clear_pauses(store: Store, keys: Keys, queues: Iterable[str]) -> int:
    """Delete pause records; how many existed."""
    return store.delete(*(pause_key(keys, q) for q in queues))
