"""Pause records: the source of truth for which queues must not be consumed.

A queue is paused while any of its *causes* holds a record. Each cause has its own
JSON record at ``prismatic:{<ns>}:pause:<queue>:<cause>`` that expires when that pause
ends, so a pause ends even if its author died, and no cause can shorten or remove
another's pause:

| Cause | Written by | Ends |
|---|---|---|
| ``escalated`` | the supervisor's budget overrun | expiry, or ``supervision resume`` |
| ``cooldown`` | the domain's budget overrun | expiry, or ``supervision resume`` |
| ``manual`` | ``supervision pause`` / ``control supervision_pause`` | expiry, or ``supervision resume`` |
| ``rest_for_one:<child>`` | ``<child>`` failed (rest_for_one) | ``<child>`` succeeds again, or expiry |
| ``one_for_all`` | a child of the domain failed (one_for_all) | expiry (``prismatic_recycle_pause_s``) |
| ``circuit`` | an open circuit (``prismatic_circuit_pause_child``) | expiry (the circuit's half-open time) |

A writer never shortens a longer record of its own cause; resuming deletes only the
records its cause owns (one ``DEL``, so there is no read-then-delete race). The view
of a queue is its strongest live cause, in the order of :data:`REASONS`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..log import get_logger, log_event
from ..store import MemoryStore, Script, Store, encode_json
from ..store.base import Scalar
from ..store.keys import Keys
from .tree import Supervisor

__all__ = [
    "REASONS",
    "SET_PAUSE",
    "Pause",
    "cause_keys",
    "clear_pauses",
    "parse_pauses",
    "pause_key",
    "queue_causes",
    "read_pauses",
    "rest_cause",
    "set_pause",
]

logger = get_logger("pauses")

#: Pause reasons, strongest first: the view of a queue paused for several causes shows the strongest.
REASONS = ("escalated", "cooldown", "manual", "rest_for_one", "one_for_all", "circuit")
_RANK = {reason: rank for rank, reason in enumerate(REASONS)}


def rest_cause(failed_child: str) -> str:
    """The cause of a ``rest_for_one`` pause written because ``failed_child`` failed."""
    return f"rest_for_one:{failed_child}"


def pause_key(keys: Keys, queue: str, cause: str) -> str:
    """``prismatic:{<ns>}:pause:<queue>:<cause>``: one cause's pause record (JSON, expires when it ends)."""
    return keys.key("pause", queue, cause)


def queue_causes(supervisor: Supervisor, queue: str) -> tuple[str, ...]:
    """Every cause that can pause ``queue``: the fixed ones and a rest_for_one cause per earlier sibling."""
    located = supervisor.locate(queue)
    earlier = located[0].queues[: located[0].queues.index(queue)] if located else ()
    return ("escalated", "cooldown", "manual", "one_for_all", "circuit", *(rest_cause(q) for q in earlier))


def cause_keys(keys: Keys, supervisor: Supervisor, queues: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(queue, cause, key)`` for every possible pause record of ``queues``."""
    return [(q, cause, pause_key(keys, q, cause)) for q in queues for cause in queue_causes(supervisor, q)]


@dataclass(frozen=True)
class Pause:
    """Why and until when a queue is paused (times are the store's clock, seconds).

    ``causes`` lists every live cause of the queue's pause (strongest first) when the
    record was read from the store; this record is the strongest of them.
    """

    queue: str
    domain: str
    reason: str
    by: str
    since: float
    until: float
    causes: tuple[str, ...] = ()

    @property
    def cause(self) -> str:
        """The cause this record belongs to (``rest_for_one:<child>`` for rest_for_one)."""
        return rest_cause(self.by) if self.reason == "rest_for_one" else self.reason

    def to_json(self) -> dict[str, Any]:
        """The stored form (the queue and cause are the key's name)."""
        return {"domain": self.domain, "reason": self.reason, "by": self.by, "since": self.since, "until": self.until}

    @classmethod
    def from_json(cls, queue: str, data: Any) -> Pause | None:
        """Validate a stored record; None (with a warning) for anything malformed."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not an object")
            pause = cls(queue=queue, domain=str(data["domain"]), reason=str(data["reason"]), by=str(data["by"]),
                        since=float(data["since"]), until=float(data["until"]))
            if pause.reason not in _RANK:
                raise ValueError(f"unknown reason {pause.reason!r}")
        except (KeyError, TypeError, ValueError) as exc:
            log_event(logging.WARNING, "pause-record-invalid", logger, queue=queue, error=repr(exc)[:200])
            return None
        return pause


def read_pauses(store: Store, keys: Keys, supervisor: Supervisor, queues: Sequence[str]) -> dict[str, Pause]:
    """The live pauses of ``queues`` (one round trip)."""
    wanted = cause_keys(keys, supervisor, queues)
    return parse_pauses(wanted, store.get_many([key for _, _, key in wanted]))


def parse_pauses(wanted: Sequence[tuple[str, str, str]], values: Sequence[Any]) -> dict[str, Pause]:
    """The strongest valid record per queue among ``values`` (read for ``wanted``, in order)."""
    found: dict[str, list[Pause]] = {}
    for (queue, cause, _), data in zip(wanted, values, strict=True):
        if data is None:
            continue
        pause = Pause.from_json(queue, data)
        if pause is not None and pause.cause == cause:
            found.setdefault(queue, []).append(pause)
    views: dict[str, Pause] = {}
    for queue, records in found.items():
        records.sort(key=lambda p: (_RANK[p.reason], -p.until))
        strongest = records[0]
        views[queue] = Pause(strongest.queue, strongest.domain, strongest.reason, strongest.by, strongest.since,
                             strongest.until, causes=tuple(p.cause for p in records))
    return views


def _set_longer(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    """The Python twin of ``scripts/pause.lua``."""
    ttl = store.ttl(keys[0])
    seconds = int(args[1]) / 1000
    if ttl is not None and ttl >= seconds:
        return 0
    store.set_raw(keys[0], str(args[0]), ttl_s=seconds)
    return 1


SET_PAUSE = Script.from_file(Path(__file__).parent / "scripts" / "pause.lua", _set_longer)


def set_pause(store: Store, keys: Keys, pause: Pause) -> bool:
    """Write a pause record that expires at ``pause.until``, unless its cause already holds a longer one.

    True when written.
    """
    ms = max(1, int((pause.until - pause.since) * 1000))
    written = store.run(SET_PAUSE, [pause_key(keys, pause.queue, pause.cause)], [encode_json(pause.to_json()), ms])
    return bool(written)


def clear_pauses(store: Store, keys: Keys, supervisor: Supervisor, queues: Iterable[str],
                 causes: Iterable[str] | None = None) -> int:
    """Delete the pause records of ``causes`` (None: every cause) on ``queues``; how many existed."""
    chosen = None if causes is None else set(causes)
    doomed = [key for _, cause, key in cause_keys(keys, supervisor, queues) if chosen is None or cause in chosen]
    return store.delete(*doomed)
